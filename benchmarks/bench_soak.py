"""Soak: a 200-track catalogue on moto S3 through a proxy that fails ~5% of requests.

    .venv/bin/python benchmarks/bench_soak.py [--tracks 200] [--fault-rate 0.05] [--workers 2]

Generates ``--tracks`` short stereo WAVs (0.5-2 s, seeded), uploads them to a
moto S3 server, then runs the ``separate_catalogue`` flow (Prefect's ephemeral
API, a local Ray, the tiny fixture Mel-Band-RoFormer) with s3fs pointed at
``tests/fault_proxy.py``. The proxy fails a random ``--fault-rate`` of *all*
requests (listing, reads, stem and marker writes, Parquet, manifests): 503
SlowDown, 500, connection resets before and after the request was applied,
responses cut mid-body and stalls past the 2 s read timeout. If a run fails
outright (a task out of retries) the flow is run again, as the nightly schedule
would, and resumes from the markers.

Then, with the faults off, it checks every track: committed once (one marker
whose stems all match their sha256) with exactly one set of ``ok`` rows, or
recorded as an error with no marker; duplicates (a track with ok rows from two
runs, or two rows for one stem) must be zero. Prints the figures and writes
``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE_MODEL = REPO_ROOT.parent / "shared" / "fixtures" / "roformer" / "mel_roformer_vocals"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "soak.json"
SAMPLE_RATE = 44100
FAULT_MIX = {"slowdown": 0.3, "error500": 0.15, "reset": 0.2, "reset_after": 0.15, "truncate": 0.1, "stall": 0.1}
"""Share of each fault kind among injected faults (``truncate`` applies to GETs only)."""


class _Counter(logging.Handler):
    """Counts stemflow's retry warnings seen in this process (the driver: planning, Parquet, manifests)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def worker_retries() -> int:
    """stemflow retry warnings written by the Ray workers of this machine's latest session."""
    import ray

    if not ray.is_initialized():
        return 0
    node = getattr(ray._private.worker, "_global_node", None) if ray.is_initialized() else None
    logs = Path(node.get_logs_dir_path()) if node is not None else (
        Path(tempfile.gettempdir()) / "ray" / "session_latest" / "logs")  # this driver's session, if it can tell
    count = 0
    for path in logs.glob("worker-*"):
        count += sum(1 for line in path.read_text(errors="replace").splitlines()
                     if "attempt" in line and "retrying in" in line)
    return count


def make_catalogue(tracks: int, seed: int) -> dict[str, bytes]:
    """``tracks`` WAVs of 0.5-2 s: ``{key: bytes}``."""
    import io

    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    files = {}
    for i in range(tracks):
        seconds = float(rng.uniform(0.5, 2.0))
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        x = np.stack([0.3 * np.sin(2 * np.pi * (180 + 3 * i) * t), 0.2 * np.sin(2 * np.pi * (300 + 2 * i) * t)])
        x += 0.02 * rng.standard_normal(x.shape)
        buffer = io.BytesIO()
        sf.write(buffer, x.T.astype(np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")
        files[f"part-{i % 4}/track-{i:03d}.wav"] = buffer.getvalue()
    return files


def add_faults(proxy: Any, rate: float) -> None:
    """Rules that together fail ~``rate`` of the requests, split by :data:`FAULT_MIX`."""
    from fault_proxy import Fault

    for kind, share in FAULT_MIX.items():
        proxy.add(Fault(kind, method="GET" if kind == "truncate" else None, probability=rate * share,
                        stall_s=3.0))


def check(out: str, model_id: str, planned_ids: set[str], options: dict[str, Any]) -> dict[str, Any]:
    """Every planned track committed once with one set of ok rows, or an error without a marker."""
    from stemflow.store.commit import committed_tracks, verify_track
    from stemflow.store.records import read_records

    rows = read_records(out, model_id=model_id, storage_options=options).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    per_stem = Counter((r["track_id"], r["stem"]) for r in ok)
    runs_per_track = {t: {r["run_id"] for r in ok if r["track_id"] == t} for t in {r["track_id"] for r in ok}}
    committed = set(committed_tracks(out, model_id, storage_options=options))
    error_ids = {r["track_id"] for r in rows if r["status"] == "error"}
    unverified = sorted(t for t in committed if not verify_track(out, model_id, t, storage_options=options))
    return {
        "committed": len(committed),
        "errors": len(error_ids - committed),
        "duplicate_rows": sum(n - 1 for n in per_stem.values() if n > 1),
        "tracks_recorded_by_two_runs": sum(1 for runs in runs_per_track.values() if len(runs) > 1),
        "committed_without_ok_rows": len(committed - set(runs_per_track)),
        "ok_rows_without_marker": len(set(runs_per_track) - committed),
        "missing": len(planned_ids - committed - error_ids),
        "markers_not_matching_stems": len(unverified),
    }


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=200)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-runs", type=int, default=3)
    parser.add_argument("--output", default=str(RESULTS))
    return parser.parse_args(argv)


def _prepare_environment(work: Path) -> None:
    """Prefect, Ray and AWS settings of a local soak; ``tests/`` importable for the fault proxy."""
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect-home"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        os.environ.setdefault(name, "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)


def _run_until_clean(args: argparse.Namespace, cat: str, out: str, faulty: dict[str, Any]
                     ) -> tuple[list[dict[str, Any]], str | None]:
    """Run the nightly flow until a run ends without errors (at most ``--max-runs``); the runs, the model_id."""
    from pipelines.separate_catalogue import separate_catalogue

    runs: list[dict[str, Any]] = []
    model_id = None
    for _ in range(args.max_runs):
        try:
            summary = separate_catalogue(
                cat, out, model=str(FIXTURE_MODEL / "config.yaml"), checkpoint=str(FIXTURE_MODEL / "model.ckpt"),
                shard_size=args.shard_size, workers=args.workers, storage_options=faulty,
                stage={"local_num_cpus": max(2, args.workers), "tracks_per_call": 2, "torch_threads": 1},
                model_settings={"batch_size": 8})
        except Exception as e:  # noqa: BLE001 - a failed run is re-run, as the schedule would
            runs.append({"status": "failed", "error": f"{type(e).__name__}: {e}"[:300]})
            continue
        model_id = summary["model_id"]
        runs.append({k: summary[k] for k in ("run_id", "status", "planned", "ok", "errors", "skipped",
                                             "recovered", "wall_s")})
        if summary["errors"] == 0:
            break
    return runs, model_id


def _soak(args: argparse.Namespace) -> dict[str, Any]:
    """Catalogue on moto S3, faults through the proxy, runs until clean; the figures."""
    import s3fs
    from fault_proxy import FaultProxy
    from moto.server import ThreadedMotoServer

    from stemflow.catalogue.listing import list_audio

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    direct = {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"},
              "config_kwargs": {"request_checksum_calculation": "when_required"}}
    proxy = FaultProxy(f"http://{host}:{port}", seed=args.seed).start()
    faulty = {"client_kwargs": {"endpoint_url": proxy.url},
              "config_kwargs": {"request_checksum_calculation": "when_required", "read_timeout": 2,
                                "connect_timeout": 2, "retries": {"total_max_attempts": 3, "mode": "standard"}}}
    retries = _Counter()
    logging.getLogger("stemflow.store.retry").addHandler(retries)
    try:
        fs = s3fs.S3FileSystem(**direct)
        fs.mkdir("soak")
        for key, data in make_catalogue(args.tracks, args.seed).items():
            fs.pipe_file(f"soak/catalogue/{key}", data)
        cat, out = "s3://soak/catalogue", "s3://soak/out"
        planned_ids = {t.track_id for t in list_audio(cat, storage_options=direct)}
        add_faults(proxy, args.fault_rate)
        started = time.perf_counter()
        runs, model_id = _run_until_clean(args, cat, out, faulty)
        wall_s = time.perf_counter() - started
        in_workers = worker_retries()
        injected = Counter(r.fault for r in proxy.injected())
        requests = len(proxy.log)
        proxy.clear()
        if model_id is None:
            raise SystemExit(f"every run failed: {runs}")
        figures = check(out, model_id, planned_ids, direct)
    finally:
        proxy.stop()
        server.stop()
    return {
        "tracks": args.tracks,
        **figures,
        "duplicates": figures["duplicate_rows"] + figures["tracks_recorded_by_two_runs"],
        "requests_through_proxy": requests,
        "faults_injected": sum(injected.values()),
        "faults_by_kind": dict(injected),
        "fault_rate_requested": args.fault_rate,
        "fault_rate_observed": round(sum(injected.values()) / max(1, requests), 4),
        "stemflow_retries_in_driver": retries.count,
        "stemflow_retries_in_workers": in_workers,
        "retries_note": "every injected fault was absorbed by a retry at some layer (botocore, s3fs or "
                        "stemflow); only stemflow's own retries are logged and counted separately",
        "runs": runs,
        "wall_s": round(wall_s, 1),
        "workers": args.workers,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_1min": round(os.getloadavg()[0], 2)},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the soak once; print the figures and write the JSON."""
    args = _arguments(argv)
    _prepare_environment(Path(tempfile.mkdtemp(prefix="stemflow-soak-")))
    result = _soak(args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(f"tracks {args.tracks}: committed {result['committed']}, errors {result['errors']}, "
          f"duplicates {result['duplicates']}, missing {result['missing']}, "
          f"markers not matching stems {result['markers_not_matching_stems']}")
    print(f"faults injected {result['faults_injected']} of {result['requests_through_proxy']} requests "
          f"({100 * result['fault_rate_observed']:.1f}%): {result['faults_by_kind']}")
    print(f"stemflow-layer retries: {result['stemflow_retries_in_driver']} in the driver, "
          f"{result['stemflow_retries_in_workers']} in the Ray workers (the rest were absorbed by "
          f"botocore/s3fs); runs {len(result['runs'])}; wall {result['wall_s']:.0f} s")
    print(f"wrote {args.output}")
    ok = result["missing"] == 0 and result["duplicates"] == 0 and result["markers_not_matching_stems"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
