"""Model FLOP utilisation (MFU) of a Roformer forward on this CPU, and where the time goes.

For one config (default: the real-size 4-stem BS-RoFormer, dim 384, depth 8,
random seeded weights) and one chunk:

1. FLOPs per chunk, counted by ``torch.utils.flop_counter.FlopCounterMode`` on
   the meta device (no compute). On the CPU the counter has no formula for the
   fused attention kernel (``_scaled_dot_product_flash_attention_for_cpu``) and
   silently counts attention as 0; on meta, attention runs as two ``bmm`` and
   is counted (the same total as on CUDA);
2. the machine's measured matmul peak: a large square ``torch.mm`` in the same
   dtype with the same ``torch.get_num_threads()`` threads;
3. forward time per chunk (``separate_chunks`` under ``torch.inference_mode``)
   in float32 and, optionally, under bfloat16 autocast (with the SDR of the
   bf16 output against float32's);
4. MFU = FLOPs / time / peak; and a ``torch.profiler`` table of one float32
   forward grouped by op (self CPU time, % of the total) and by category
   (matmul, attention, FFT, elementwise/norm, data movement).

Usage::

    .venv/bin/python benchmarks/bench_efficiency.py            # full 11.0 s chunk, ~5 min on 2 idle cores
    .venv/bin/python benchmarks/bench_efficiency.py --quick    # 2 s chunk
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from stemflow.models import build_model
from stemflow.models.config import load_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_peer import machine_info, music_like, sdr_db  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs/models/config_bs_roformer_384_8_2_485100.yaml"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

CATEGORIES = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm")),
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention", "aten::_softmax", "aten::softmax")),
    ("fft/stft", ("fft", "stft", "istft")),
    ("norm/activation", ("norm", "gelu", "sigmoid", "rsqrt", "aten::pow", "aten::sqrt", "aten::clamp", "aten::mean")),
    ("elementwise", ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::neg", "aten::cos", "aten::sin")),
    ("data movement", ("copy", "cat", "clone", "contiguous", "index", "stack", "pad", "reshape", "view", "permute",
                       "transpose", "flip", "fill", "zero", "empty", "split", "slice", "select", "expand")),
)


def matmul_peak(dtype: torch.dtype, n: int, seconds: float = 2.0) -> float:
    """Measured FLOP/s of ``torch.mm`` of two ``n x n`` matrices (after warm-up), this process's threads."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= 3:
            return 2 * n**3 * count / elapsed


def count_flops(config_path: Path, chunk: int) -> tuple[int, dict[str, int], str]:
    """FLOPs of ``separate_chunks`` on one ``[1, 2, chunk]`` input; per-op counts; the device used."""
    config = load_config(config_path)
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = build_model(config).eval()
            x = torch.zeros(1, 2, chunk, device=device)
            counter = FlopCounterMode(display=False)
            with torch.inference_mode(), counter:
                model.separate_chunks(x)
        except (RuntimeError, NotImplementedError):
            if device == "cpu":
                raise
            continue
        per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
        return int(counter.get_total_flops()), per_op, device
    raise AssertionError("unreachable")


def time_forward(model: torch.nn.Module, x: torch.Tensor, precision: str, repeats: int) -> tuple[list[float], torch.Tensor]:
    """Seconds per ``separate_chunks(x)`` (each repeat timed) and the first output."""
    autocast = torch.autocast("cpu", dtype=DTYPES[precision], enabled=precision != "float32")
    times, first = [], None
    with torch.inference_mode(), autocast:
        for _ in range(repeats):
            start = time.perf_counter()
            y = model.separate_chunks(x)
            times.append(time.perf_counter() - start)
            if first is None:
                first = y.float()
    return times, first


def categorise(name: str) -> str:
    lowered = name.lower()
    for category, keys in CATEGORIES:
        if any(key in lowered for key in keys):
            return category
    return "other"


def profile_forward(model: torch.nn.Module, x: torch.Tensor, top: int) -> dict[str, Any]:
    """One float32 forward under ``torch.profiler``: top ops by self CPU time, categories, top matmul shapes."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model.separate_chunks(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    by_category: dict[str, float] = defaultdict(float)
    for e in events:
        by_category[categorise(e.key)] += e.self_cpu_time_total
    shaped = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "total_self_cpu_s": total / 1e6,
        "top_ops": [
            {"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "percent": 100 * e.self_cpu_time_total / total,
             "calls": e.count}
            for e in ops[:top]
        ],
        "categories": {k: {"self_cpu_s": v / 1e6, "percent": 100 * v / total}
                       for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])},
        "top_shapes": [
            {"op": e.key, "input_shapes": str(e.input_shapes)[:200], "self_cpu_s": e.self_cpu_time_total / 1e6,
             "percent": 100 * e.self_cpu_time_total / total, "calls": e.count}
            for e in shaped[:top]
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--chunk-seconds", type=float, default=None, help="default: the config's chunk (11.0 s)")
    parser.add_argument("--quick", action="store_true", help="2 s chunk, smaller matmul")
    parser.add_argument("--repeats", type=int, default=1, help="timed forwards per precision (after a short warm-up)")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"], choices=list(DTYPES))
    parser.add_argument("--matmul-n", type=int, default=4096)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "efficiency_cpu.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.chunk_seconds = args.chunk_seconds or 2.0
        args.matmul_n = min(args.matmul_n, 2048)

    config = load_config(args.config)
    rate = config.audio.sample_rate
    hop = int(config.model.get("stft_hop_length", 441))
    chunk = config.audio.chunk_size if args.chunk_seconds is None else int(round(args.chunk_seconds * rate / hop)) * hop
    info = machine_info()
    print(json.dumps(info), flush=True)

    peaks = {p: matmul_peak(DTYPES[p], args.matmul_n) for p in args.precisions}
    for p, v in peaks.items():
        print(f"matmul peak {p:9s}: {v / 1e9:7.1f} GFLOP/s ({args.matmul_n}^3 mm, {torch.get_num_threads()} threads)")

    flops, per_op, counted_on = count_flops(args.config, chunk)
    print(f"{args.config.name}: chunk {chunk} samples ({chunk / rate:.2f} s), {flops / 1e12:.3f} TFLOP per chunk "
          f"(counted on {counted_on})", flush=True)

    torch.manual_seed(0)
    model = build_model(config).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.from_numpy(music_like(chunk / rate, rate, seed=3))[None]
    with torch.inference_mode():
        model.separate_chunks(x[..., : hop * 50])  # warm-up: kernels, allocator

    runs: list[dict[str, Any]] = []
    outputs: dict[str, torch.Tensor] = {}
    for precision in args.precisions:
        times, outputs[precision] = time_forward(model, x, precision, args.repeats)
        seconds = float(np.median(times))
        achieved = flops / seconds
        row = {"precision": precision, "forward_s": times, "median_s": seconds, "gflops_achieved": achieved / 1e9,
               "mfu": achieved / peaks[precision], "mfu_vs_float32_peak": achieved / peaks["float32"]
               if "float32" in peaks else None, "realtime_factor": (chunk / rate) / seconds}
        if precision != "float32" and "float32" in outputs:
            row["sdr_vs_float32_db"] = sdr_db(outputs["float32"].numpy(), outputs[precision].numpy())
        runs.append(row)
        extra = f", SDR vs float32 {row['sdr_vs_float32_db']:.1f} dB" if "sdr_vs_float32_db" in row else ""
        print(f"forward {precision:9s}: {seconds:7.2f} s/chunk, {achieved / 1e9:6.1f} GFLOP/s, MFU {row['mfu']:.1%} "
              f"(of the {precision} mm peak), {row['realtime_factor']:.2f}x real time{extra}", flush=True)

    result: dict[str, Any] = {
        "machine": info, "config": args.config.name, "params": params, "chunk_size": chunk, "chunk_s": chunk / rate,
        "flops_per_chunk": flops, "flops_by_op": per_op, "flops_counted_on": counted_on,
        "matmul_n": args.matmul_n, "matmul_peak_flops": peaks, "forward": runs,
    }
    if not args.no_profile:
        profile = profile_forward(model, x, args.top)
        result["profile_float32"] = profile
        print(f"\nprofile (float32, one forward, self CPU {profile['total_self_cpu_s']:.1f} s):")
        for name, entry in profile["categories"].items():
            print(f"  {name:16s} {entry['percent']:5.1f}%  {entry['self_cpu_s']:7.2f} s")
        print("  top ops:")
        for entry in profile["top_ops"]:
            print(f"    {entry['op']:40s} {entry['percent']:5.1f}%  {entry['self_cpu_s']:7.2f} s  {entry['calls']:6d} calls")
    result["machine"]["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
