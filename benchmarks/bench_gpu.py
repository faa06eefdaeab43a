"""GPU benchmark of the model runtime on real-size Roformer configs (random weights): one short script for all of it.

For each config (default: the 4-stem BS-RoFormer and the KJ vocals Mel-RoFormer
of the registry), on one CUDA device:

1. useful FLOPs per chunk (``torch.utils.flop_counter``; the per-band modules,
   so padding is not credited) and aten operators per eager forward of a 1 s
   chunk (:mod:`stemflow.models.op_count`, the kernel-launch proxy);
2. a batch sweep of the eager forward in float32 (TF32 off: true fp32),
   bfloat16 and float16 autocast: ms per chunk, TFLOP/s, MFU against the
   measured matmul peak of that dtype, peak memory;
3. seconds per 4-minute track through the :class:`~stemflow.engine.separator.Separator`
   (overlap-add included) per precision at the best batch, eager; then with
   ``torch.compile`` (mode ``default`` and ``reduce-overhead`` = CUDA graphs) at
   ``precision="auto"``: compile warm-up, seconds per track, graphs compiled
   (dynamo's counter; a second track of another length must add none), and SDR
   against eager;
4. with ``--peer-python`` (a Python with ``audio-separator`` installed):
   audio-separator's ``MDXCSeparator`` on the same checkpoint, the same input
   WAV and the same GPU, against stemflow's whole path at the same chunk and
   overlap (``bench_peer.py``'s child processes).

On an H100/H200 the default run takes about 6-10 minutes (compilation is most
of it)::

    PYTHONPATH=. python benchmarks/bench_gpu.py --out benchmarks/results/gpu.json
    PYTHONPATH=. python benchmarks/bench_gpu.py --quick ...   # one config, fewer batches: ~3 min
    PYTHONPATH=. python benchmarks/bench_gpu.py --smoke --out /tmp/gpu_smoke.json   # tiny, on CPU: checks the script

``--smoke`` runs every step on the tiny 4-stem fixture model of
``../shared/fixtures/roformer`` (random weights), a 3 s track, batches 1 and 2 and
one compile mode, on whatever device there is (CPU here): a check that the
script works, not a measurement. audio-separator runs when ``--peer-python`` is
given or, by default, when this Python can import ``audio_separator``.

Only torch, numpy and pyyaml are needed (no soundfile/ray for 1-3).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from stemflow.engine.separator import Separator
from stemflow.models import build_model
from stemflow.models.config import load_config
from stemflow.models.op_count import count_ops
from stemflow.models.precision import PRECISIONS, resolve_precision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_peer import music_like, sdr_db  # noqa: E402

SMOKE_CONFIG = ROOT.parent / "shared" / "fixtures" / "roformer" / "bs_roformer_4stem" / "config.yaml"
DEFAULT_CONFIGS = (
    ROOT / "configs/models/config_bs_roformer_384_8_2_485100.yaml",
    ROOT / "configs/models/config_vocals_mel_band_roformer_kj.yaml",
)


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


def useful_flops(model: torch.nn.Module, chunk: int, device: torch.device) -> int:
    """FLOPs of one chunk through the per-band modules (the grouped kernels' zero padding is not useful work)."""
    grouped = getattr(model, "grouped_band_kernels", None)
    if grouped is not None:
        model.grouped_band_kernels = False
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.separate_chunks(torch.randn(1, 2, chunk, device=device))
    if grouped is not None:
        model.grouped_band_kernels = grouped
    return int(counter.get_total_flops())


def time_forward(model, batch: int, chunk: int, device, precision: str, repeats: int) -> float:
    """Seconds per forward of ``batch`` chunks (mean over ``repeats`` after one warm-up)."""
    x = torch.randn(batch, 2, chunk, device=device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=PRECISIONS[precision],
                                                enabled=precision != "float32"):
        model.separate_chunks(x)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            model.separate_chunks(x)
        sync(device)
    return (time.perf_counter() - start) / repeats


def _release(device: torch.device) -> float:
    """Peak memory since the last call in GiB (NaN off CUDA); frees cached blocks."""
    gc.collect()
    if device.type != "cuda":
        return float("nan")
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    torch.cuda.empty_cache()
    return peak


def sweep(model, chunk: int, flops: int, device, args: argparse.Namespace, peaks: dict[str, float]) -> list[dict]:
    """The eager batch sweep, per precision, up to the first batch that does not fit."""
    rows = []
    for precision in args.precisions:
        for batch in args.batches:
            try:
                seconds = time_forward(model, batch, chunk, device, precision, args.repeats)
            except torch.OutOfMemoryError:
                _release(device)
                print(f"  {precision:9s} batch {batch:3d}: out of memory", flush=True)
                break
            memory = _release(device)
            achieved = flops * batch / seconds
            row = {"precision": precision, "batch": batch, "seconds_per_forward": seconds,
                   "seconds_per_chunk": seconds / batch, "tflops_achieved": achieved / 1e12,
                   "mfu": achieved / peaks[precision], "peak_mem_gib": memory}
            rows.append(row)
            print(f"  {precision:9s} batch {batch:3d}: {seconds / batch * 1e3:7.1f} ms/chunk, {achieved / 1e12:6.3g} "
                  f"TFLOP/s, MFU {row['mfu']:5.1%}, {memory:5.1f} GiB", flush=True)
    return rows


def time_track(separator: Separator, audio: np.ndarray, rate: int, device: torch.device) -> tuple[float, dict]:
    sync(device)
    start = time.perf_counter()
    stems = separator.separate(audio, rate)
    sync(device)
    return time.perf_counter() - start, stems


def tracks(model, config, device, args: argparse.Namespace, forward: list[dict]) -> list[dict]:
    """Seconds per track, eager per precision and compiled at 'auto' (both compile modes)."""
    rate, chunk = config.audio.sample_rate, config.audio.chunk_size
    audio = music_like(args.track_seconds, rate, seed=1)
    other = music_like(args.track_seconds * 0.77, rate, seed=2)  # another length: must not recompile
    rows, eager = [], {}
    for precision in args.precisions:
        fitting = [r for r in forward if r["precision"] == precision]
        batch = min(max(fitting, key=lambda r: 1 / r["seconds_per_chunk"])["batch"], args.track_batch)
        separator = Separator(model, device=device, batch_size=batch, precision=precision)
        separator.separate(audio[:, : chunk * 2], rate)  # warm-up
        seconds, eager[precision] = time_track(separator, audio, rate, device)
        rows.append({"mode": "eager", "precision": precision, "batch": batch, "wall_s": seconds})
        _release(device)
    auto = resolve_precision("auto", device)
    for mode in args.compile_modes:
        from torch._dynamo.utils import counters

        torch._dynamo.reset()
        counters.clear()
        batch = args.track_batch
        separator = Separator(model, device=device, batch_size=batch, precision=auto, compile=True, compile_mode=mode)
        started = time.perf_counter()
        separator.separate(audio[:, : chunk * 3], rate)  # compiles (the tail batch is padded: one shape)
        warmup = time.perf_counter() - started
        seconds, stems = time_track(separator, audio, rate, device)
        time_track(separator, other, rate, device)
        rows.append({"mode": f"compile:{mode}", "precision": auto, "batch": batch, "wall_s": seconds,
                     "compile_warmup_s": warmup, "compiled": separator.compiled,
                     "graphs": int(counters["stats"]["unique_graphs"]),
                     "sdr_vs_eager_db": {s: sdr_db(eager[auto][s], stems[s]) for s in stems} if auto in eager else {}})
        _release(device)
    for row in rows:
        row["seconds_per_track"] = row["wall_s"]
        row["seconds_per_track_minute"] = row["wall_s"] / (args.track_seconds / 60)
        if row["mode"] == "eager" and row["precision"] != "float32" and "float32" in eager:
            row["sdr_vs_float32_db"] = {s: sdr_db(eager["float32"][s], eager[row["precision"]][s])
                                        for s in eager[row["precision"]]}
        print(f"  {args.track_seconds:.0f} s track, {row['mode']:24s} {row['precision']:9s} batch {row['batch']:3d}: "
              f"{row['wall_s']:6.2f} s" + "".join(f", {k} {row[k]}" for k in ("compile_warmup_s", "graphs",
                                                                                 "sdr_vs_float32_db", "sdr_vs_eager_db")
                                                  if k in row), flush=True)
    return rows


def peer(config_path: Path, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """audio-separator against stemflow on the same checkpoint, input and GPU (``bench_peer`` children)."""
    import soundfile as sf
    from bench_peer import make_checkpoint, run_child

    config = load_config(config_path)
    rate, chunk = config.audio.sample_rate, config.audio.chunk_size
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-peer-"))
    checkpoint = work / "model.ckpt"
    make_checkpoint(config_path, checkpoint)
    sf.write(work / "in.wav", music_like(args.track_seconds, rate, seed=1).T, rate, subtype="FLOAT")
    spec = {"config": str(config_path), "checkpoint": str(checkpoint), "input": str(work / "in.wav"),
            "chunk_size": chunk, "num_overlap": config.inference.num_overlap, "device": str(device), "threads": 8}
    ours = run_child(Path(sys.executable), "ours-e2e", {**spec, "tag": "ours", "batch_size": args.track_batch,
                                                        "precision": resolve_precision("auto", device),
                                                        "output_dir": str(work / "ours")}, work)
    theirs = run_child(Path(args.peer_python), "peer-e2e", {**spec, "tag": "peer", "output_dir": str(work / "peer")},
                       work)
    print(f"  peer ({args.track_seconds:.0f} s track): stemflow {ours['total_s']:.2f} s, "
          f"audio-separator {theirs['total_s']:.2f} s", flush=True)
    return {"stemflow": ours, "audio_separator": theirs}


def bench_config(path: Path, device: torch.device, args: argparse.Namespace, peaks: dict[str, float]) -> dict:
    config = load_config(path)
    torch.manual_seed(0)
    model = build_model(config).eval().to(device)
    model.config = config
    chunk = config.audio.chunk_size
    flops = useful_flops(model, chunk, device)
    ops = count_ops(model.separate_chunks, torch.randn(1, 2, config.audio.sample_rate, device=device))
    params = sum(p.numel() for p in model.parameters())
    print(f"\n== {path.name}: {params / 1e6:.1f} M params, chunk {chunk} ({chunk / config.audio.sample_rate:.2f} s), "
          f"{flops / 1e12:.3g} TFLOP per chunk, {sum(ops.values())} aten ops per 1 s forward", flush=True)
    forward = sweep(model, chunk, flops, device, args, peaks)
    result = {"config": path.name, "params": params, "chunk_size": chunk, "flops_per_chunk": flops,
              "ops_per_1s_forward": sum(ops.values()), "forward": forward,
              "track": tracks(model, config, device, args, forward)}
    del model
    _release(device)
    if args.peer_python:
        result["peer"] = peer(path, device, args)
    return result


def _arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", type=Path, help="config(s) (default: BS 4-stem + KJ Mel vocals)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16", "float16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--track-seconds", type=float, default=240.0, help="a 4-minute track")
    parser.add_argument("--track-batch", type=int, default=16, help="cap of the batch of the whole-track runs")
    parser.add_argument("--compile-modes", nargs="*", default=["default", "reduce-overhead"])
    parser.add_argument("--peer-python", help="a Python with audio-separator installed (default: this one, if it "
                                              "has it): also run audio-separator on this device")
    parser.add_argument("--matmul-n", type=int, default=None, help="size of the peak matmul (8192 on CUDA, else 1024)")
    parser.add_argument("--quick", action="store_true", help="the BS config only, batches 1 and 16, one compile mode")
    parser.add_argument("--smoke", action="store_true", help="tiny fixture model, 3 s track: checks the script (CPU)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.config = args.config or [DEFAULT_CONFIGS[0]]
        args.batches, args.repeats, args.compile_modes = [1, 16], 2, args.compile_modes[:1]
    if args.smoke:
        # one compile mode (default), or none with an empty --compile-modes (inductor's C++ build of the
        # model takes many minutes on a small CPU)
        args.config, args.batches, args.repeats, args.compile_modes = [SMOKE_CONFIG], [1, 2], 1, args.compile_modes[:1]
        args.track_seconds, args.track_batch, args.matmul_n = 3.0, 2, args.matmul_n or 256
    if args.peer_python is None and importlib.util.find_spec("audio_separator") is not None:
        args.peer_python = sys.executable
    return args


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    device = torch.device(args.device)
    if device.type != "cuda":
        args.precisions = [p for p in args.precisions if p != "float16"]
        args.compile_modes = [m for m in args.compile_modes if m != "reduce-overhead"]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    n = args.matmul_n or (8192 if device.type == "cuda" else 1024)
    peaks = {p: matmul_peak(device, PRECISIONS[p], n, 5 if p == "float32" else 10) for p in args.precisions}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}; matmul peak "
          + ", ".join(f"{p} {v / 1e12:.3g} TFLOP/s" for p, v in peaks.items()), flush=True)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "device": name, "torch": torch.__version__,
                              "matmul_peak_flops": peaks, "track_seconds": args.track_seconds, "results": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for path in args.config or DEFAULT_CONFIGS:
        report["results"].append(bench_config(path, device, args, peaks))
        args.out.write_text(json.dumps(report, indent=2, default=float))  # partial runs keep their figures
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
