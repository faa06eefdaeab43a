"""Model FLOP utilisation (MFU) of a Roformer forward on this CPU, before and after a change, and where the time goes.

For one config (default: the real-size 4-stem BS-RoFormer, dim 384, depth 8,
random seeded weights) and one chunk:

1. FLOPs per chunk, counted by ``torch.utils.flop_counter.FlopCounterMode`` on
   the meta device (no compute): the model's useful FLOPs (the per-band
   modules; the grouped band kernels add multiplications by their zero
   padding, which MFU does not credit). On the CPU the counter has no formula
   for the fused attention kernel and silently counts attention as 0; on meta,
   attention runs as two ``bmm`` and is counted (the same total as on CUDA);
2. the machine's measured matmul peak: a large square ``torch.mm`` in the same
   dtype with the same ``torch.get_num_threads()`` threads;
3. forward time per chunk (``separate_chunks`` under ``torch.inference_mode``)
   in float32 and under bfloat16 autocast, for each *variant*: ``after`` is this
   tree, ``before`` the ``stemflow`` package of ``--before-rev`` (extracted with
   ``git archive``). Each variant runs in its own worker process holding its
   model, and the forwards alternate between them (before, after, after,
   before, ...), so both see the same machine load: the ratio is the figure;
4. MFU = FLOPs / time / peak; aten operators per forward of a 1 s chunk (the
   kernel-launch proxy, :mod:`stemflow.models.op_count`); the largest
   difference between the variants' outputs (the same model: it must be float
   noise) and the SDR of bf16 against float32; and a ``torch.profiler`` table of
   one float32 forward per variant, grouped by op and by category (matmul,
   attention, FFT, elementwise/norm, data movement).

Usage::

    .venv/bin/python benchmarks/bench_efficiency.py            # full 11.0 s chunk, ~25 min on 2 idle cores
    .venv/bin/python benchmarks/bench_efficiency.py --quick    # 2 s chunk
    .venv/bin/python benchmarks/bench_efficiency.py --before-rev none   # this tree only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
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


BEFORE_REV = "39e32d7"
"""The tree before the grouped band kernels (issue 14): the default ``before`` variant."""


def extract_tree(rev: str, dest: Path) -> Path:
    """The ``stemflow`` package of git revision ``rev`` under ``dest`` (``git archive``; the repository is untouched)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "stemflow"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


# ---- worker: one variant's model in its own process, driven over stdin/stdout -----------------


def _op_counter() -> Any:
    """:class:`stemflow.models.op_count.OpCounter` of this tree (a ``before`` tree may not have it)."""
    spec = importlib.util.spec_from_file_location("_bench_op_count", ROOT / "stemflow" / "models" / "op_count.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.OpCounter


def serve() -> int:
    """Worker loop: one JSON command per stdin line, one ``@@``-prefixed JSON answer per stdout line."""
    state: dict[str, Any] = {}
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "build":
            import stemflow

            torch.manual_seed(command["seed"])
            state["model"] = build_model(load_config(command["config"])).eval()
            state["x"] = torch.from_numpy(np.load(command["input"]))
            with torch.inference_mode():
                state["model"].separate_chunks(state["x"][..., :22050])  # warm-up: kernels, allocator, caches
            answer: dict[str, Any] = {"stemflow": str(Path(stemflow.__file__).parent)}
        elif op == "time":
            x = state["x"][..., : command["samples"]]
            times, output = time_forward(state["model"], x, command["precision"], 1)
            np.save(command["save"], output.numpy())
            answer = {"seconds": times[0]}
        elif op == "ops":
            counter = _op_counter()()
            x = state["x"][..., : command["samples"]]
            with torch.inference_mode():
                state["model"].separate_chunks(x)
                with counter:
                    state["model"].separate_chunks(x)
            answer = {"total": counter.total, "by_op": dict(counter.counts.most_common())}
        elif op == "profile":
            answer = profile_forward(state["model"], state["x"], command["top"])
        else:
            answer = {"error": f"unknown op {op!r}"}
        print("@@" + json.dumps(answer, default=float), flush=True)
    return 0


class Worker:
    """A ``serve()`` subprocess importing ``stemflow`` from ``tree``."""

    def __init__(self, name: str, tree: Path) -> None:
        self.name = name
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(HERE)])}
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve"], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise RuntimeError(f"worker {self.name} exited (code {self.process.wait()})")

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


# ---- driver ----------------------------------------------------------------------------------


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--chunk-seconds", type=float, default=None, help="default: the config's chunk (11.0 s)")
    parser.add_argument("--bf16-chunk-seconds", type=float, default=None,
                        help="a shorter chunk for bfloat16 (a CPU without bf16 instructions emulates it, slowly)")
    parser.add_argument("--quick", action="store_true", help="2 s chunk, smaller matmul")
    parser.add_argument("--repeats", type=int, default=2, help="timed forwards per variant and precision")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"], choices=list(DTYPES))
    parser.add_argument("--before-rev", default=BEFORE_REV, help="git revision of the 'before' variant; 'none': skip")
    parser.add_argument("--matmul-n", type=int, default=4096)
    parser.add_argument("--bf16-matmul-n", type=int, default=None, help="default: --matmul-n")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "efficiency_cpu.json")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.chunk_seconds = args.chunk_seconds or 2.0
        args.matmul_n = min(args.matmul_n, 2048)
    return args


def _time_variants(workers: list[Worker], args: argparse.Namespace, work: Path,
                   samples: dict[str, int]) -> dict[str, dict[str, list[float]]]:
    """Alternate the variants' forwards: per repeat and precision, in turn (order reversed every other repeat)."""
    times: dict[str, dict[str, list[float]]] = {w.name: {p: [] for p in args.precisions} for w in workers}
    for repeat in range(args.repeats):
        for precision in args.precisions:
            for worker in workers if repeat % 2 == 0 else workers[::-1]:
                answer = worker.call(op="time", precision=precision, samples=samples[precision],
                                     save=str(work / f"{worker.name}_{precision}.npy"))
                times[worker.name][precision].append(answer["seconds"])
                print(f"  {worker.name:6s} {precision:9s} {answer['seconds']:8.2f} s", flush=True)
    return times


def _forward_rows(times: dict[str, dict[str, list[float]]], flops: dict[str, int], peaks: dict[str, float],
                  chunk_s: dict[str, float], work: Path) -> list[dict[str, Any]]:
    """Per variant and precision: seconds, MFU, real-time factor, SDR of bf16 vs float32 and vs the other variant."""
    rows = []
    for name, by_precision in times.items():
        for precision, seconds_list in by_precision.items():
            seconds = float(min(seconds_list))  # the least disturbed run on a shared machine
            achieved = flops[precision] / seconds
            row = {"variant": name, "precision": precision, "chunk_s": chunk_s[precision], "forward_s": seconds_list,
                   "min_s": seconds, "gflops_achieved": achieved / 1e9, "mfu": achieved / peaks[precision],
                   "mfu_vs_float32_peak": achieved / peaks["float32"] if "float32" in peaks else None,
                   "realtime_factor": chunk_s[precision] / seconds}
            output = np.load(work / f"{name}_{precision}.npy")
            reference_path = work / f"{name}_float32.npy"
            if precision != "float32" and reference_path.exists():
                reference = np.load(reference_path)[..., : output.shape[-1]]  # same start, maybe a shorter chunk
                row["sdr_vs_float32_db"] = sdr_db(reference, output) if chunk_s[precision] == chunk_s["float32"] \
                    else None  # a shorter chunk is a different separation: compared only at equal length
            if name != "before" and (work / f"before_{precision}.npy").exists():
                before = np.load(work / f"before_{precision}.npy")
                row["max_abs_diff_vs_before"] = float(np.abs(output - before).max())
                row["sdr_vs_before_db"] = sdr_db(before, output)
            rows.append(row)
    return rows


def _print_forward(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        extra = "".join(
            f", {label} {row[key]:.1f} dB" for key, label in (("sdr_vs_float32_db", "SDR vs float32"),
                                                              ("sdr_vs_before_db", "SDR vs before"))
            if row.get(key) is not None)
        print(f"{row['variant']:6s} {row['precision']:9s}: {row['min_s']:7.2f} s per {row['chunk_s']:.2f} s chunk, "
              f"{row['gflops_achieved']:6.1f} "
              f"GFLOP/s, MFU {row['mfu']:.1%} (of the {row['precision']} mm peak){extra}")
    by = {(r["variant"], r["precision"]): r["min_s"] for r in rows}
    for precision in {r["precision"] for r in rows}:
        if ("before", precision) in by and ("after", precision) in by:
            print(f"speed-up {precision}: {by[('before', precision)] / by[('after', precision)]:.2f}x (before / after)")


def _print_profile(name: str, profile: dict[str, Any]) -> None:
    print(f"\nprofile {name} (float32, one forward, self CPU {profile['total_self_cpu_s']:.1f} s):")
    for category, entry in profile["categories"].items():
        print(f"  {category:16s} {entry['percent']:5.1f}%  {entry['self_cpu_s']:7.2f} s")
    for entry in profile["top_ops"]:
        print(f"    {entry['op']:40s} {entry['percent']:5.1f}%  {entry['self_cpu_s']:7.2f} s  {entry['calls']:6d} calls")


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.serve:
        return serve()
    config = load_config(args.config)
    rate, hop = config.audio.sample_rate, int(config.model.get("stft_hop_length", 441))
    chunk = config.audio.chunk_size if args.chunk_seconds is None else int(round(args.chunk_seconds * rate / hop)) * hop
    info = machine_info()
    print(json.dumps(info), flush=True)
    sizes = {p: args.bf16_matmul_n if p == "bfloat16" and args.bf16_matmul_n else args.matmul_n for p in args.precisions}
    peaks = {p: matmul_peak(DTYPES[p], sizes[p]) for p in args.precisions}
    for p, v in peaks.items():
        print(f"matmul peak {p:9s}: {v / 1e9:7.1f} GFLOP/s ({sizes[p]}^3 mm, {torch.get_num_threads()} threads)")
    samples = {p: chunk for p in args.precisions}
    if args.bf16_chunk_seconds and "bfloat16" in samples:
        samples["bfloat16"] = min(chunk, int(round(args.bf16_chunk_seconds * rate / hop)) * hop)
    counted = {n: count_flops(args.config, n) for n in set(samples.values())}
    flops = {p: counted[n][0] for p, n in samples.items()}
    per_op, counted_on = counted[chunk][1], counted[chunk][2]
    for p, n in samples.items():
        print(f"{args.config.name} {p}: chunk {n} samples ({n / rate:.2f} s), {flops[p] / 1e12:.3f} TFLOP per chunk "
              f"(counted on {counted_on})", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-efficiency-") as tmp:
        work = Path(tmp)
        np.save(work / "input.npy", music_like(chunk / rate, rate, seed=3)[None])
        trees = [("after", ROOT)]
        if args.before_rev.lower() != "none":
            trees.insert(0, ("before", extract_tree(args.before_rev, work / "before")))
        workers = [Worker(name, tree) for name, tree in trees]
        try:
            built = {w.name: w.call(op="build", config=str(args.config), seed=0, input=str(work / "input.npy"))
                     for w in workers}
            ops = {w.name: w.call(op="ops", samples=rate) for w in workers}
            for name, count in ops.items():
                print(f"{name:6s}: {count['total']} aten ops per forward of a 1 s chunk ({built[name]['stemflow']})")
            times = _time_variants(workers, args, work, samples)
            rows = _forward_rows(times, flops, peaks, {p: n / rate for p, n in samples.items()}, work)
            profiles = {} if args.no_profile else {w.name: w.call(op="profile", top=args.top) for w in workers}
        finally:
            for worker in workers:
                worker.close()
    _print_forward(rows)
    for name, profile in profiles.items():
        _print_profile(name, profile)
    params = sum(p.numel() for p in build_model(config).parameters())
    result: dict[str, Any] = {
        "machine": {**info, "loadavg_end": os.getloadavg()}, "config": args.config.name, "params": params,
        "chunk_size": chunk, "chunk_s": chunk / rate, "flops_per_chunk": flops[args.precisions[0]],
        "flops_by_op": per_op,
        "flops_counted_on": counted_on, "matmul_n": sizes, "matmul_peak_flops": peaks,
        "chunk_samples": samples, "flops_per_forward": flops,
        "before_rev": args.before_rev, "ops_per_forward_1s": ops, "forward": rows,
        "profile_float32": profiles,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
