"""Benchmark: our framewise SDR against museval (BSS-Eval v4) on the MUSDB18 excerpt, plus quality timing.

Decodes the stempeg example (``The Easton Ellises - Falcon 69``, 6.08 s, 4 stems)
with ffmpeg, builds estimates (references plus noise at about -20 dB, the
mixture standing in for vocals), evaluates the four stems jointly with
``museval.evaluate`` (1 s windows and hops, v4) once and with
:func:`stemflow.measures.metrics.framewise_sdr_joint` (best of ``--repeats``), prints a
table and writes ``benchmarks/results/metrics.json`` with the speed ratio and the
largest absolute difference. It also times :func:`stemflow.measures.quality.stem_quality`
and :func:`stemflow.measures.quality.track_quality` on the excerpt tiled to ``--quality-seconds``.

Usage: ``python benchmarks/bench_metrics.py [--tile N] [--repeats R] [--quality-seconds S]``
(``--tile N`` repeats the excerpt N times to time longer tracks; museval's cost grows with it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from stemflow.audio.decode import load_stems

SAMPLE_RATE = 44100
STEMS = ("drums", "bass", "other", "vocals")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=1, help="repeat the 6 s excerpt this many times")
    parser.add_argument("--repeats", type=int, default=20, help="timing repeats of our implementation")
    parser.add_argument("--quality-seconds", type=float, default=240.0, help="track length for quality timing")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "metrics.json")
    return parser.parse_args(argv)


def _excerpt(tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MUSDB18 excerpt tiled: mixture ``[2, N]``, references and noisy estimates ``[4, 2, N]``."""
    import stempeg

    stems = load_stems(stempeg.example_stem_path(), sample_rate=SAMPLE_RATE)
    streams = [stems[name] for name in ("mixture", *STEMS)]
    mixture = np.tile(streams[0], tile)
    refs = np.tile(np.stack(streams[1:]), tile)
    rng = np.random.default_rng(0)
    ests = refs + 0.05 * rng.standard_normal(refs.shape).astype(np.float32)
    ests[3] = mixture
    return mixture, refs, ests


def _framewise_sdr_figures(refs: np.ndarray, ests: np.ndarray, repeats: int) -> dict:
    """museval against our framewise SDR: times, agreement, cSDR per stem."""
    import museval

    from stemflow.measures.metrics import framewise_sdr, framewise_sdr_joint

    start = time.perf_counter()
    expected, *_ = museval.evaluate(refs.transpose(0, 2, 1), ests.transpose(0, 2, 1), win=SAMPLE_RATE, hop=SAMPLE_RATE)
    museval_s = time.perf_counter() - start
    expected = np.asarray(expected)
    ours_times, ours = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        ours = framewise_sdr_joint(refs, ests, SAMPLE_RATE)
        ours_times.append(time.perf_counter() - start)
    ours_s = min(ours_times)
    per_stem = np.stack([framewise_sdr(r, e, SAMPLE_RATE) for r, e in zip(refs, ests)])
    finite = np.isfinite(expected)
    return {
        "frames": int(expected.shape[1]),
        "museval_s": museval_s,
        "stemflow_s": ours_s,
        "speed_ratio": museval_s / ours_s,
        "max_abs_diff_db": float(np.max(np.abs(ours[finite] - expected[finite]))),
        "max_abs_diff_db_per_stem_api": float(np.max(np.abs(per_stem[finite] - expected[finite]))),
        "nan_pattern_equal": bool(np.array_equal(np.isnan(ours), np.isnan(expected))),
        "csdr_museval": {s: float(np.nanmedian(v)) for s, v in zip(STEMS, expected)},
        "csdr_stemflow": {s: float(np.nanmedian(v)) for s, v in zip(STEMS, ours)},
    }


def _quality_figures(mixture: np.ndarray, refs: np.ndarray, seconds: float) -> dict:
    """Seconds of the reference-free quality measures on a ``seconds``-long track."""
    from stemflow.measures.quality import stem_quality, track_quality

    repeat = max(1, int(np.ceil(seconds * SAMPLE_RATE / mixture.shape[1])))
    long_mix = np.tile(mixture, repeat)[:, : int(seconds * SAMPLE_RATE)]
    long_stems = {name: np.tile(r, repeat)[:, : long_mix.shape[1]] for name, r in zip(STEMS, refs)}
    start = time.perf_counter()
    for stem in long_stems.values():
        stem_quality(stem, SAMPLE_RATE, long_mix)
    stem_quality_s = (time.perf_counter() - start) / len(long_stems)
    start = time.perf_counter()
    track_quality(long_mix, long_stems)
    return {"quality_track_s": seconds, "stem_quality_s_per_stem": stem_quality_s,
            "track_quality_s": time.perf_counter() - start}


def _print(result: dict) -> None:
    print(f"{'':28}{'museval':>12}{'stemflow':>12}")
    print(f"{'framewise SDR, 4 stems (s)':28}{result['museval_s']:12.3f}{result['stemflow_s']:12.5f}")
    print(f"speed ratio: {result['speed_ratio']:.0f}x   max |diff|: {result['max_abs_diff_db']:.2e} dB   "
          f"NaN pattern equal: {result['nan_pattern_equal']}")
    for stem in STEMS:
        print(f"  cSDR {stem:7} museval {result['csdr_museval'][stem]:8.4f}   "
              f"stemflow {result['csdr_stemflow'][stem]:8.4f}")
    print(f"stem_quality on {result['quality_track_s']:.0f} s stereo: {result['stem_quality_s_per_stem']:.2f} s "
          f"per stem; track_quality (4 stems): {result['track_quality_s']:.2f} s")


def main(argv: list[str] | None = None) -> dict:
    """Time and compare the metrics against museval; print and write the JSON."""
    args = _arguments(argv)
    mixture, refs, ests = _excerpt(args.tile)
    result = {
        "data": f"stempeg example (MUSDB18 excerpt) x{args.tile}, {refs.shape[-1] / SAMPLE_RATE:.2f} s, 4 stems, "
                "44.1 kHz",
        **_framewise_sdr_figures(refs, ests, args.repeats),
        **_quality_figures(mixture, refs, args.quality_seconds),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],  # other work on the machine slows both sides
    }
    _print(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
