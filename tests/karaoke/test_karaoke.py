"""Karaoke scores on synthetic signals with known answers (no model: stems are passed directly)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stemflow.errors import ConfigError
from stemflow.karaoke.scores import (
    REASONS,
    SCORE_COLUMNS,
    judge,
    karaoke_scores,
    loudness_gain_db,
    vocal_coverage,
    vocal_residue_db,
)
from stemflow.karaoke.settings import KaraokeThresholds, PresenceSettings, settings_from_mapping

RATE = 44100


def sine(freq: float, seconds: float, amplitude: float, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return np.tile(amplitude * np.sin(2 * np.pi * freq * t), (channels, 1)).astype(np.float32)


def noise(seconds: float, amplitude: float, seed: int = 0) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal((2, int(seconds * RATE)))).astype(np.float32)


def test_coverage_counts_windows_with_vocal() -> None:
    backing = noise(4.0, 0.05)
    vocals = sine(440, 4.0, 0.2)
    vocals[:, 2 * RATE :] = 0.0  # vocal in the first 2 s of 4 s: 4 of 8 half-second windows
    assert vocal_coverage(vocals, vocals + backing, RATE) == 0.5
    # 1 s windows: 2 of 4
    assert vocal_coverage(vocals, vocals + backing, RATE, PresenceSettings(window_s=1.0)) == 0.5


def test_coverage_thresholds_ratio_and_level() -> None:
    backing = noise(2.0, 0.3)
    # vocal 30 dB below the backing in energy: below the -20 dB ratio threshold
    quiet = noise(2.0, 0.3 * 10 ** (-30 / 20), seed=1)
    assert vocal_coverage(quiet, quiet + backing, RATE) == 0.0
    # alone but at -60 dBFS RMS: ratio fine, level below -50 dBFS
    faint = noise(2.0, 10 ** (-60 / 20), seed=2)
    assert vocal_coverage(faint, faint, RATE) == 0.0
    assert vocal_coverage(faint, faint, RATE, PresenceSettings(presence_level_dbfs=-70.0)) == 1.0
    # a shorter last window counts as a window: 2.25 s -> 5 windows, vocal in all
    loud = noise(2.25, 0.1, seed=3)
    assert vocal_coverage(loud, loud, RATE) == 1.0
    # silent mixture: not vocal
    silent = np.zeros((2, RATE), np.float32)
    assert vocal_coverage(silent, silent, RATE) == 0.0


def test_scores_known_values() -> None:
    # vocal in channel 0 only, backing in channel 1 only: the energies add exactly
    vocals = noise(3.0, 0.1, seed=4)
    backing = noise(3.0, 0.2, seed=5)
    vocals[1] = 0.0
    backing[0] = 0.0
    scores = karaoke_scores(vocals, backing, RATE)
    assert set(scores) == set(SCORE_COLUMNS)
    e_v = float(np.sum(vocals.astype(np.float64) ** 2))
    e_b = float(np.sum(backing.astype(np.float64) ** 2))
    assert scores["vocal_share"] == pytest.approx(e_v / (e_v + e_b), rel=1e-9)
    assert scores["duration_s"] == pytest.approx(3.0)
    assert math.isnan(scores["vocal_residue_db"])  # not measured


def test_vocal_to_backing_is_the_gain_between_them() -> None:
    backing = noise(3.0, 0.05, seed=6)
    vocals = backing * np.float32(10 ** (6 / 20))  # the same signal 6 dB louder
    scores = karaoke_scores(vocals, backing, RATE)
    assert scores["vocal_to_backing_lu"] == pytest.approx(6.0, abs=1e-4)
    assert scores["vocals_lufs"] - scores["backing_lufs"] == pytest.approx(6.0, abs=1e-4)


def test_backing_loudness_peak_and_clipping() -> None:
    # EBU Tech 3341 case 1: 1 kHz sine at -23 dBFS peak in both channels reads -23 LUFS
    backing = sine(1000, 3.0, 10 ** (-23 / 20))
    vocals = sine(300, 3.0, 0.01)
    scores = karaoke_scores(vocals, backing, RATE)
    assert scores["backing_lufs"] == pytest.approx(-23.0, abs=0.05)
    assert scores["backing_true_peak_dbtp"] == pytest.approx(-23.0, abs=0.1)
    assert scores["backing_clipped_ratio"] == 0.0
    clipped = backing.copy()
    clipped[:, :1323] = 1.0  # 1323 of 132300 samples per channel: 1 %
    assert karaoke_scores(vocals, clipped, RATE)["backing_clipped_ratio"] == pytest.approx(0.01)


def test_residue_db() -> None:
    vocals = noise(1.0, 0.1)
    assert vocal_residue_db(vocals * np.float32(0.1), vocals) == pytest.approx(-20.0, abs=1e-5)
    assert vocal_residue_db(np.zeros_like(vocals), vocals) == -200.0
    assert math.isnan(vocal_residue_db(vocals, np.zeros_like(vocals)))
    found = vocals * np.float32(10 ** (-15 / 20))
    scores = karaoke_scores(vocals, noise(1.0, 0.1, seed=9), RATE, vocals_of_backing=found)
    assert scores["vocal_residue_db"] == pytest.approx(-15.0, abs=1e-4)


def test_judge_instrumental_only() -> None:
    backing = noise(3.0, 0.1)
    verdict = judge(karaoke_scores(np.zeros_like(backing), backing, RATE))
    assert verdict.instrumental_only and not verdict.accepted
    assert verdict.reasons == ("instrumental_only",)
    # leakage 30 dB down: still no vocal to remove
    leak = noise(3.0, 0.1 * 10 ** (-30 / 20), seed=1)
    assert judge(karaoke_scores(leak, backing, RATE)).reasons == ("instrumental_only",)


def test_judge_too_loud_and_normal() -> None:
    backing = noise(3.0, 0.05, seed=2)
    normal = noise(3.0, 0.025, seed=3)  # -6 dB: share 0.2, -6 LU
    verdict = judge(karaoke_scores(normal, backing, RATE))
    assert verdict.accepted and verdict.reasons == ()
    loud = normal * np.float32(4.0)  # +12 dB: share 0.8, +6 LU
    verdict = judge(karaoke_scores(loud, backing, RATE))
    assert verdict.vocals_too_loud and verdict.reasons == ("vocals_too_loud",)
    # the LU criterion alone (+6 LU > 3): share limit relaxed
    relaxed = KaraokeThresholds(max_vocal_share=1.0, max_vocal_to_backing_lu=3.0)
    assert judge(karaoke_scores(loud, backing, RATE), relaxed).reasons == ("vocals_too_loud",)


def test_judge_every_reason_in_order() -> None:
    scores = {"duration_s": 0.5, "vocal_coverage": 0.5, "vocal_share": 0.9, "vocal_to_backing_lu": 10.0,
              "vocal_residue_db": -3.0, "vocals_lufs": -10.0, "backing_lufs": float("nan"),
              "backing_true_peak_dbtp": 0.0, "backing_clipped_ratio": 0.01}
    assert judge(scores).reasons == tuple(r for r in REASONS if r != "instrumental_only")
    # residue is not judged for an instrumental-only track
    scores.update(vocal_coverage=0.0, vocal_share=0.3, vocal_to_backing_lu=-5.0)
    assert "vocal_residue" not in judge(scores).reasons and "instrumental_only" in judge(scores).reasons


def test_loudness_gain() -> None:
    backing = sine(1000, 3.0, 10 ** (-23 / 20))  # -23 LUFS, -23 dBTP
    assert loudness_gain_db(backing, RATE, -14.0) == pytest.approx(9.0, abs=0.05)
    # limited by the true-peak ceiling: wanted +23 dB, headroom -1 - (-23) = 22 dB
    assert loudness_gain_db(backing, RATE, 0.0) == pytest.approx(22.0, abs=0.1)
    # a vocal peaking at -6 dBTP limits the shared gain to 5 dB
    vocals = sine(500, 3.0, 10 ** (-6 / 20))
    assert loudness_gain_db(backing, RATE, -14.0, peak_signals=(vocals,)) == pytest.approx(5.0, abs=0.1)
    # no normalisation: 0 dB unless over the ceiling
    assert loudness_gain_db(backing, RATE, None) == 0.0
    assert loudness_gain_db(sine(1000, 3.0, 1.0), RATE, None) == pytest.approx(-1.0, abs=0.1)
    assert loudness_gain_db(np.zeros((2, RATE), np.float32), RATE, -14.0) == 0.0


def test_settings_from_mapping_reports_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="unknown keys"):
        settings_from_mapping(KaraokeThresholds, {"max_vocal_shares": 0.5}, "thresholds")
    with pytest.raises(ConfigError):
        settings_from_mapping(KaraokeThresholds, {"max_vocal_share": "loud"}, "thresholds")
    assert settings_from_mapping(KaraokeThresholds, {"max_vocal_share": 0.5}, "t").max_vocal_share == 0.5
    with pytest.raises(ConfigError):
        PresenceSettings(window_s=0)
