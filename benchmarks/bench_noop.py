"""Requests of a no-op nightly run over a committed catalogue on S3 (moto), counted on the wire.

    .venv/bin/python benchmarks/bench_noop.py [--tracks 200 2000]

For each size: a moto S3 server behind the counting proxy of
``tests/fault_proxy.py`` (no faults), a catalogue of ``--tracks`` objects in
folders of 100, and an output in which every one of them is committed for the
tiny fixture model exactly as a run leaves it (stems and markers through
:func:`stemflow.store.commit.commit_track`, Parquet ``ok`` rows through
:func:`stemflow.store.records.write_part`, one part per 100 tracks, no index:
an output written before the committed index existed). Then the
``separate_catalogue`` flow runs twice, with the proxy counting every request:

1. the first no-op run builds the committed index from the Parquet (once per
   model and output);
2. the second is the steady nightly state.

Both must stay at or below 0.25 requests per catalogue track (issue 13; the
previous design made one marker GET per track). Prints a table and writes
``benchmarks/results/noop_requests.json``.
"""

from __future__ import annotations

import argparse
import json
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
RESULTS = REPO_ROOT / "benchmarks" / "results" / "noop_requests.json"
BUDGET_PER_TRACK = 0.25
FOLDER_TRACKS = 100


def fabricate_committed_catalogue(catalogue_url: str, output_url: str, tracks: int, storage_options: Any,
                                  model_id: str) -> int:
    """Upload ``tracks`` objects and commit each for ``model_id`` as a run would; the number committed."""
    from stemflow.catalogue.listing import list_audio
    from stemflow.stage.finishing import partition_columns
    from stemflow.stage.settings import ShardJob
    from stemflow.store.commit import commit_track, write_stem
    from stemflow.store.paths import filesystem
    from stemflow.store.records import stem_rows, write_part

    fs, root = filesystem(catalogue_url, storage_options)
    for i in range(tracks):
        fs.pipe_file(f"{root}/f{i // FOLDER_TRACKS:04d}/t{i:06d}.wav", f"not read by a no-op run {i}".encode())
    job = ShardJob(output_url, model_id, "fabricated", "2026-12-01")
    rows: list[dict[str, Any]] = []
    part = 0
    listed = list(list_audio(catalogue_url, storage_options=storage_options))
    for track in listed:
        stem = write_stem(output_url, model_id, track.track_id, "vocals", "flac", track.track_id.encode(),
                          storage_options=storage_options)
        record = {"track": {"track_id": track.track_id, "source_url": track.url},
                  "stems": {"vocals": {"stem_url": "u", "stem_bytes": stem.size, "stem_sha256": stem.sha256}}}
        commit_track(output_url, model_id, track.track_id, [stem], source_url=track.url, run_id="fabricated",
                     extra={"record": record}, storage_options=storage_options)
        rows += stem_rows({**record["track"], **partition_columns(job)}, record["stems"])
        if len(rows) >= FOLDER_TRACKS:
            part += 1
            write_part(output_url, model_id, "2026-12-01", "fabricated", part, rows, storage_options=storage_options)
            rows = []
    if rows:
        write_part(output_url, model_id, "2026-12-01", "fabricated", part + 1, rows, storage_options=storage_options)
    return len(listed)


def model_id_of_fixture(cache_dir: str) -> str:
    """The ``model_id`` the flow computes for the tiny fixture model with the benchmark's settings."""
    from pipelines.runtime import resolve_model

    return resolve_model(str(FIXTURE_MODEL / "config.yaml"), str(FIXTURE_MODEL / "model.ckpt"),
                         {"cache_dir": cache_dir, "batch_size": 8})[1]


def noop_run(catalogue_url: str, output_url: str, storage_options: Any, log: list[Any]) -> dict[str, Any]:
    """Run the flow once and count the requests it made (``log``: the proxy's request log)."""
    from pipelines.separate_catalogue import separate_catalogue

    before = len(log)
    started = time.perf_counter()
    summary = separate_catalogue(catalogue_url, output_url, model=str(FIXTURE_MODEL / "config.yaml"),
                                 checkpoint=str(FIXTURE_MODEL / "model.ckpt"), storage_options=storage_options,
                                 model_settings={"batch_size": 8}, stage={"local_num_cpus": 2})
    requests = log[before:]
    return {"summary": {k: summary[k] for k in ("planned", "ok", "errors", "catalogue", "already_committed")},
            "requests": len(requests), "wall_s": time.perf_counter() - started,
            "by_method": dict(Counter(r.method for r in requests))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, nargs="+", default=[200, 2000])
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="stemflow-prefect-"))
    sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]
    import s3fs
    from fault_proxy import FaultProxy
    from moto.server import ThreadedMotoServer
    from prefect.testing.utilities import prefect_test_harness

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    proxy = FaultProxy(f"http://{host}:{port}").start()
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": proxy.url},
               "config_kwargs": {"request_checksum_calculation": "when_required"}}
    results = []
    try:
        with prefect_test_harness(server_startup_timeout=120):
            model_id = model_id_of_fixture(tempfile.mkdtemp())
            for tracks in args.tracks:
                bucket = f"noop-{tracks}"
                s3fs.S3FileSystem(**options).mkdir(bucket)
                cat, out = f"s3://{bucket}/catalogue", f"s3://{bucket}/out"
                committed = fabricate_committed_catalogue(cat, out, tracks, options, model_id)
                first = noop_run(cat, out, options, proxy.log)
                steady = noop_run(cat, out, options, proxy.log)
                entry = {"tracks": committed, "first_noop_run": first, "steady_noop_run": steady,
                         "first_per_track": first["requests"] / committed,
                         "steady_per_track": steady["requests"] / committed}
                results.append(entry)
                print(f"{committed:>6} tracks: first no-op run {first['requests']} requests "
                      f"({entry['first_per_track']:.3f}/track, {first['wall_s']:.1f} s), steady "
                      f"{steady['requests']} ({entry['steady_per_track']:.3f}/track, {steady['wall_s']:.1f} s); "
                      f"planned {steady['summary']['planned']}")
    finally:
        proxy.stop()
        server.stop()
    ok = all(r["first_per_track"] <= BUDGET_PER_TRACK and r["steady_per_track"] <= BUDGET_PER_TRACK
             for r in results)
    RESULTS.write_text(json.dumps({"benchmark": "noop_requests", "budget_per_track": BUDGET_PER_TRACK,
                                   "holds": ok, "results": results, "machine": platform.platform(),
                                   "python": platform.python_version()}, indent=1))
    print(f"budget {BUDGET_PER_TRACK}/track: {'holds' if ok else 'EXCEEDED'}; {RESULTS}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
