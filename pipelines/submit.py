"""Submit a catalogue run to a Ray cluster through the Ray Jobs API, and follow it from Prefect.

Long runs do not go through Ray Client (meant for interactive work: a dropped
client connection ends the run). ``submit_catalogue`` (the Kubernetes nightly
deployment, ``infra/prefect/prefect.yaml``) sends ``stemflow run …`` to the
cluster's job server (``jobs_address``, else ``RAY_ADDRESS``, e.g.
``http://stemflow-head-svc.stemflow.svc.cluster.local:8265``); the run's driver
lives on the cluster, next to the GCS, and survives the Prefect pod. The flow
then polls the job and the run manifest the run rewrites (``runs/<run_id>.json``:
done / planned, tracks per hour, ETA, errors by type) and shows them as a
Prefect progress artifact and log lines until the job ends.

The submission id is derived from the Prefect flow run, so a retried flow run
follows the job it already submitted instead of starting a second one.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Mapping
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run

from stemflow.errors import StemflowError
from stemflow.store.runs import iter_run_ids, read_run_manifest


def run_command(catalogue_url: str, output_url: str, *, model: str, gpus: int, shard_size: int,
                cpus_per_worker: float | None = None, allow_sources: list[str] | None = None,
                checkpoint: str | None = None) -> str:
    """The ``stemflow run`` command line the job runs (every value shell-quoted).

    ``checkpoint``: the weights when ``model`` is a config YAML (a path or URL the cluster can read).
    """
    words = ["stemflow", "run", catalogue_url, output_url, "--model", model, "--gpus", str(gpus),
             "--shard-size", str(shard_size)]
    if checkpoint is not None:
        words += ["--checkpoint", checkpoint]
    if cpus_per_worker is not None:
        words += ["--cpus-per-worker", str(cpus_per_worker)]
    for prefix in allow_sources or ():
        words += ["--allow-source", prefix]
    return " ".join(shlex.quote(w) for w in words)


def latest_progress(output_url: str, storage_options: Mapping[str, Any] | None, after: str) -> dict[str, Any]:
    """The progress of the newest run manifest started at or after ``after`` (ISO time); ``{}`` if none yet."""
    run_ids = [r for r in iter_run_ids(output_url, storage_options=storage_options) if r >= after]
    if not run_ids:
        return {}
    manifest = read_run_manifest(output_url, run_ids[-1], storage_options=storage_options)
    return {"run_id": manifest.run_id, "status": manifest.status, **dict(manifest.progress)}


@flow(name="submit-catalogue", log_prints=False)
def submit_catalogue(
    catalogue_url: str,
    output_url: str,
    model: str = "mel-roformer-kj-vocals",
    checkpoint: str | None = None,
    gpus: int = 32,
    shard_size: int = 200,
    cpus_per_worker: float | None = None,
    allow_sources: list[str] | None = None,
    jobs_address: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
    poll_s: float = 30.0,
) -> dict[str, Any]:
    """Run the catalogue job on the Ray cluster (Ray Jobs API) and follow it until it ends.

    Raises:
        StemflowError: the job failed or was stopped (the message ends with its log's tail).
    """
    from datetime import UTC, datetime

    from stemflow.stage.ray_adapter import submit_job, wait_for_job

    log = get_run_logger()
    address = jobs_address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise StemflowError("submit_catalogue needs jobs_address or RAY_ADDRESS (http://<head>:8265)")
    entrypoint = run_command(catalogue_url, output_url, model=model, gpus=gpus, shard_size=shard_size,
                             cpus_per_worker=cpus_per_worker, allow_sources=allow_sources, checkpoint=checkpoint)
    submission_id = f"stemflow-{flow_run.get_id() or datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    since = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    try:
        job_id = submit_job(address, entrypoint, runtime_env=runtime_env, submission_id=submission_id,
                            metadata={"stemflow": "catalogue-run", "output_url": output_url})
        log.info("submitted %s as Ray job %s to %s", entrypoint, job_id, address)
    except Exception as e:  # noqa: BLE001 - a retried flow run: the job already exists, follow it
        if "already exists" not in str(e):
            raise
        job_id = submission_id
        log.info("following Ray job %s, submitted by an earlier attempt", job_id)
    artifact: dict[str, Any] = {}

    def report(status: str) -> None:
        with contextlib.suppress(Exception):  # progress display must never stop the flow
            progress = latest_progress(output_url, storage_options, since)
            if not progress:
                return
            percent = 100.0 * progress.get("done", 0) / max(1, progress.get("planned", 0) or 1)
            if "id" not in artifact:
                artifact["id"] = create_progress_artifact(percent, key="stemflow-submitted-run-progress",
                                                          description=f"Ray job {job_id}")
            else:
                update_progress_artifact(artifact["id"], percent)
            log.info("job %s %s: %s/%s tracks, %s tracks/h, ETA %s s", job_id, status, progress.get("done"),
                     progress.get("planned"), progress.get("tracks_per_hour"), progress.get("eta_s"))

    status, logs = wait_for_job(address, job_id, poll_s=poll_s, on_poll=report)
    if status != "SUCCEEDED":
        raise StemflowError(f"Ray job {job_id} ended {status}; last log lines:\n{logs[-2000:]}")
    return {"job_id": job_id, "status": status, "progress": latest_progress(output_url, storage_options, since)}
