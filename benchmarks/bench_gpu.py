"""GPU benchmark of the separation engine on real-size Roformer configs (random weights).

For each config: FLOPs per chunk (``torch.utils.flop_counter``), the machine's
measured matmul peak (same dtype), forward time per chunk against batch size
and precision (float32 / bf16 / fp16 autocast) up to the largest batch that
fits, model FLOP utilisation (MFU), seconds per track-minute through the full
:class:`stemflow.engine.separator.Separator` (overlap-add included), and the SDR of the
bf16/fp16 stems against float32's. Runs on CPU too (small batches), but it is
meant for a CUDA machine::

    python benchmarks/bench_gpu.py --out benchmarks/results/gpu.json

Only torch, numpy and pyyaml are needed (no soundfile/ray), so it runs on a bare
GPU image with ``PYTHONPATH=.``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from stemflow.engine.separator import Separator
from stemflow.models import build_model
from stemflow.models.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = (
    ROOT / "configs/models/config_bs_roformer_384_8_2_485100.yaml",
    ROOT / "configs/models/config_vocals_mel_band_roformer_kj.yaml",
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """Measured FLOP/s of an n x n x n matrix product (after warm-up)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def flops_per_chunk(model: torch.nn.Module, chunk: int, device: torch.device) -> int:
    x = torch.randn(1, 2, chunk, device=device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.separate_chunks(x)
    return int(counter.get_total_flops())


def time_forward(model, batch: int, chunk: int, device, precision: str, repeats: int) -> float:
    """Seconds per forward of ``batch`` chunks (mean over ``repeats`` after one warm-up)."""
    x = torch.randn(batch, 2, chunk, device=device)
    autocast = precision != "float32"
    with torch.inference_mode(), torch.autocast(device.type, dtype=DTYPES[precision], enabled=autocast):
        model.separate_chunks(x)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            model.separate_chunks(x)
        sync(device)
    return (time.perf_counter() - start) / repeats


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    num = float(np.sum(reference.astype(np.float64) ** 2))
    den = float(np.sum((reference.astype(np.float64) - estimate) ** 2))
    return 10 * math.log10((num + 1e-12) / (den + 1e-12))


def music_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Harmonic tones, a beat and noise: stems of a random model differ from the input."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = sum(0.1 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (110, 220, 330, 523, 880))
    x = x + 0.3 * (np.sin(2 * np.pi * 2 * t) > 0.95) * rng.standard_normal(t.size) + 0.02 * rng.standard_normal(t.size)
    return np.stack([x, np.roll(x, 37)]).astype(np.float32)


def bench_config(path: Path, device: torch.device, args: argparse.Namespace, peaks: dict[str, float]) -> dict[str, Any]:
    config = load_config(path)
    torch.manual_seed(0)
    model = build_model(config).eval().to(device)
    model.config = config
    chunk = config.audio.chunk_size
    params = sum(p.numel() for p in model.parameters())
    flops = flops_per_chunk(model, chunk, device)
    print(f"\n== {path.name}: {params / 1e6:.1f} M params, chunk {chunk} ({chunk / config.audio.sample_rate:.2f} s), "
          f"{flops / 1e12:.2f} TFLOP per chunk", flush=True)
    result: dict[str, Any] = {"config": path.name, "params": params, "chunk_size": chunk,
                              "flops_per_chunk": flops, "forward": [], "largest_batch": {}}
    for precision in args.precisions:
        largest = 0
        for batch in args.batches:
            try:
                seconds = time_forward(model, batch, chunk, device, precision, args.repeats)
            except torch.OutOfMemoryError:
                print(f"  {precision:9s} batch {batch:3d}: out of memory", flush=True)
                break
            finally:
                gc.collect()
                if device.type == "cuda":
                    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30
                    torch.cuda.reset_peak_memory_stats(device)
                    torch.cuda.empty_cache()
                else:
                    peak_mem = float("nan")
            largest = batch
            achieved = flops * batch / seconds
            peak = peaks["bfloat16" if precision != "float32" else "float32"]
            row = {"precision": precision, "batch": batch, "seconds_per_forward": seconds,
                   "seconds_per_chunk": seconds / batch, "chunks_per_s": batch / seconds,
                   "tflops_achieved": achieved / 1e12, "mfu": achieved / peak, "peak_mem_gib": peak_mem}
            result["forward"].append(row)
            print(f"  {precision:9s} batch {batch:3d}: {seconds * 1e3:8.1f} ms/forward, {seconds / batch * 1e3:7.1f} "
                  f"ms/chunk, {achieved / 1e12:6.1f} TFLOP/s, MFU {achieved / peak:5.1%}, {peak_mem:5.1f} GiB", flush=True)
        result["largest_batch"][precision] = largest

    audio = music_like(args.track_seconds, config.audio.sample_rate, seed=1)
    outputs: dict[str, dict[str, np.ndarray]] = {}
    result["track"] = []
    for precision in args.precisions:
        best = max((r for r in result["forward"] if r["precision"] == precision), key=lambda r: r["chunks_per_s"])
        batch = min(best["batch"], args.track_batch)
        separator = Separator(model, device=device, batch_size=batch, precision=precision)
        separator.separate(audio[:, : chunk * 2], config.audio.sample_rate)  # warm-up
        sync(device)
        start = time.perf_counter()
        outputs[precision] = separator.separate(audio, config.audio.sample_rate)
        sync(device)
        seconds = time.perf_counter() - start
        row = {"precision": precision, "batch": batch, "track_seconds": args.track_seconds, "wall_s": seconds,
               "seconds_per_track_minute": seconds / (args.track_seconds / 60)}
        if precision != "float32" and "float32" in outputs:
            row["sdr_vs_float32_db"] = {s: sdr(outputs["float32"][s], outputs[precision][s]) for s in outputs[precision]}
        result["track"].append(row)
        print(f"  track {args.track_seconds:.0f} s, {precision}, batch {batch}: {seconds:.2f} s wall, "
              f"{row['seconds_per_track_minute']:.2f} s per track-minute "
              f"{row.get('sdr_vs_float32_db', '')}", flush=True)
    if args.compile:
        batch = min(args.track_batch, result["largest_batch"].get("bfloat16", 1) or 1)
        separator = Separator(model, device=device, batch_size=batch, precision="bfloat16", compile=True)
        start = time.perf_counter()
        separator.separate(audio[:, : chunk * 4], config.audio.sample_rate)  # compiles (full and tail batch shapes)
        sync(device)
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        compiled = separator.separate(audio, config.audio.sample_rate)
        sync(device)
        seconds = time.perf_counter() - start
        row = {"precision": "bfloat16+compile", "batch": batch, "compiled": separator.compiled,
               "compile_warmup_s": compile_s, "track_seconds": args.track_seconds, "wall_s": seconds,
               "seconds_per_track_minute": seconds / (args.track_seconds / 60)}
        if "float32" in outputs:
            row["sdr_vs_float32_db"] = {s: sdr(outputs["float32"][s], compiled[s]) for s in compiled}
        result["track"].append(row)
        print(f"  track {args.track_seconds:.0f} s, bf16 + torch.compile (compiled={separator.compiled}), batch {batch}: "
              f"{seconds:.2f} s wall, {row['seconds_per_track_minute']:.2f} s per track-minute "
              f"(warm-up incl. compilation {compile_s:.0f} s) {row.get('sdr_vs_float32_db', '')}", flush=True)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", type=Path, help="config(s) to benchmark (default: real-size BS 4-stem + Mel vocals)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16", "float16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--track-seconds", type=float, default=180.0)
    parser.add_argument("--track-batch", type=int, default=16, help="cap of the batch used for the whole-track run")
    parser.add_argument("--compile", action="store_true", help="also time bf16 with torch.compile")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        args.precisions = [p for p in args.precisions if p != "float16"]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    n = 8192 if device.type == "cuda" else 1024
    peaks = {"float32": matmul_peak(device, torch.float32, n, 5), "bfloat16": matmul_peak(device, torch.bfloat16, n, 10)}
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor()}), "
          f"torch {torch.__version__}; matmul peak float32 {peaks['float32'] / 1e12:.1f} TFLOP/s, "
          f"bf16 {peaks['bfloat16'] / 1e12:.1f} TFLOP/s", flush=True)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "matmul_peak_flops": peaks,
        "results": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for path in args.config or DEFAULT_CONFIGS:
        report["results"].append(bench_config(path, device, args, peaks))
        args.out.write_text(json.dumps(report, indent=2))  # after each config: partial runs keep their figures
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
