"""What half precision costs in separation quality: the evidence behind ``precision="auto"``.

For each model and each precision (float32; bfloat16 and float16 autocast), on
this CPU (autocast behaves alike on a GPU: matmuls and convolutions in half
precision, norms and softmax in float32):

- the real Spleeter 2-stem weights on the MUSDB18 excerpt stempeg ships (the
  whole track, as :meth:`SpleeterUNetSeparator.separate_waveform` and the engine
  run it; first 6 s scored): SDR of each precision's stems against float32's, and
  cSDR / uSDR against the reference stems (:func:`stemflow.evaluation.scoring.score_stem`);
- the two golden Roformer fixtures (tiny, random weights): SDR of the forward
  output against float32's.

It also prints the H100 figures of ``results/gpu_h100.json`` (real-size models,
random weights): seconds per 180 s track and SDR against float32 per precision.
Usage::

    .venv/bin/python benchmarks/bench_precision.py     # ~5 min on 2 cores (bf16 emulated on AVX2-only CPUs)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemflow.evaluation.scoring import score_stem
from stemflow.models import load_model
from stemflow.models.precision import PRECISIONS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "roformer"
sys.path.insert(0, str(HERE))
from bench_peer import machine_info, sdr_db  # noqa: E402

SCORED_SAMPLES = 6 * 44100  # every stream of the excerpt ends in a decoder burst at ~6.04 s


def autocast(precision: str) -> Any:
    """CPU autocast in ``precision`` (a no-op context for float32)."""
    return torch.autocast("cpu", dtype=PRECISIONS[precision], enabled=precision != "float32")


def spleeter_on_musdb(precisions: list[str]) -> dict[str, Any]:
    """Whole-track Spleeter per precision: SDR against float32, cSDR/uSDR against the references."""
    import stempeg

    from stemflow.audio.decode import load_stems
    from stemflow.models.spleeter.convert import find_spleeter_checkpoint, load_spleeter_2stems

    stems = load_stems(str(stempeg.example_stem_path()), sample_rate=44100)
    references = {"vocals": stems["vocals"], "instrumental": stems["drums"] + stems["bass"] + stems["other"]}
    with tempfile.TemporaryDirectory() as cache:
        model = load_spleeter_2stems(Path(cache), prefix=find_spleeter_checkpoint("2stems"))
    outputs, rows = {}, []
    for precision in precisions:
        started = time.perf_counter()
        with torch.inference_mode(), autocast(precision):
            outputs[precision] = model.separate_waveform(torch.from_numpy(stems["mixture"])).float().numpy()
        seconds = time.perf_counter() - started
        for index, stem in enumerate(("vocals", "instrumental")):
            estimate = outputs[precision][index][:, :SCORED_SAMPLES]
            scores = score_stem(references[stem][:, :SCORED_SAMPLES], estimate, 44100)
            row = {"model": "spleeter-2stems (real weights)", "precision": precision, "stem": stem, "seconds": seconds,
                   "csdr_db": scores["csdr_db"], "usdr_db": scores["usdr_db"]}
            if precision != "float32":
                row["sdr_vs_float32_db"] = sdr_db(outputs["float32"][index][:, :SCORED_SAMPLES], estimate)
            rows.append(row)
            print(f"spleeter  {precision:9s} {stem:12s} cSDR {row['csdr_db']:6.2f}  uSDR {row['usdr_db']:6.2f}"
                  + (f"  SDR vs float32 {row['sdr_vs_float32_db']:6.1f} dB" if "sdr_vs_float32_db" in row else ""),
                  flush=True)
    return {"rows": rows}


def fixtures(precisions: list[str]) -> list[dict[str, Any]]:
    """The golden Roformer fixtures' forward per precision, SDR against float32's."""
    rows = []
    for name in ("bs_roformer_4stem", "mel_roformer_vocals"):
        model = load_model(FIXTURES / name / "config.yaml", FIXTURES / name / "model.ckpt")
        x = torch.from_numpy(np.load(FIXTURES / name / "forward_input.npy"))
        outputs = {}
        for precision in precisions:
            with torch.inference_mode(), autocast(precision):
                outputs[precision] = model.separate_chunks(x).float().numpy()
            if precision != "float32":
                value = sdr_db(outputs["float32"], outputs[precision])
                rows.append({"model": name, "precision": precision, "sdr_vs_float32_db": value})
                print(f"{name:20s} {precision:9s} SDR vs float32 {value:6.1f} dB", flush=True)
    return rows


def h100_figures() -> list[dict[str, Any]]:
    """Per config and precision: seconds per 180 s track and SDR against float32 (``results/gpu_h100.json``)."""
    path = HERE / "results" / "gpu_h100.json"
    if not path.exists():
        return []
    rows = []
    for result in json.loads(path.read_text())["results"]:
        for track in result.get("track", []):
            sdr = track.get("sdr_vs_float32_db") or {}
            rows.append({"config": result["config"], "precision": track["precision"], "batch": track["batch"],
                         "wall_s_per_180s_track": track["wall_s"], "sdr_vs_float32_db": sdr})
            worst = f"{min(sdr.values()):.1f}-{max(sdr.values()):.1f} dB" if sdr else "-"
            print(f"H100 {result['config'][:38]:38s} {track['precision']:9s} {track['wall_s']:6.2f} s per 180 s track, "
                  f"SDR vs float32 {worst}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "precision_cpu.json")
    args = parser.parse_args(argv)
    precisions = ["float32"] + [p for p in args.precisions if p != "float32"]
    info = machine_info()
    print(json.dumps(info), flush=True)
    result = {"machine": info, "fixtures": fixtures(precisions), "spleeter_musdb": spleeter_on_musdb(precisions),
              "h100": h100_figures()}
    result["machine"]["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
