"""Streamed quality columns against the whole-array ones, for many signals and block schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stemflow.engine.track import add_residual
from stemflow.measures.quality import STEM_COLUMNS, stem_quality, track_quality
from stemflow.measures.streaming import QualityAccumulator, measure_blocks

#: Streamed vs whole array: (absolute, relative) tolerance per column; (0, 0) is equality.
TOLERANCES = {
    "duration_s": (0.0, 0.0),
    "sample_rate_hz": (0.0, 0.0),
    "peak_dbfs": (0.0, 0.0),
    "clipped_ratio": (0.0, 0.0),
    "silence_ratio": (0.0, 0.0),
    "rms_dbfs": (1e-9, 0.0),  # ~1e-12 relative in energy
    "energy_share": (0.0, 1e-12),
    "residual_db": (1e-9, 0.0),
    "stereo_correlation": (1e-9, 0.0),
    "loudness_lufs": (1e-6, 0.0),
    "true_peak_dbtp": (1e-6, 0.0),
    "bleed_ratio": (0.0, 1e-9),
}

FOUR = ("vocals", "drums", "bass", "other")
TWO = ("vocals", "instrumental")


def tone(hz: float, n: int, sample_rate: int, amplitude: float) -> np.ndarray:
    """A stereo sine, the right channel a quarter period late, float64 ``[2, n]``."""
    t = np.arange(n) / sample_rate
    return amplitude * np.stack([np.sin(2 * np.pi * hz * t), np.sin(2 * np.pi * hz * t - np.pi / 2)])


def make_track(kind: str) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
    """``(sample_rate, mixture, stems)``: float32 ``[2, n]``, the mixture = sum of stems + a small residual."""
    rng = np.random.default_rng(sum(map(ord, kind)))
    sample_rate = 48000 if kind in ("two_stems_48k", "mono_like") else 96000 if kind == "rate_96k" else 44100
    seconds = {"short": 0.3, "rate_96k": 0.7}.get(kind, 2.3)
    n = int(seconds * sample_rate) + 17  # not a whole number of windows, frames or blocks
    names = TWO if kind in ("two_stems_48k", "mono_like", "rate_96k") else FOUR
    stems = {}
    for k, name in enumerate(names):
        noise = rng.standard_normal((2, n)) * 0.05 * (k + 1)
        stems[name] = noise + tone(110.0 * (k + 1) * 1.7, n, sample_rate, 0.2)
    if kind == "mono_like":
        stems["vocals"][1] = stems["vocals"][0]
    if kind == "silent_stem":
        stems["bass"][:] = 0.0
    if kind == "clipping":
        stems["drums"] = np.clip(stems["drums"] * 8.0, -1.2, 1.2)
    if kind == "silence_runs":  # digital silence across windows and between them
        for start, stop in ((0, 9000), (30001, 47000), (n - 5000, n)):
            for audio in stems.values():
                audio[:, start:stop] = 0.0
    if kind == "peak_at_end":  # fs/4 at 45 degrees: samples at 0.7, the true peak 0.99 in the last block
        t = np.arange(300)
        stems["vocals"][:, -300:] = 0.99 * np.sin(np.pi / 2 * t + np.pi / 4)
    stems = {name: audio.astype(np.float32) for name, audio in stems.items()}
    mixture = sum(stems.values()) + (rng.standard_normal((2, n)) * 1e-3).astype(np.float32)
    return sample_rate, mixture.astype(np.float32), stems


KINDS = (
    "four_stems",
    "two_stems_48k",
    "mono_like",
    "silent_stem",
    "clipping",
    "silence_runs",
    "peak_at_end",
    "short",
    "rate_96k",
)


def schedules(n: int, sample_rate: int) -> dict[str, list[int]]:
    """Block sizes that add up to ``n``: one block, fixed 4096, random (0, 1, odd), around the 100 ms windows."""
    rng = np.random.default_rng(n)
    window = round(0.1 * sample_rate)
    random_sizes = [0, 1, 3] + [int(x) for x in rng.choice([0, 1, 2, 7, 511, 1023, 2049, 4095, 9999, 20011], 30)]
    straddling = [window - 1, window + 1, 1, window - 3, 2 * window + 5]
    out = {}
    for name, pattern in (
        ("one", [n]),
        ("fixed_4096", [4096]),
        ("random", random_sizes),
        ("straddle", straddling),
    ):
        sizes, total, k = [], 0, 0
        while total < n:
            size = min(pattern[k % len(pattern)], n - total)
            sizes.append(size)
            total += size
            k += 1
        out[name] = sizes + [0]  # a trailing empty block
    return out


def blocks_of(mixture: np.ndarray, stems: dict[str, np.ndarray], sizes: list[int]):
    """``(mixture block, stem blocks)`` views in the order of ``sizes``."""
    start = 0
    for size in sizes:
        yield (
            mixture[:, start : start + size],
            {name: audio[:, start : start + size] for name, audio in stems.items()},
        )
        start += size


def whole_array(mixture, stems, sample_rate, residual_stem):
    """What ``measure_track`` records: track_quality on the model's stems, stem_quality after the residual."""
    track = track_quality(mixture, stems)
    if residual_stem is not None:
        stems = add_residual(mixture, stems, residual_stem)
    return {name: stem_quality(audio, sample_rate, mixture) for name, audio in stems.items()}, track


def assert_close(column: str, streamed: float, expected: float, where: str) -> None:
    key = "bleed_ratio" if column.startswith("bleed_ratio_") else column
    absolute, relative = TOLERANCES[key]
    if math.isnan(expected):
        assert math.isnan(streamed), f"{where} {column}: {streamed} instead of NaN"
        return
    assert abs(streamed - expected) <= absolute + relative * abs(expected), (
        f"{where} {column}: streamed {streamed!r}, whole array {expected!r}"
    )


def assert_results_close(got, expected, where: str) -> None:
    """Both ``(per stem, per track)`` results have the same keys and values within TOLERANCES."""
    got_stems, got_track = got
    expected_stems, expected_track = expected
    assert list(got_stems) == list(expected_stems)
    assert set(got_track) == set(expected_track)
    for column, value in expected_track.items():
        assert_close(column, got_track[column], value, where)
    for name, columns in expected_stems.items():
        assert list(got_stems[name]) == list(STEM_COLUMNS)
        for column in STEM_COLUMNS:
            assert_close(column, got_stems[name][column], columns[column], f"{where}/{name}")


@pytest.mark.parametrize("with_residual", [False, True], ids=["as_given", "residual"])
@pytest.mark.parametrize("kind", KINDS)
def test_streamed_equals_whole_array(kind: str, with_residual: bool) -> None:
    sample_rate, mixture, stems = make_track(kind)
    names = tuple(stems)
    residual_stem = names[-1] if with_residual else None
    expected = whole_array(mixture, stems, sample_rate, residual_stem)
    for schedule, sizes in schedules(mixture.shape[1], sample_rate).items():
        got = measure_blocks(
            blocks_of(mixture, stems, sizes),
            names,
            sample_rate,
            residual_stem=residual_stem,
        )
        assert_results_close(got, expected, f"{kind}/{schedule}")


def test_edge_cases_are_exercised() -> None:
    """The signals above do reach the special values (otherwise the comparisons would prove less)."""
    sample_rate, mixture, stems = make_track("silent_stem")
    per_stem, track = measure_blocks(blocks_of(mixture, stems, [5000] * 30), FOUR, sample_rate)
    assert per_stem["bass"]["true_peak_dbtp"] == -200.0 and math.isnan(per_stem["bass"]["loudness_lufs"])
    assert math.isnan(per_stem["bass"]["stereo_correlation"]) and math.isnan(track["bleed_ratio_bass"])
    assert per_stem["bass"]["silence_ratio"] == 1.0
    sample_rate, mixture, stems = make_track("mono_like")
    assert measure_blocks(blocks_of(mixture, stems, [4096] * 30), TWO, sample_rate)[0]["vocals"][
        "stereo_correlation"
    ] == pytest.approx(1.0, abs=1e-12)
    sample_rate, mixture, stems = make_track("clipping")
    assert measure_blocks([(mixture, stems)], FOUR, sample_rate)[0]["drums"]["clipped_ratio"] > 0.1
    sample_rate, mixture, stems = make_track("silence_runs")
    assert 0.1 < measure_blocks([(mixture, stems)], FOUR, sample_rate)[0]["vocals"]["silence_ratio"] < 0.5
    sample_rate, mixture, stems = make_track("peak_at_end")
    vocals = measure_blocks([(mixture, stems)], FOUR, sample_rate)[0]["vocals"]
    assert vocals["true_peak_dbtp"] - vocals["peak_dbfs"] > 2.9  # the inter-sample peak is in the last block
    sample_rate, mixture, stems = make_track("short")
    assert math.isnan(measure_blocks([(mixture, stems)], FOUR, sample_rate)[0]["vocals"]["loudness_lufs"])


def test_result_is_pure_and_pushing_may_continue() -> None:
    sample_rate, mixture, stems = make_track("four_stems")
    half = mixture.shape[1] // 2
    accumulator = QualityAccumulator(FOUR, sample_rate, residual_stem="other")
    accumulator.push(mixture[:, :half], {name: audio[:, :half] for name, audio in stems.items()})
    early = accumulator.result()
    assert early == accumulator.result()  # asking twice changes nothing
    assert early[0]["vocals"]["duration_s"] == half / sample_rate
    accumulator.push(mixture[:, half:], {name: audio[:, half:] for name, audio in stems.items()})
    once = measure_blocks([(mixture, stems)], FOUR, sample_rate, residual_stem="other")
    assert_results_close(accumulator.result(), once, "two pushes")


def _noise_blocks(seconds: int, sample_rate: int) -> QualityAccumulator:
    """An accumulator fed ``seconds`` one-second blocks of noise (2 stems, residual added)."""
    accumulator = QualityAccumulator(TWO, sample_rate, residual_stem="instrumental")
    rng = np.random.default_rng(3)
    for _ in range(seconds):
        vocals = (rng.standard_normal((2, sample_rate)) * 0.1).astype(np.float32)
        rest = (rng.standard_normal((2, sample_rate)) * 0.1).astype(np.float32)
        accumulator.push(vocals + rest, {"vocals": vocals, "instrumental": rest})
    return accumulator


def test_held_memory_does_not_grow_with_the_track() -> None:
    sample_rate = 16000
    short, long = _noise_blocks(10, sample_rate), _noise_blocks(60, sample_rate)
    # per stem and channel: < 100 ms for silence (float32) and loudness (float64), filter state,
    # < 2048 + 126 float32 for the true peak, < 2048 float32 for the bleed frames
    window = 1600
    bound = 2 * 2 * (window * 4 + window * 8 + 8 * 8 + (2048 + 126) * 4 + 2048 * 4)
    for accumulator, seconds in ((short, 10), (long, 60)):
        held = accumulator.held_nbytes()
        assert held["history"] <= bound
        assert held["block_powers"] == 2 * 8 * (10 * seconds - 3)  # one float64 per 100 ms hop, per stem
    assert long.held_nbytes()["history"] <= bound < 60 * sample_rate * 2 * 4  # far less than one stem


def test_errors_name_the_array() -> None:
    accumulator = QualityAccumulator(TWO, 44100)
    good = np.zeros((2, 100), dtype=np.float32)
    with pytest.raises(ValueError, match="mixture is empty"):
        accumulator.result()
    accumulator.push(
        np.zeros((2, 0), dtype=np.float32),
        {"vocals": good[:, :0], "instrumental": good[:, :0]},
    )
    with pytest.raises(ValueError, match="mixture is empty"):
        accumulator.result()
    bad = good.copy()
    bad[1, 7] = np.nan
    with pytest.raises(ValueError, match=r"stems\['instrumental'\] contains NaN"):
        accumulator.push(good, {"vocals": good, "instrumental": bad})
    with pytest.raises(ValueError, match="stem 'vocals'"):
        accumulator.push(good, {"vocals": good[:, :50], "instrumental": good})
    with pytest.raises(ValueError, match=r"missing \['instrumental'\]"):
        accumulator.push(good, {"vocals": good})
    with pytest.raises(ValueError, match="channels"):
        accumulator.push(good[:1], {"vocals": good[:1], "instrumental": good[:1]})
    with pytest.raises(ValueError, match="residual_stem 'other'"):
        QualityAccumulator(TWO, 44100, residual_stem="other")
