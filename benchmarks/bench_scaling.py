"""CPU scaling of the separation engine: time and peak memory against track length and batch size,
and how best to use this machine's cores (threads against processes, bfloat16 autocast).

Every case runs in a fresh subprocess (``os.wait4`` gives that child's own peak
RSS); inputs are generated once as float32 ``.npy`` files so that generating
them does not count. Sections:

- ``length``: 10 / 30 / 60 / 120 s tracks at batch size 1 (plus a 0 s case:
  the process with the model loaded and nothing separated);
- ``batch``: a 60 s track at batch size 1 / 2 / 4 / 8;
- ``fastpath``: two tracks, separated by one process with 2 threads (one after
  the other), by two processes with 1 thread each (in parallel), and by one
  process with 2 threads under bfloat16 autocast (SDR against float32 given).

Models: ``fixture`` (the tiny 4-stem BS-RoFormer fixture, dim 8, run with the
real STFT and an 11 s chunk: it measures the engine, STFT and memory, not the
transformer), or ``mid`` (``benchmarks/configs/bs_roformer_mid.yaml``, dim 128 /
depth 4, seeded random weights: compute-bound). The fast-path section uses the
mid-size model with 2 s chunks so that it stays short.

Usage::

    .venv/bin/python benchmarks/bench_scaling.py                 # ~10 min on 2 idle cores
    .venv/bin/python benchmarks/bench_scaling.py --quick         # ~2 min
    .venv/bin/python benchmarks/bench_scaling.py --model mid --sections length
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_peer import SAMPLE_RATE, machine_info, music_like, sdr_db  # noqa: E402

FIXTURE_DIR = ROOT.parent / "shared" / "fixtures" / "roformer" / "bs_roformer_4stem"
MID_CONFIG = HERE / "configs" / "bs_roformer_mid.yaml"


# ---------------------------------------------------------------- child


def child_separate(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the model once, separate each input ``.npy`` in turn; time each; optionally save stems."""
    import torch

    from stemflow.engine.separator import Separator
    from stemflow.models import load_model

    torch.set_num_threads(int(spec["threads"]))
    torch.set_num_interop_threads(1)
    start = time.perf_counter()
    model = load_model(spec["config"], spec["checkpoint"])
    separator = Separator(model, chunk_size=spec["chunk_size"], num_overlap=spec["num_overlap"],
                          batch_size=spec["batch_size"], precision=spec["precision"])
    result: dict[str, Any] = {"load_model_s": time.perf_counter() - start, "tracks": []}
    for index, path in enumerate(spec["inputs"]):
        audio = np.load(path)
        start = time.perf_counter()
        stems = separator.separate(audio, SAMPLE_RATE)
        seconds = time.perf_counter() - start
        result["tracks"].append({"track_s": audio.shape[1] / SAMPLE_RATE, "separate_s": seconds,
                                 "chunks": len(separator.plan(audio.shape[1]).chunks)})
        if spec.get("save_prefix"):
            np.save(f"{spec['save_prefix']}_{index}.npy", np.stack(list(stems.values())))
        del stems
    return result


def run_case(spec: dict[str, Any], work: Path) -> subprocess.Popen:
    """Start one child; ``finish`` collects it."""
    tag = spec["tag"]
    spec = {**spec, "result_path": str(work / f"result_{tag}.json")}
    (work / f"spec_{tag}.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(spec["threads"])}
    log = open(work / f"log_{tag}.txt", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "child", str(work / f"spec_{tag}.json")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.bench_log = log  # type: ignore[attr-defined]
    proc.bench_started = time.perf_counter()  # type: ignore[attr-defined]
    proc.bench_result = Path(spec["result_path"])  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen) -> dict[str, Any]:
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - proc.bench_started  # type: ignore[attr-defined]
    proc.bench_log.close()  # type: ignore[attr-defined]
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"child failed: {Path(proc.bench_log.name).read_text()[-3000:]}")  # type: ignore[attr-defined]
    result = json.loads(proc.bench_result.read_text())  # type: ignore[attr-defined]
    result.update(process_wall_s=wall, peak_rss_mib=usage.ru_maxrss / 1024)
    return result


def run_one(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    return finish(run_case(spec, work))


# ---------------------------------------------------------------- parent


def model_files(model: str, work: Path) -> tuple[str, str]:
    """Config and checkpoint paths of ``model`` (the mid-size checkpoint is made once, seeded)."""
    if model == "fixture":
        return str(FIXTURE_DIR / "config.yaml"), str(FIXTURE_DIR / "model.ckpt")
    ckpt = work / "mid.ckpt"
    if not ckpt.exists():
        import torch

        from stemflow.models import build_model
        from stemflow.models.config import load_config

        torch.manual_seed(0)
        torch.save(build_model(load_config(MID_CONFIG)).state_dict(), ckpt)
    return str(MID_CONFIG), str(ckpt)


def track(work: Path, seconds: float, seed: int) -> str:
    path = work / f"track_{seconds:g}s_{seed}.npy"
    if not path.exists():
        np.save(path, music_like(seconds, SAMPLE_RATE, seed=seed))
    return str(path)


def section_length(args: argparse.Namespace, base: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    rows = []
    for seconds in [0.0, *args.lengths]:
        inputs = [track(work, seconds, 1)] if seconds > 0 else []
        r = run_one({**base, "tag": f"length_{seconds:g}", "inputs": inputs, "batch_size": 1}, work)
        sep = r["tracks"][0]["separate_s"] if r["tracks"] else 0.0
        rows.append({"track_s": seconds, "batch_size": 1, "separate_s": sep, "peak_rss_mib": r["peak_rss_mib"],
                     "process_wall_s": r["process_wall_s"], "load_model_s": r["load_model_s"],
                     "chunks": r["tracks"][0]["chunks"] if r["tracks"] else 0,
                     "realtime_factor": seconds / sep if sep else None})
        print(f"  length {seconds:6.0f} s: separate {sep:7.2f} s, peak RSS {r['peak_rss_mib']:7.0f} MiB", flush=True)
    return rows


def section_batch(args: argparse.Namespace, base: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    rows = []
    seconds = args.batch_track_seconds
    for batch in args.batches:
        r = run_one({**base, "tag": f"batch_{batch}", "inputs": [track(work, seconds, 1)], "batch_size": batch}, work)
        sep = r["tracks"][0]["separate_s"]
        rows.append({"track_s": seconds, "batch_size": batch, "separate_s": sep, "peak_rss_mib": r["peak_rss_mib"],
                     "process_wall_s": r["process_wall_s"], "realtime_factor": seconds / sep})
        print(f"  batch {batch:2d} ({seconds:.0f} s track): separate {sep:7.2f} s, peak RSS {r['peak_rss_mib']:7.0f} MiB",
              flush=True)
    return rows


def section_fastpath(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Two tracks on all cores: 1 process x N threads vs N processes x 1 thread; bf16 autocast."""
    config, ckpt = model_files("mid", work)
    cores = os.cpu_count() or 2
    hop = 441
    chunk = int(round(args.fastpath_chunk_seconds * SAMPLE_RATE / hop)) * hop
    tracks = [track(work, args.fastpath_track_seconds, seed) for seed in range(1, cores + 1)]
    base = {"config": config, "checkpoint": ckpt, "chunk_size": chunk, "num_overlap": 2, "batch_size": 1}
    out: dict[str, Any] = {"model": "mid", "chunk_size": chunk, "tracks": len(tracks),
                           "track_s": args.fastpath_track_seconds}

    r = run_one({**base, "tag": "fast_threads", "inputs": tracks, "threads": cores, "precision": "float32",
                 "save_prefix": str(work / "fast_fp32")}, work)
    out["one_process_all_threads"] = {"threads": cores, "wall_s": r["process_wall_s"],
                                      "separate_s": sum(t["separate_s"] for t in r["tracks"]),
                                      "peak_rss_mib": r["peak_rss_mib"]}
    print(f"  1 process x {cores} threads, {len(tracks)} tracks in turn: {r['process_wall_s']:.1f} s wall "
          f"({out['one_process_all_threads']['separate_s']:.1f} s separating), RSS {r['peak_rss_mib']:.0f} MiB", flush=True)

    start = time.perf_counter()
    procs = [run_case({**base, "tag": f"fast_proc{i}", "inputs": [t], "threads": 1, "precision": "float32"}, work)
             for i, t in enumerate(tracks)]
    results = [finish(p) for p in procs]
    wall = time.perf_counter() - start
    out["processes_one_thread_each"] = {"processes": len(procs), "wall_s": wall,
                                        "separate_s_each": [x["tracks"][0]["separate_s"] for x in results],
                                        "peak_rss_mib_each": [x["peak_rss_mib"] for x in results]}
    print(f"  {len(procs)} processes x 1 thread, one track each: {wall:.1f} s wall, "
          f"RSS {sum(x['peak_rss_mib'] for x in results):.0f} MiB in all", flush=True)

    r = run_one({**base, "tag": "fast_bf16", "inputs": tracks, "threads": cores, "precision": "bfloat16",
                 "save_prefix": str(work / "fast_bf16")}, work)
    sdrs = [sdr_db(np.load(work / f"fast_fp32_{i}.npy"), np.load(work / f"fast_bf16_{i}.npy")) for i in range(len(tracks))]
    out["one_process_all_threads_bf16"] = {"threads": cores, "wall_s": r["process_wall_s"],
                                           "separate_s": sum(t["separate_s"] for t in r["tracks"]),
                                           "peak_rss_mib": r["peak_rss_mib"], "sdr_vs_float32_db": sdrs}
    print(f"  1 process x {cores} threads, bfloat16 autocast: {r['process_wall_s']:.1f} s wall "
          f"({out['one_process_all_threads_bf16']['separate_s']:.1f} s separating), SDR vs float32 "
          f"{min(sdrs):.1f} dB", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "child":
        spec = json.loads(Path(argv[1]).read_text())
        Path(spec["result_path"]).write_text(json.dumps(child_separate(spec)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["fixture", "mid"], default="fixture")
    parser.add_argument("--sections", nargs="+", default=["length", "batch", "fastpath"],
                        choices=["length", "batch", "fastpath"])
    parser.add_argument("--lengths", type=float, nargs="+", default=[10, 30, 60, 120])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batch-track-seconds", type=float, default=60.0)
    parser.add_argument("--chunk-seconds", type=float, default=None, help="default: the model's real chunk, 11.0 s")
    parser.add_argument("--num-overlap", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--fastpath-track-seconds", type=float, default=10.0)
    parser.add_argument("--fastpath-chunk-seconds", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="shorter tracks and fewer cases")
    parser.add_argument("--work", type=Path, default=HERE / "results" / "scaling_work.tmp")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scaling_cpu.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths = [10, 30]
        args.batches = [1, 4]
        args.batch_track_seconds = 30.0
        args.fastpath_track_seconds = 4.0
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)

    config, ckpt = model_files(args.model, args.work)
    chunk = int(round((args.chunk_seconds or 11.0) * SAMPLE_RATE / 441)) * 441
    base = {"config": config, "checkpoint": ckpt, "chunk_size": chunk, "num_overlap": args.num_overlap,
            "threads": args.threads, "precision": "float32"}
    result: dict[str, Any] = {"machine": machine_info(), "model": args.model, "chunk_size": chunk,
                              "num_overlap": args.num_overlap, "threads": args.threads, "quick": args.quick}
    print(json.dumps(result["machine"]), flush=True)
    if "length" in args.sections:
        print(f"[length] {args.model} model, chunk {chunk / SAMPLE_RATE:.2f} s, overlap {args.num_overlap}", flush=True)
        result["length"] = section_length(args, base, args.work)
    if "batch" in args.sections:
        print(f"[batch] {args.model} model", flush=True)
        result["batch"] = section_batch(args, base, args.work)
    if "fastpath" in args.sections:
        print("[fastpath] mid-size model", flush=True)
        result["fastpath"] = section_fastpath(args, args.work)
    result["machine"]["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
