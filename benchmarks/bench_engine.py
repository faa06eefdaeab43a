"""Benchmark of the separation engine (stemflow.engine.separator / stemflow.engine.streaming).

Three cases, printed as a table and written to ``benchmarks/results/engine.json``:

1. ``fixture_models``: seconds of compute per second of audio for each tiny
   RoFormer of ``../shared/fixtures/roformer`` (random weights, real STFT and
   band layouts), through :class:`Separator` at batch sizes 1 and 4.
2. ``streaming_rss``: peak resident memory of :func:`separate_file` against
   track length (5 / 20 / 60 minutes; 1 / 5 with ``--quick``), each in a fresh
   subprocess, with a tiny 4-stem model (a per-stem 1x1 mix of the channels) and
   the usual full-size geometry (chunk 352800 = 8 s, overlap 4, batch 2), writing
   four 24-bit FLAC stems. The input WAV is generated on disk in blocks. One
   in-memory run (:meth:`Separator.separate` on the decoded track) is measured
   for comparison.
3. ``full_chunk`` (only with ``--full``): one chunk through a full-size,
   random-weight 4-stem BS-RoFormer (``configs/models/config_bs_roformer_384_8_2_485100.yaml``),
   and the seconds per second of track this implies at the config's overlap.

Usage: ``.venv/bin/python benchmarks/bench_engine.py [--quick] [--full] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stemflow.engine.separator import Separator  # noqa: E402
from stemflow.models import build_model, load_model  # noqa: E402
from stemflow.models.config import config_from_dict, load_config  # noqa: E402

FIXTURES = REPO.parent / "shared" / "fixtures" / "roformer"
FULL_CONFIG = REPO / "configs" / "models" / "config_bs_roformer_384_8_2_485100.yaml"
SAMPLE_RATE = 44100
STREAM_GEOMETRY = {"chunk_size": 352800, "num_overlap": 4, "batch_size": 2}


class TinyStemModel(torch.nn.Module):
    """Four stems, each a fixed 2x2 mix of the input channels: costs almost nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.config = config_from_dict(
            {
                "model_type": "bench_tiny",
                "audio": {"chunk_size": STREAM_GEOMETRY["chunk_size"], "sample_rate": SAMPLE_RATE},
                "model": {},
                "training": {"instruments": ["drums", "bass", "other", "vocals"]},
                "inference": {k: v for k, v in STREAM_GEOMETRY.items() if k != "chunk_size"},
            }
        )
        self.num_output_stems = 4
        gains = torch.tensor([[0.4, 0.1], [0.2, 0.2], [0.1, 0.3], [0.3, 0.4]])
        self.register_buffer("mix", torch.stack([torch.diag(g) for g in gains]))  # [4, 2, 2]

    def separate_chunks(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("sij,bjl->bsil", self.mix, x)


def test_signal(num_samples: int, offset: int = 0, seed: int = 0) -> np.ndarray:
    """Deterministic stereo music-like signal ``[2, num_samples]`` float32 (sines plus noise)."""
    t = (np.arange(num_samples) + offset) / SAMPLE_RATE
    rng = np.random.default_rng(seed + offset)
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 3100 * t)
    right = 0.3 * np.sin(2 * np.pi * 330 * t + 1.0) + 0.1 * np.sin(2 * np.pi * 1900 * t)
    noise = 0.05 * rng.standard_normal((2, num_samples))
    return (np.stack([left, right]) + noise).astype(np.float32)


def write_test_wav(path: Path, seconds: float, block_seconds: float = 10.0) -> None:
    """Write a 16-bit stereo WAV of ``seconds`` block by block (never the whole track in memory)."""
    import soundfile as sf

    total = round(seconds * SAMPLE_RATE)
    block = round(block_seconds * SAMPLE_RATE)
    with sf.SoundFile(path, "w", samplerate=SAMPLE_RATE, channels=2, subtype="PCM_16") as out:
        for start in range(0, total, block):
            out.write(test_signal(min(block, total - start), offset=start).T)


def max_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- cases


def bench_fixture_models(device: str, seconds: float, precision: str) -> list[dict]:
    rows = []
    audio = test_signal(round(seconds * SAMPLE_RATE))
    for folder in sorted(p for p in FIXTURES.glob("*/") if (p / "config.yaml").exists()):
        model = load_model(folder / "config.yaml", folder / "model.ckpt")
        for batch_size in (1, 4):
            separator = Separator(model, device=device, batch_size=batch_size, precision=precision)
            separator.separate(audio[:, : model.config.audio.chunk_size * 2], SAMPLE_RATE)  # warm-up
            start = time.perf_counter()
            separator.separate(audio, SAMPLE_RATE)
            elapsed = time.perf_counter() - start
            rows.append(
                {
                    "model": folder.name,
                    "device": device,
                    "precision": precision,
                    "batch_size": batch_size,
                    "chunk_size": separator.chunk_size,
                    "num_overlap": separator.num_overlap,
                    "audio_s": seconds,
                    "elapsed_s": round(elapsed, 3),
                    "s_per_audio_s": round(elapsed / seconds, 5),
                }
            )
    return rows


def stream_child(input_path: Path, out_dir: Path, mode: str) -> dict:
    """Run in a fresh interpreter: separate one file, report time and memory."""
    import soundfile as sf

    from stemflow.engine.streaming import separate_file

    separator = Separator(TinyStemModel())
    baseline = max_rss_mb()
    start = time.perf_counter()
    if mode == "streaming":
        outputs = {stem: out_dir / f"{stem}.flac" for stem in separator.stems}
        result = separate_file(separator, input_path, outputs, block_seconds=10.0)
        extra = {"peak_buffered_frames": result.peak_buffered_frames}
    else:
        audio, rate = sf.read(input_path, dtype="float32", always_2d=True)
        stems = separator.separate(np.ascontiguousarray(audio.T), rate)
        extra = {"output_bytes": sum(a.nbytes for a in stems.values())}
    return {"baseline_rss_mb": round(baseline, 1), "peak_rss_mb": round(max_rss_mb(), 1),
            "elapsed_s": round(time.perf_counter() - start, 2), **extra}  # fmt: skip


def bench_streaming(minutes: list[float], in_memory_minutes: float) -> list[dict]:
    rows = []
    cases = [(m, "streaming") for m in minutes] + [(in_memory_minutes, "in_memory")]
    for length_min, mode in cases:
        with tempfile.TemporaryDirectory(prefix="stemflow-bench-") as tmp:
            input_path = Path(tmp) / "input.wav"
            write_test_wav(input_path, length_min * 60)
            command = [sys.executable, __file__, "--child", mode, str(input_path), tmp]
            command += ["--threads", str(torch.get_num_threads())]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            report = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"mode": mode, "track_min": length_min, **report,
                         "input_mb": round(input_path.stat().st_size / 2**20, 1)})  # fmt: skip
    return rows


def bench_full_chunk(device: str, precision: str, batch_sizes: list[int]) -> list[dict]:
    config = load_config(FULL_CONFIG)
    torch.manual_seed(0)  # a benchmark script, not the library: random weights are fine
    model = build_model(config).eval()
    model.config = config
    rows = []
    for batch_size in batch_sizes:
        separator = Separator(model, device=device, batch_size=batch_size, precision=precision)
        chunk = torch.from_numpy(test_signal(config.audio.chunk_size)).expand(batch_size, 2, -1).contiguous()
        repeats = 1 if device == "cpu" else 3
        if device != "cpu":
            separator.run_batch(chunk)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            separator.run_batch(chunk)
        per_batch = (time.perf_counter() - start) / repeats
        chunk_s = config.audio.chunk_size / SAMPLE_RATE
        step_s = chunk_s / config.inference.num_overlap
        rows.append(
            {
                "config": FULL_CONFIG.name,
                "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                "device": device,
                "precision": precision,
                "batch_size": batch_size,
                "chunk_s": round(chunk_s, 2),
                "num_overlap": config.inference.num_overlap,
                "s_per_chunk": round(per_batch / batch_size, 3),
                # every step of track costs one chunk
                "s_per_audio_s": round(per_batch / batch_size / step_s, 4),
                "cuda_peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device != "cpu" else None,
            }
        )
    return rows


# ----------------------------------------------------------------------------- output


def print_table(title: str, rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(row.get(c, "")) for c in columns))
        Console().print(table)
    except ImportError:
        print(f"\n{title}\n" + "\t".join(columns))
        for row in rows:
            print("\t".join(str(row.get(c, "")) for c in columns))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter audio, streaming at 1 and 5 minutes")
    parser.add_argument("--full", action="store_true", help="also time one chunk of the full-size BS-RoFormer")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip-streaming", action="store_true")
    parser.add_argument("--full-batch-sizes", default="1", help="comma-separated, for --full")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "engine.json")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "INPUT", "OUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        mode, input_path, out_dir = args.child
        print(json.dumps(stream_child(Path(input_path), Path(out_dir), mode)))
        return 0

    results: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            "load_avg_1min": round(os.getloadavg()[0], 2),
        },
        "quick": args.quick,
    }
    results["fixture_models"] = bench_fixture_models(args.device, 10.0 if args.quick else 30.0, args.precision)
    print_table("fixture models: seconds per second of audio", results["fixture_models"])
    if not args.skip_streaming:
        minutes = [1.0, 5.0] if args.quick else [5.0, 20.0, 60.0]
        results["streaming_rss"] = bench_streaming(minutes, 1.0 if args.quick else 5.0)
        print_table("streaming vs in-memory: peak RSS (fresh process per case)", results["streaming_rss"])
    if args.full:
        sizes = [int(s) for s in args.full_batch_sizes.split(",")]
        results["full_chunk"] = bench_full_chunk(args.device, args.precision, sizes)
        print_table("full-size 4-stem BS-RoFormer, random weights", results["full_chunk"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
