"""BS.1770-4 loudness and true peak against published test cases, analytic values and pyloudnorm."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from stemflow.audio.decode import load_stems
from stemflow.measures.loudness import (
    integrated_loudness,
    interpolation_filter,
    k_weighting_sos,
    oversampling_factor,
    true_peak_dbtp,
)


def sine(level_dbfs: float, seconds: float, sample_rate: int, hz: float = 1000.0, phase: float = 0.0) -> np.ndarray:
    """A sine of peak ``level_dbfs``, shape ``[samples]``."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * hz * t + phase)


def stereo_sequence(parts: list[tuple[float, float]], sample_rate: int = 48000) -> np.ndarray:
    """EBU Tech 3341 style programme: consecutive 1 kHz sines ``(dBFS, seconds)`` in both channels."""
    mono = np.concatenate([sine(level, seconds, sample_rate) for level, seconds in parts])
    return np.stack([mono, mono])


def test_k_weighting_matches_bs1770_tables_at_48k():
    sos = k_weighting_sos(48000)
    np.testing.assert_allclose(sos[0], [1.53512485958697, -2.69169618940638, 1.19839281085285,
                                        1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    np.testing.assert_allclose(sos[1], [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621], atol=1e-8)


@pytest.mark.parametrize(
    ("case", "parts", "expected"),
    [
        ("3341 case 1", [(-23.0, 20.0)], -23.0),
        ("3341 case 2", [(-33.0, 20.0)], -33.0),
        ("3341 case 3", [(-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0)], -23.0),
        ("3341 case 4", [(-72.0, 10.0), (-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0), (-72.0, 10.0)], -23.0),
        ("3341 case 5", [(-26.0, 20.0), (-20.0, 20.1), (-26.0, 20.0)], -23.0),
    ],
)
def test_ebu_tech_3341_integrated_loudness(case, parts, expected):
    """EBU Tech 3341 (2016) cases 1-5: stereo 1 kHz sines, tolerance +-0.1 LU."""
    assert integrated_loudness(stereo_sequence(parts), 48000) == pytest.approx(expected, abs=0.1), case


@pytest.mark.parametrize("sample_rate", [44100, 48000, 96000])
def test_sine_loudness_any_rate_and_mono_offset(sample_rate):
    stereo = stereo_sequence([(-20.0, 5.0)], sample_rate)
    assert integrated_loudness(stereo, sample_rate) == pytest.approx(-20.0, abs=0.05)
    # one channel: 3.01 LU lower (BS.1770: a 0 dBFS sine in one front channel reads -3.01 LKFS)
    assert integrated_loudness(stereo[:1], sample_rate) == pytest.approx(-20.0 - 10 * math.log10(2), abs=0.05)


def test_loudness_undefined_cases_are_nan():
    assert math.isnan(integrated_loudness(np.zeros((2, 48000)), 48000))  # digital silence
    assert math.isnan(integrated_loudness(stereo_sequence([(-80.0, 2.0)]), 48000))  # below the -70 LUFS gate
    assert math.isnan(integrated_loudness(stereo_sequence([(-20.0, 0.3)]), 48000))  # shorter than one block


def test_loudness_agrees_with_pyloudnorm_on_noise():
    pyloudnorm = pytest.importorskip("pyloudnorm")
    rng = np.random.default_rng(3)
    white = rng.standard_normal((2, 10 * 44100)) * 0.05
    pink = np.cumsum(rng.standard_normal((2, 10 * 44100)), axis=1)  # brown-ish, low-frequency heavy
    pink = (pink - pink.mean(axis=1, keepdims=True)) / np.abs(pink).max() * 0.3
    for audio in (white, pink, white * np.linspace(0, 1, white.shape[1])):
        reference = pyloudnorm.Meter(44100).integrated_loudness(audio.T)
        assert integrated_loudness(audio, 44100) == pytest.approx(reference, abs=0.1)


def test_loudness_agrees_with_pyloudnorm_on_music():
    pyloudnorm = pytest.importorskip("pyloudnorm")
    stempeg = pytest.importorskip("stempeg")
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    stems = load_stems(stempeg.example_stem_path(), sample_rate=44100)
    for music in (stems["mixture"], stems["vocals"]):  # of the MUSDB18 excerpt
        reference = pyloudnorm.Meter(44100).integrated_loudness(music.T.astype(np.float64))
        assert integrated_loudness(music, 44100) == pytest.approx(reference, abs=0.1)


def faded(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """50 ms raised-cosine fades so that no intersample overshoot comes from abrupt edges."""
    n = int(0.05 * sample_rate)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
    out = x.copy()
    out[..., :n] *= ramp
    out[..., -n:] *= ramp[::-1]
    return out


def test_true_peak_intersample_quarter_rate_sine():
    """fs/4 sine with a 45 degree phase: the samples sit at 0.707 of the peak (-3.01 dB), the true peak is A."""
    x = faded(sine(-6.0, 1.0, 48000, hz=12000.0, phase=np.pi / 4), 48000)[None]
    assert 20 * np.log10(np.abs(x).max()) == pytest.approx(-9.01, abs=0.01)
    assert true_peak_dbtp(x, 48000) == pytest.approx(-6.0, abs=0.05)


@pytest.mark.parametrize(("hz", "tolerance_db"), [(997.0, 0.01), (5000.0, 0.05), (15000.0, 0.2)])
def test_true_peak_of_sines(hz, tolerance_db):
    x = faded(sine(-1.0, 1.0, 44100, hz=hz, phase=0.3), 44100)
    stereo = np.stack([x, 0.5 * x])
    assert true_peak_dbtp(stereo, 44100) == pytest.approx(-1.0, abs=tolerance_db)


@pytest.mark.parametrize("length", [1, 100, 2048 - 31, 5000, 30000])
def test_true_peak_equals_brute_force_oversampling(length):
    """Block skipping and batched FFTs give the max of the fully oversampled signal (scipy upfirdn)."""
    from scipy import signal as sps

    rng = np.random.default_rng(length)
    x = rng.standard_normal((2, length)) * 0.2
    x[1, length // 3] = 0.9  # one loud sample: most blocks are skipped
    taps = np.stack(interpolation_filter(4), axis=1).ravel()  # back to the 128-tap prototype
    brute = np.abs(sps.upfirdn(taps, x, up=4, axis=1)).max()
    assert true_peak_dbtp(x, 44100) == pytest.approx(20 * np.log10(max(brute, np.abs(x).max())), abs=1e-4)
    assert true_peak_dbtp(x, 44100) >= 20 * np.log10(np.abs(x).max())  # never below the sample peak


def test_oversampling_rules():
    assert oversampling_factor(44100) == 4 and oversampling_factor(96000) == 2 and oversampling_factor(192000) == 1
    phases = interpolation_filter(4)
    assert phases.shape == (4, 32)
    np.testing.assert_allclose(phases.sum(axis=1), 1.0, atol=1e-3)  # each phase passes DC with unit gain
    x = np.array([[0.0, 0.5, -0.25, 0.0]])
    assert true_peak_dbtp(x, 192000) == pytest.approx(20 * np.log10(0.5))  # 1x: the sample peak
    assert true_peak_dbtp(np.zeros((2, 100)), 44100) == float("-inf")
