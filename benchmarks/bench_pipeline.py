"""Pipeline efficiency: the catalogue flow (Prefect + Ray) against the same work in one plain process.

    .venv/bin/python benchmarks/bench_pipeline.py [--tracks 20] [--seconds 10] [--threads 2]

Both phases run in fresh subprocesses on the same generated catalogue
(``--tracks`` WAV files of ``--seconds`` each) with the same model, batch size
and torch threads:

* ``plain``: load the model once, then for each track ``separate_track`` (decode,
  separate, quality) and ``encode_stems`` -- the per-track work of the pipeline,
  without storage, commit markers, records or orchestration. Its time for the
  separation engine alone (``Separator.separate``) is reported too.
* ``flow``: ``separate_catalogue`` into a fresh output folder, timed around the
  call: Prefect's ephemeral API, a local Ray started on demand, one CPU actor
  with ``--threads`` torch threads, stems written and committed, Parquet written.

Both phases get the same thread budget: ``--threads`` torch threads and the
same ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS``. The
default is 1: on a small machine shared with other work, two OpenMP threads
per process oversubscribe the cores and run many times slower.

Efficiency = plain time / flow wall time (target >= 0.85). Peak memory is the
largest resident set of each phase's whole process tree (driver, Ray's
processes and workers, Prefect's server), sampled from ``/proc`` every 0.2 s.
Prints a table and writes ``benchmarks/results/pipeline.json``.

    .venv/bin/python benchmarks/bench_pipeline.py --compare-shard-sizes 2 16 --tracks 16 --seconds 5

runs only the flow phase, once per shard size, on the same catalogue with one
worker, and reports the wall times side by side: with one actor pool per run
(not per shard) small shards cost a Parquet part and a journal entry each, not
a pool (issue 13: shard size 2 within 1.3x of 16). Writes
``benchmarks/results/pipeline_shards.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE_MODEL = REPO_ROOT.parent / "shared" / "fixtures" / "roformer" / "mel_roformer_vocals"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "pipeline.json"
SAMPLE_RATE = 44100


def make_catalogue(folder: Path, tracks: int, seconds: float) -> None:
    """``tracks`` stereo 16-bit WAV files of ``seconds`` (tones plus noise, seeded)."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    for i in range(tracks):
        rng = np.random.default_rng(i)
        x = np.stack([0.3 * np.sin(2 * np.pi * (200 + 9 * i) * t), 0.2 * np.sin(2 * np.pi * (310 + 5 * i) * t)])
        x += 0.02 * rng.standard_normal(x.shape)
        sf.write(folder / f"track-{i:03d}.wav", x.T.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")


def _tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of ``root_pid`` and all its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def run_phase(args: argparse.Namespace, phase: str, catalogue: Path, work: Path) -> dict[str, Any]:
    """Run one phase in a subprocess (its own session), sampling the tree's memory; its JSON result."""
    result_path = work / f"{phase}.json"
    command = [sys.executable, __file__, "--phase", phase, "--catalogue", str(catalogue), "--work", str(work),
               "--threads", str(args.threads), "--batch-size", str(args.batch_size), "--model", args.model,
               "--checkpoint", args.checkpoint, "--shard-size", str(args.shard_size)]
    # the same thread budget for every library in both phases (Ray would set OMP_NUM_THREADS=1 in its workers)
    threads = str(args.threads)
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RAY_USAGE_STATS_ENABLED": "0",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
           "PREFECT_HOME": str(work / "prefect-home"), "PYTHONPATH": str(REPO_ROOT),
           "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(work / f"{phase}.log", "w"))
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_bytes(proc.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    if code != 0:
        tail = (work / f"{phase}.log").read_text()[-3000:]
        raise SystemExit(f"{phase} phase failed (exit {code}); the end of its log:\n{tail}")
    result = json.loads(result_path.read_text())
    result["process_s"] = time.perf_counter() - started
    result["peak_rss_mib"] = peak / 2**20
    return result


def phase_plain(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the pipeline does per track, minus storage and orchestration, in this process."""
    import torch

    from stemflow.audio.decode import load_audio
    from stemflow.engine.separator import Separator
    from stemflow.engine.track import encode_stems, separate_track
    from stemflow.hub.loading import load_custom

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    separator = Separator(load_custom(args.model, args.checkpoint).model, batch_size=args.batch_size)
    engine_s = 0.0
    paths = sorted(Path(args.catalogue).glob("*.wav"))
    for path in paths:
        result = separate_track(separator, path, name=path.name)
        encode_stems(result)
        engine_s += result.timings_s["separate"]
    audio_s = sum(load_audio(p, sample_rate=None).duration_s for p in paths)
    return {"wall_s": time.perf_counter() - started, "engine_s": engine_s, "tracks": len(paths), "audio_s": audio_s}


def phase_flow(args: argparse.Namespace) -> dict[str, Any]:
    """The catalogue flow, timed around the call (Prefect's API and Ray start included)."""
    started = time.perf_counter()
    from pipelines.separate_catalogue import separate_catalogue

    summary = separate_catalogue(
        args.catalogue, str(Path(args.work) / "out"), model=args.model, checkpoint=args.checkpoint,
        shard_size=args.shard_size, workers=1,
        stage={"local_num_cpus": os.cpu_count() or 1, "cpus_per_worker": 1, "torch_threads": args.threads,
               "tracks_per_call": 2},
        model_settings={"batch_size": args.batch_size},
    )
    return {"wall_s": time.perf_counter() - started, "flow_body_s": summary["wall_s"], "ok": summary["ok"],
            "errors": summary["errors"], "tracks": summary["planned"]}


def compare_shard_sizes(args: argparse.Namespace) -> int:
    """The flow on one catalogue once per shard size (fresh process and output each); the wall-time ratio."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="stemflow-bench-") as tmp:
        make_catalogue(Path(tmp) / "catalogue", args.tracks, args.seconds)
        for size in args.compare_shard_sizes:  # a failed phase prints its log before the folder goes
            work = Path(tmp) / f"shards-{size}"
            work.mkdir()
            flow = run_phase(argparse.Namespace(**{**vars(args), "shard_size": size}), "flow",
                             Path(tmp) / "catalogue", work)
            if flow["ok"] != args.tracks:
                raise SystemExit(f"shard size {size}: the flow separated {flow['ok']} of {args.tracks} tracks")
            runs.append({"shard_size": size, "wall_s": flow["wall_s"], "flow_body_s": flow["flow_body_s"],
                         "peak_rss_mib": flow["peak_rss_mib"]})
            print(f"shard size {size:>3}: {flow['wall_s']:.1f} s ({flow['flow_body_s']:.1f} s in the flow body)")
    largest = max(runs, key=lambda r: r["shard_size"])
    for run in runs:
        run["ratio_to_largest"] = run["wall_s"] / largest["wall_s"]
        run["body_ratio_to_largest"] = run["flow_body_s"] / largest["flow_body_s"]
    smallest = min(runs, key=lambda r: r["shard_size"])
    report = {"tracks": args.tracks, "seconds_per_track": args.seconds, "workers": 1, "runs": runs,
              "requirement": "smallest shard size <= 1.3 x the wall time of the largest",
              "holds": smallest["ratio_to_largest"] <= 1.3, "cpu_count": os.cpu_count(),
              "load_average_1m": os.getloadavg()[0], "python": platform.python_version()}
    path = RESULTS.with_name("pipeline_shards.json")
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"shard size {smallest['shard_size']} / {largest['shard_size']}: {smallest['ratio_to_largest']:.2f}x "
          f"wall ({'holds' if report['holds'] else 'EXCEEDS'} <= 1.3x); wrote {path.relative_to(REPO_ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Generate the catalogue, run both phases, print and save the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both phases")
    parser.add_argument("--batch-size", type=int, default=8, help="chunks per forward pass, both phases")
    parser.add_argument("--shard-size", type=int, default=20)
    parser.add_argument("--model", default=str(FIXTURE_MODEL / "config.yaml"))
    parser.add_argument("--checkpoint", default=str(FIXTURE_MODEL / "model.ckpt"))
    parser.add_argument("--compare-shard-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--phase", choices=["plain", "flow"], help=argparse.SUPPRESS)
    parser.add_argument("--catalogue", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        result = phase_plain(args) if args.phase == "plain" else phase_flow(args)
        (Path(args.work) / f"{args.phase}.json").write_text(json.dumps(result))
        return 0

    if args.compare_shard_sizes:
        return compare_shard_sizes(args)
    with tempfile.TemporaryDirectory(prefix="stemflow-bench-") as tmp:
        work = Path(tmp)
        make_catalogue(work / "catalogue", args.tracks, args.seconds)
        plain = run_phase(args, "plain", work / "catalogue", work)
        flow = run_phase(args, "flow", work / "catalogue", work)
    if flow["ok"] != args.tracks:
        raise SystemExit(f"the flow separated {flow['ok']} of {args.tracks} tracks")
    report = {
        "tracks": args.tracks,
        "seconds_per_track": args.seconds,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "model": Path(args.model).parent.name,
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "plain_s": plain["wall_s"],
        "engine_s": plain["engine_s"],
        "flow_s": flow["wall_s"],
        "flow_body_s": flow["flow_body_s"],
        "efficiency": plain["wall_s"] / flow["wall_s"],
        "efficiency_flow_body": plain["wall_s"] / flow["flow_body_s"],
        "plain_tracks_per_hour": 3600 * args.tracks / plain["wall_s"],
        "flow_tracks_per_hour": 3600 * args.tracks / flow["wall_s"],
        "plain_peak_rss_mib": plain["peak_rss_mib"],
        "flow_peak_rss_mib": flow["peak_rss_mib"],
        "python": platform.python_version(),
    }
    rows = [
        ("phase", "wall s", "tracks/h", "peak RSS MiB"),
        ("plain process", f"{plain['wall_s']:.1f}", f"{report['plain_tracks_per_hour']:.0f}",
         f"{plain['peak_rss_mib']:.0f}"),
        ("flow (Prefect+Ray)", f"{flow['wall_s']:.1f}", f"{report['flow_tracks_per_hour']:.0f}",
         f"{flow['peak_rss_mib']:.0f}"),
    ]
    for row in rows:
        print(f"{row[0]:<20} {row[1]:>8} {row[2]:>10} {row[3]:>13}")
    print(f"efficiency (plain / flow wall): {report['efficiency']:.3f}  "
          f"(flow body only: {report['efficiency_flow_body']:.3f}; engine alone {plain['engine_s']:.1f} s)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
