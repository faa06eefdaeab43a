"""Reference-free stem and track quality columns on constructed signals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stemflow.measures.quality import (
    CLIP_LEVEL,
    DB_FLOOR,
    STEM_COLUMNS,
    bleed_ratios,
    clipped_ratio,
    silence_ratio,
    stem_quality,
    stereo_correlation,
    track_quality,
)

SAMPLE_RATE = 44100


@pytest.fixture
def noise() -> np.ndarray:
    return np.random.default_rng(11).standard_normal((2, 3 * SAMPLE_RATE)).astype(np.float32) * 0.1


def band_noise(low_hz: float, high_hz: float, seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Stereo Gaussian noise limited to ``[low_hz, high_hz)``, unit-ish RMS 0.1, float64 ``[2, n]``."""
    n = int(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal((2, n)), axis=1)
    hz = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum[:, (hz < low_hz) | (hz >= high_hz)] = 0
    x = np.fft.irfft(spectrum, n=n, axis=1)
    return 0.1 * x / np.sqrt(np.mean(x**2))


def test_stem_quality_columns_and_known_levels():
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    stem = np.stack([tone, tone])
    q = stem_quality(stem, SAMPLE_RATE, mixture=2 * stem)
    assert tuple(q) == STEM_COLUMNS
    assert all(type(v) is float for v in q.values())
    assert q["duration_s"] == 2.0 and q["sample_rate_hz"] == 44100.0
    assert q["peak_dbfs"] == pytest.approx(20 * math.log10(0.5), abs=1e-3)
    assert q["true_peak_dbtp"] == pytest.approx(20 * math.log10(0.5), abs=0.02)
    assert q["rms_dbfs"] == pytest.approx(20 * math.log10(0.5) - 10 * math.log10(2), abs=1e-3)  # sine: peak - 3.01 dB
    assert q["loudness_lufs"] == pytest.approx(20 * math.log10(0.5), abs=0.05)  # stereo 1 kHz sine: LUFS = peak dBFS
    assert q["clipped_ratio"] == 0.0 and q["silence_ratio"] == 0.0
    assert q["stereo_correlation"] == pytest.approx(1.0)
    assert q["energy_share"] == pytest.approx(0.25)


def test_silent_stem_uses_floor_and_nan():
    q = stem_quality(np.zeros((2, SAMPLE_RATE), dtype=np.float32), SAMPLE_RATE, mixture=np.zeros((2, SAMPLE_RATE)))
    assert q["peak_dbfs"] == q["true_peak_dbtp"] == q["rms_dbfs"] == DB_FLOOR
    assert math.isnan(q["loudness_lufs"]) and math.isnan(q["stereo_correlation"]) and math.isnan(q["energy_share"])
    assert q["silence_ratio"] == 1.0 and q["clipped_ratio"] == 0.0
    assert not any(math.isinf(v) for v in q.values())  # JSON/Parquet safe: never inf
    assert math.isnan(stem_quality(np.ones((2, 100)) * 0.1, SAMPLE_RATE)["energy_share"])  # no mixture given


def test_clipped_ratio_threshold():
    x = np.full((2, 1000), 0.5)
    x[0, :10] = 1.0
    x[1, :5] = -1.0
    x[0, 10:15] = 0.99995  # >= 1 - 1e-4: clipped
    x[0, 15:20] = 0.9998  # below the threshold: not clipped
    x[1, 5:7] = 1.2  # float stems above full scale count as clipped
    assert CLIP_LEVEL == pytest.approx(0.9999)
    assert clipped_ratio(x) == pytest.approx((10 + 5 + 5 + 2) / 2000)


def test_silence_ratio_windows():
    rng = np.random.default_rng(2)
    loud = rng.standard_normal((2, 6 * SAMPLE_RATE)) * 0.1  # -20 dBFS RMS
    quiet = rng.standard_normal((2, 2 * SAMPLE_RATE)) * 10 ** (-70 / 20)  # -70 dBFS RMS: silent
    zeros = np.zeros((2, 2 * SAMPLE_RATE))
    x = np.concatenate([loud, quiet, zeros], axis=1)
    assert silence_ratio(x, SAMPLE_RATE) == pytest.approx(0.4)  # 40 of 100 windows of 100 ms
    # -50 dBFS is above the -60 dBFS threshold
    assert silence_ratio(rng.standard_normal((2, SAMPLE_RATE)) * 10 ** (-50 / 20), SAMPLE_RATE) == 0.0
    # 1.05 s: ten whole windows and a trailing 50 ms window (silent) -> 1 / 11
    y = np.concatenate([loud[:, :SAMPLE_RATE], np.zeros((2, SAMPLE_RATE // 20))], axis=1)
    assert silence_ratio(y, SAMPLE_RATE) == pytest.approx(1 / 11)


def test_stereo_correlation_cases(noise):
    assert stereo_correlation(np.stack([noise[0], noise[0]])) == pytest.approx(1.0)
    assert stereo_correlation(np.stack([noise[0], -noise[0]])) == pytest.approx(-1.0)
    assert abs(stereo_correlation(noise)) < 0.02  # independent channels
    assert math.isnan(stereo_correlation(noise[:1]))  # mono
    assert math.isnan(stereo_correlation(np.stack([noise[0], np.zeros_like(noise[0])])))  # one silent channel
    mixed = np.stack([noise[0], noise[0] + noise[1]])  # rho = 1 / sqrt(2)
    assert stereo_correlation(mixed) == pytest.approx(1 / math.sqrt(2), abs=0.02)


def test_energy_shares_of_orthogonal_stems_sum_to_one():
    low, high = band_noise(50, 1000, seed=1), 0.5 * band_noise(3000, 8000, seed=2)
    mixture = low + high
    shares = [stem_quality(s, SAMPLE_RATE, mixture)["energy_share"] for s in (low, high)]
    assert shares[0] == pytest.approx(0.8, abs=1e-3) and shares[1] == pytest.approx(0.2, abs=1e-3)


def test_track_residual_db(noise):
    drums, bass = noise, 0.5 * np.roll(noise, 1000, axis=1)
    exact = drums + bass
    assert track_quality(exact, {"drums": drums, "bass": bass})["residual_db"] < -120  # float32 rounding only
    assert track_quality(exact.astype(np.float64), {"drums": drums.astype(np.float64),
                                                    "bass": exact.astype(np.float64) - drums})["residual_db"] == DB_FLOOR
    # a residual with 1 % of the stems' energy reads 10 log10(E_res / E_mix), about -20 dB
    residual = np.random.default_rng(4).standard_normal(exact.shape)
    residual *= math.sqrt(0.01 * np.sum(exact.astype(np.float64) ** 2) / np.sum(residual**2))
    mixture = exact + residual
    expected = 10 * math.log10(np.sum((mixture - exact.astype(np.float64)) ** 2) / np.sum(mixture**2))
    q = track_quality(mixture, {"drums": drums, "bass": bass})
    assert q["residual_db"] == pytest.approx(expected, abs=1e-6)
    assert q["residual_db"] == pytest.approx(-20.0, abs=0.1)
    assert math.isnan(track_quality(np.zeros((2, 5000)), {"a": np.zeros((2, 5000))})["residual_db"])


def test_bleed_ratio_known_leak():
    """x (low band) leaks into stem a at gain g next to y (high band): bleed_a = g^2 / (1 + g^2)."""
    x, y = band_noise(100, 2000, seed=5), band_noise(5000, 10000, seed=6)
    clean = bleed_ratios({"a": x, "b": y})
    assert clean["a"] < 0.01 and clean["b"] < 0.01
    for gain in (0.3, 0.5):
        leaky = track_quality(x + y, {"a": x + gain * y, "b": y})
        assert leaky["bleed_ratio_a"] == pytest.approx(gain**2 / (1 + gain**2), abs=0.02)
        assert leaky["bleed_ratio_b"] < 0.01
    assert math.isnan(bleed_ratios({"a": x, "silent": np.zeros_like(x)})["silent"])
    assert math.isnan(bleed_ratios({"only": x})["only"])


def test_inputs_validated_and_not_mutated(noise):
    mixture = noise * 2
    before, mixture_before = noise.copy(), mixture.copy()
    stem_quality(noise, SAMPLE_RATE, mixture)
    track_quality(mixture, {"a": noise, "b": noise})
    np.testing.assert_array_equal(noise, before)
    np.testing.assert_array_equal(mixture, mixture_before)
    with pytest.raises(ValueError, match="same shape"):
        stem_quality(noise, SAMPLE_RATE, mixture[:, :-1])
    with pytest.raises(ValueError, match="same shape"):
        track_quality(mixture, {"a": noise[:, :-1]})
    with pytest.raises(ValueError, match=r"\[channels, samples\]"):
        stem_quality(noise[0], SAMPLE_RATE)
    with pytest.raises(ValueError, match="NaN or inf"):
        stem_quality(np.full((2, 10), np.inf), SAMPLE_RATE)
    with pytest.raises(ValueError, match="at least one stem"):
        track_quality(mixture, {})


def test_torch_input_gives_the_same_columns(noise):
    from_numpy = stem_quality(noise, SAMPLE_RATE, noise * 2)
    from_torch = stem_quality(torch.from_numpy(noise), SAMPLE_RATE, torch.from_numpy(noise * 2))
    assert from_torch == pytest.approx(from_numpy, nan_ok=True)
