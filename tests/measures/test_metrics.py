"""Reference-based metrics on synthetic signals with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stemflow.measures import metrics
from stemflow.measures.metrics import (
    USDR_EPS,
    bleedless_fullness,
    csdr,
    csdr_over_tracks,
    frame_count,
    framewise_sdr,
    framewise_sdr_joint,
    l1_freq,
    sdr,
    si_sdr,
    slaney_mel_filterbank,
)
from stemflow.models.mel_bands import hz_to_mel, mel_to_hz

SAMPLE_RATE = 8000


@pytest.fixture
def noise() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 5 * SAMPLE_RATE)).astype(np.float32) * 0.1


def test_scaled_copy_known_values(noise):
    # ||s|| / ||s - 0.5 s|| = 2  ->  20 log10(2) = 6.0206 dB, on every frame and globally
    assert sdr(noise, 0.5 * noise) == pytest.approx(20 * math.log10(2), abs=1e-6)
    np.testing.assert_allclose(framewise_sdr(noise, 0.5 * noise, SAMPLE_RATE), 20 * math.log10(2), atol=1e-9)
    assert csdr(noise, 0.5 * noise, SAMPLE_RATE) == pytest.approx(20 * math.log10(2), abs=1e-9)
    # SI-SDR ignores the scale: only eps bounds it, 10 log10(1 + 0.25 ||s||^2 / 1e-8)
    energy = float(np.sum(noise.astype(np.float64) ** 2))
    assert si_sdr(noise, 0.5 * noise) == pytest.approx(10 * math.log10(1 + 0.25 * energy / 1e-8), abs=1e-3)
    assert si_sdr(noise, -2.0 * noise) > 100


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_added_noise_at_known_snr(noise, snr_db):
    rng = np.random.default_rng(7)
    disturbance = rng.standard_normal(noise.shape)
    disturbance *= math.sqrt(np.sum(noise.astype(np.float64) ** 2) / np.sum(disturbance**2)) / 10 ** (snr_db / 20)
    estimate = noise + disturbance
    assert sdr(noise, estimate) == pytest.approx(snr_db, abs=1e-6)  # exact by construction
    # frames: the noise is stationary, so each 1 s frame is within 0.5 dB of the global SNR
    frames = framewise_sdr(noise, estimate, SAMPLE_RATE)
    assert frames.shape == (5,)
    assert np.max(np.abs(frames - snr_db)) < 0.5
    assert csdr(noise, estimate, SAMPLE_RATE) == pytest.approx(snr_db, abs=0.2)
    # independent noise is (almost) orthogonal: SI-SDR ~ SDR
    assert si_sdr(noise, estimate) == pytest.approx(snr_db, abs=0.1)


def test_si_sdr_zero_mean_and_offset(noise):
    offset = noise + 0.5  # a DC offset the zero-mean variant ignores
    assert si_sdr(noise, offset, zero_mean=True) > 100
    assert si_sdr(noise, offset) < 10


def test_usdr_eps_at_silent_reference():
    silent = np.zeros((2, 1000), dtype=np.float32)
    assert sdr(silent, silent) == 0.0  # (0 + eps) / (0 + eps)
    tiny = np.full((2, 1000), 1e-3, dtype=np.float32)  # sum of squares 2e-3
    assert sdr(silent, tiny) == pytest.approx(10 * math.log10(USDR_EPS / (2e-3 + USDR_EPS)), abs=1e-3)
    assert sdr(tiny, tiny) == pytest.approx(10 * math.log10((2e-3 + USDR_EPS) / USDR_EPS), abs=1e-3)
    assert sdr(tiny, tiny, eps=1e-8) == pytest.approx(10 * math.log10((2e-3 + 1e-8) / 1e-8), abs=1e-3)
    assert math.isnan(si_sdr(silent, tiny))


def test_silent_frames_are_nan_and_all_silent_is_nan(noise):
    ref = noise.copy()
    ref[:, SAMPLE_RATE : 2 * SAMPLE_RATE] = 0.0  # frame 1 silent in the reference
    est = ref + 0.01
    est[:, 3 * SAMPLE_RATE : 4 * SAMPLE_RATE] = 0.0  # frame 3 silent in the estimate
    frames = framewise_sdr(ref, est, SAMPLE_RATE)
    assert np.flatnonzero(np.isnan(frames)).tolist() == [1, 3]
    assert csdr(ref, est, SAMPLE_RATE) == pytest.approx(float(np.median(frames[[0, 2, 4]])))
    silent = np.zeros_like(noise)
    assert np.isnan(framewise_sdr(silent, noise, SAMPLE_RATE)).all()
    assert math.isnan(csdr(silent, noise, SAMPLE_RATE))
    # exact estimate: zero error, +inf per frame (museval's _safe_db), cSDR +inf
    assert np.isposinf(framewise_sdr(noise, noise, SAMPLE_RATE)).all()


def test_anti_phase_stereo_is_not_silence(noise):
    """museval flags frames whose channel sum is 0 (L == -R) as silent; we only flag true digital silence."""
    ref = np.stack([noise[0], -noise[0]])
    frames = framewise_sdr(ref, 0.5 * ref, SAMPLE_RATE)
    np.testing.assert_allclose(frames, 20 * math.log10(2), atol=1e-9)


def test_joint_silence_rule(noise):
    refs = np.stack([noise, 0.5 * noise])
    refs[1, :, :SAMPLE_RATE] = 0.0  # stem 1 silent in frame 0 -> frame 0 NaN for both stems
    ests = refs * 0.9
    ests[1, :, :SAMPLE_RATE] = noise[:, :SAMPLE_RATE]
    joint = framewise_sdr_joint(refs, ests, SAMPLE_RATE)
    assert joint.shape == (2, 5)
    assert np.isnan(joint[:, 0]).all()
    np.testing.assert_allclose(joint[:, 1:], 20.0, atol=1e-4)  # ||s|| / ||0.1 s|| = 20 dB (float32 0.9 s)
    assert not np.isnan(framewise_sdr(refs[0], ests[0], SAMPLE_RATE)).any()  # per stem: no NaN for stem 0
    joint_torch = framewise_sdr_joint(torch.from_numpy(refs), torch.from_numpy(ests), SAMPLE_RATE)
    np.testing.assert_array_equal(joint_torch, joint)


def test_framing_matches_museval_rules(noise):
    assert frame_count(5 * SAMPLE_RATE + 10, SAMPLE_RATE, SAMPLE_RATE) == 5  # the partial frame is dropped
    assert frame_count(10, SAMPLE_RATE, SAMPLE_RATE) == 1  # shorter than a window: one frame
    assert frame_count(3 * SAMPLE_RATE, SAMPLE_RATE, SAMPLE_RATE // 2) == 5
    short = noise[:, :1000]
    assert framewise_sdr(short, 0.5 * short, SAMPLE_RATE).shape == (1,)
    assert framewise_sdr(noise, noise * 0.5, SAMPLE_RATE, window_s=1.0, hop_s=0.5).shape == (9,)


def test_csdr_over_tracks_median_of_medians():
    assert csdr_over_tracks([1.0, 5.0, 2.0, float("nan")]) == 2.0
    assert csdr_over_tracks([1.0, 3.0]) == 2.0
    assert math.isnan(csdr_over_tracks([float("nan")]))
    assert math.isnan(csdr_over_tracks([]))


def test_shapes_are_validated_and_inputs_untouched(noise):
    with pytest.raises(ValueError, match="same shape"):
        sdr(noise, noise[:, :-1])
    with pytest.raises(ValueError, match=r"\[channels, samples\]"):
        sdr(noise[0], noise[0])
    with pytest.raises(ValueError, match="NaN or inf"):
        sdr(noise, np.full_like(noise, np.nan))
    with pytest.raises(ValueError, match="less than one sample"):
        framewise_sdr(noise, noise, SAMPLE_RATE, window_s=0.0)
    with pytest.raises(ValueError, match=r"\[stems, channels, samples\]"):
        framewise_sdr_joint(noise, noise, SAMPLE_RATE)
    before = noise.copy()
    estimate = noise * 0.3
    estimate_before = estimate.copy()
    for fn in (sdr, si_sdr, l1_freq):
        fn(noise, estimate)
    framewise_sdr(noise, estimate, SAMPLE_RATE)
    bleedless_fullness(noise, estimate, SAMPLE_RATE)
    np.testing.assert_array_equal(noise, before)
    np.testing.assert_array_equal(estimate, estimate_before)


def test_torch_and_numpy_agree(noise):
    est = noise * 0.7 + 0.01
    assert sdr(torch.from_numpy(noise), torch.from_numpy(est)) == pytest.approx(sdr(noise, est), abs=1e-12)
    assert si_sdr(torch.from_numpy(noise), torch.from_numpy(est)) == pytest.approx(si_sdr(noise, est), abs=1e-12)
    np.testing.assert_array_equal(framewise_sdr(torch.from_numpy(noise), torch.from_numpy(est), SAMPLE_RATE),
                                  framewise_sdr(noise, est, SAMPLE_RATE))


def test_half_precision_tensors_are_accepted(noise):
    est = noise * 0.5
    value = sdr(torch.from_numpy(noise).to(torch.bfloat16), torch.from_numpy(est).to(torch.bfloat16))
    assert value == pytest.approx(20 * math.log10(2), abs=0.05)  # bf16 rounding of the inputs


def test_bleedless_fullness_known_values(noise):
    six_db = 20 * math.log10(2)
    assert bleedless_fullness(noise, noise, SAMPLE_RATE) == (100.0, 100.0)
    bleedless, fullness = bleedless_fullness(noise, 2 * noise, SAMPLE_RATE)  # +6.02 dB in every bin
    assert bleedless == pytest.approx(100 / (1 + six_db), abs=1e-6) and fullness == 100.0
    bleedless, fullness = bleedless_fullness(noise, 0.5 * noise, SAMPLE_RATE)  # -6.02 dB in every bin
    assert bleedless == 100.0 and fullness == pytest.approx(100 / (1 + six_db), abs=1e-6)
    # disjoint bands: extra content where the reference is empty costs bleedless, missing content fullness
    low, high = _band(noise, 0, 1500), _band(noise, 2500, 4000)
    bleedless, fullness = bleedless_fullness(low, low + high, SAMPLE_RATE)
    assert bleedless < 10 and fullness > 95
    bleedless, fullness = bleedless_fullness(low + high, low, SAMPLE_RATE)
    assert bleedless > 95 and fullness < 10


def _band(x: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """``x`` band-limited to ``[low_hz, high_hz)`` by zeroing FFT bins."""
    spectrum = np.fft.rfft(x.astype(np.float64), axis=-1)
    hz = np.fft.rfftfreq(x.shape[-1], 1 / SAMPLE_RATE)
    spectrum[:, (hz < low_hz) | (hz >= high_hz)] = 0
    return np.fft.irfft(spectrum, n=x.shape[-1], axis=-1)


def test_slaney_mel_filterbank_properties():
    mel = slaney_mel_filterbank(44100, 4096, 128)
    assert mel.shape == (128, 2049)
    assert hz_to_mel(np.array(1000.0)) == pytest.approx(15.0)
    assert hz_to_mel(np.array(6400.0)) == pytest.approx(42.0)  # 15 + 27 log steps of 6.4x
    hz = np.array([100.0, 999.0, 5000.0, 20000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-12)
    # area normalisation: each triangle has height 2 / (f_hi - f_lo), so its integral over Hz is ~1
    bin_hz = 44100 / 4096
    areas = mel.sum(axis=1) * bin_hz
    np.testing.assert_allclose(areas[20:], 1.0, rtol=0.02)
    assert (mel >= 0).all()


def test_l1_freq_known_values(noise):
    assert l1_freq(noise, noise) == 100.0
    # |STFT(1.1 s)| - |STFT(s)| = 0.1 |STFT(s)|: score = 100 / (1 + 10 * 0.1 * mean|STFT(s)|)
    spec = torch.stft(torch.from_numpy(noise.astype(np.float64)), 2048, 1024, window=torch.ones(2048, dtype=torch.float64),
                      center=True, pad_mode="reflect", return_complex=True).abs()
    assert l1_freq(noise, 1.1 * noise) == pytest.approx(100 / (1 + float(spec.mean())), rel=1e-6)
    with pytest.raises(ValueError, match="too short"):
        l1_freq(noise[:, :100], noise[:, :100])


def test_metrics_does_not_reexport_other_measures():
    """Each measure is imported from the module that defines it (no re-exports between measures modules)."""
    from stemflow.measures import loudness, quality

    for module in (quality, loudness):
        public = {name for name in vars(module) if not name.startswith("_") and callable(getattr(module, name))}
        own = {name for name in public if getattr(getattr(module, name), "__module__", None) == module.__name__}
        assert own and not own & set(vars(metrics)), f"metrics re-exports {sorted(own & set(vars(metrics)))}"
    assert not hasattr(metrics, "stem_quality") and not hasattr(metrics, "track_quality")


@pytest.mark.parametrize(("sample_rate", "n_fft", "n_mels"), [(44100, 4096, 512), (48000, 2048, 80)])
def test_slaney_mel_filterbank_matches_librosa(sample_rate, n_fft, n_mels):
    """Optional parity check (librosa is not a dependency): librosa.filters.mel defaults, float32."""
    librosa = pytest.importorskip("librosa")
    expected = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
    np.testing.assert_allclose(slaney_mel_filterbank(sample_rate, n_fft, n_mels), expected, atol=1e-7)
