"""The body every separation flow shares: start the run, execute it, report progress, finish, summarise.

``separate_catalogue``, ``reprocess`` and the karaoke flow call
:func:`run_flow_body` inside their flow. It resolves the model (a Prefect
task), writes ``runs/<run_id>.json`` (``running``), executes the run
(:func:`stemflow.stage.catalogue_run.execute`: recovery, the committed index,
streaming planning, one actor pool), rewrites the run manifest's ``progress``
(done / planned, tracks per hour, ETA, errors by type, heartbeat) and a Prefect
progress artifact while it goes on, then writes the final status
(``succeeded``, ``partial`` with error rows, ``cancelled`` after SIGTERM/SIGINT,
``failed``) with the counts and a summary (errors by type, quarantine,
recovery) and publishes the summary artifacts.

Stopping: in the main thread, SIGTERM and SIGINT set the run's stop event
(the scheduler stops feeding, lets running batches finish for
``stop_grace_s``; nothing is half-committed); a second signal interrupts at
once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from pipelines import runtime
from pipelines.parameters import model_overrides, stage_overrides
from stemflow.hub.cache import default_cache_dir
from stemflow.hub.spec import ModelSpec
from stemflow.stage.catalogue_run import CatalogueRun, RunResult, execute, only_ids
from stemflow.stage.progress import RunProgress
from stemflow.stage.settings import ShardJob, StageSettings
from stemflow.store.commit import utc_now_iso
from stemflow.store.runs import RunManifest, run_manifest_url, write_run_manifest

ProgressCallback = Callable[[int, int], None]
"""Called with (tracks done, tracks planned so far) as the run goes on."""


@dataclass(frozen=True)
class RunSummary:
    """What one run did: counts, throughput, failures by type, where its outputs are.

    ``manifest_url`` is the run manifest's URL (``runs/<run_id>.json``).
    ``failures`` lists the first 200 failed tracks (all of them are error rows in
    the Parquet: ``status = 'error'``); ``parquet_urls`` the first 100 parts.
    """

    run_id: str
    model_id: str
    output_url: str
    planned: int
    ok: int
    errors: int
    skipped: int
    recovered: int
    shards: int
    wall_s: float
    status: str
    failures: tuple[Mapping[str, str], ...] = ()
    parquet_urls: tuple[str, ...] = ()
    manifest_url: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    catalogue: int = 0
    already_committed: int = 0
    errors_by_type: Mapping[str, int] = field(default_factory=dict)
    quarantine: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tracks_per_hour(self) -> float:
        """Tracks finished (ok or error) per hour of wall time."""
        done = self.ok + self.errors
        return 3600.0 * done / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (the flow's return value)."""
        data = asdict(self)
        data["tracks_per_hour"] = self.tracks_per_hour
        data["failures"] = [dict(f) for f in self.failures]
        return data


@dataclass(frozen=True)
class SeparationOptions:
    """The separation parameters every catalogue flow takes, under the flows' own parameter names."""

    model: str = "spleeter-2stems"
    checkpoint: str | None = None
    shard_size: int = 50
    workers: int = 1
    gpus_per_worker: float = 0.0
    ray_address: str | None = None
    storage_options: Mapping[str, Any] | None = None
    stage: Any = None
    model_settings: Any = None
    allow_sources: tuple[str, ...] = ()

    def flow_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of a flow (``separate_catalogue(url, out, **kwargs)``)."""
        kwargs = {k: getattr(self, k) for k in ("model", "checkpoint", "shard_size", "workers", "gpus_per_worker",
                                                 "ray_address", "storage_options", "stage", "model_settings")}
        return {**kwargs, "allow_sources": list(self.allow_sources)}


@dataclass(frozen=True)
class RunRequest:
    """One separation run as a flow asks for it: what to separate, where to, how, under which flow name.

    ``only_track_ids``: separate only these tracks of the catalogue (``None``: all).
    ``stop``: set it to stop the run gracefully (the CLI's signal handlers do).
    """

    catalogue_url: str
    output_url: str
    options: SeparationOptions
    flow_name: str
    only_track_ids: Iterable[str] | None = None
    stop: threading.Event | None = None


@dataclass(frozen=True)
class _Run:
    """A started run: its ids, its model, its settings and the run manifest written so far."""

    run_id: str
    run_date: str
    model_id: str
    spec: Mapping[str, Any]
    stage: StageSettings
    run_manifest: RunManifest


@task(name="resolve-model", retries=1)
def resolve_model_task(model: str, checkpoint: str | None, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a registry name or a config path into a model spec and its model_id."""
    spec, model_id = runtime.resolve_model(model, checkpoint, settings)
    return {"spec": asdict(spec), "model_id": model_id}


def stage_settings(options: SeparationOptions) -> StageSettings:
    """The stage settings of a run: the flow's ``workers`` etc., then ``stage``; ``RAY_ADDRESS`` picks a cluster.

    Raises:
        ConfigError: an unknown ``stage`` key or a bad value (named), before anything starts.
    """
    settings: dict[str, Any] = {
        "workers": options.workers,
        "gpus_per_worker": options.gpus_per_worker,
        "ray_address": options.ray_address or os.environ.get("RAY_ADDRESS") or None,
    }
    settings.update(stage_overrides(options.stage))
    return StageSettings(**settings)


def run_flow_body(request: RunRequest, progress_callback: ProgressCallback | None = None) -> RunSummary:
    """The body shared by ``separate_catalogue``, ``reprocess`` and the karaoke flow (called inside a flow)."""
    log = get_run_logger()
    started = time.perf_counter()
    run = _start_run(request)
    stop = request.stop or threading.Event()
    reporter = _ProgressReporter(request, run, progress_callback)
    job = ShardJob(request.output_url, run.model_id, run.run_id, run.run_date,
                   dict(request.options.storage_options or {}))
    catalogue_run = CatalogueRun(request.catalogue_url, job, request.options.shard_size,
                                 allow_sources=tuple(request.options.allow_sources),
                                 only_track_ids=only_ids(None if request.only_track_ids is None
                                                         else list(request.only_track_ids)))
    try:
        with stop_on_signals(stop):
            result = execute(catalogue_run, ModelSpec(**run.spec), run.stage, stop=stop,
                             on_progress=reporter.report)
    except BaseException as e:
        failed = replace(run.run_manifest, status="failed", finished_at=utc_now_iso(),
                         summary={"error": f"{type(e).__name__}: {e}"[:2000]})
        write_run_manifest(request.output_url, failed, storage_options=request.options.storage_options)
        raise
    summary = _finish_run(request, run, result, time.perf_counter() - started)
    _publish_summary(summary, result)
    log.info("run %s %s: %d ok, %d errors %s, %d skipped, %.0f tracks/h", run.run_id, summary.status, summary.ok,
             summary.errors, dict(summary.errors_by_type), summary.skipped, summary.tracks_per_hour)
    return summary


def _start_run(request: RunRequest) -> _Run:
    """Name the run, validate its settings, resolve the model, write the ``running`` run manifest."""
    options = request.options
    started_at = utc_now_iso()
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    run_date = f"{datetime.now(UTC):%Y-%m-%d}"
    settings = stage_settings(options)
    model_settings = {"cache_dir": str(default_cache_dir(os.environ)), **model_overrides(options.model_settings)}
    resolved = resolve_model_task(options.model, options.checkpoint, model_settings)
    model_id = resolved["model_id"]
    stage_record = asdict(settings)  # runtime_env included: the manifest masks secret values (store.redact)
    run_manifest = RunManifest(
        run_id=run_id, status="running", started_at=started_at,
        inputs={"flow": request.flow_name, "catalogue_url": request.catalogue_url, "out_url": request.output_url,
                "model": options.model, "checkpoint": options.checkpoint, "model_id": model_id,
                "shard_size": options.shard_size},  # stored keys as ever: "out_url" is the output URL
        settings={**stage_record, **model_settings}, versions=runtime.versions(),
        progress={**_heartbeat(settings), "updated_at": started_at, "planned": 0, "done": 0,
                  "planning_done": False},
    )
    write_run_manifest(request.output_url, run_manifest, storage_options=options.storage_options)
    get_run_logger().info("run %s: model %s (model_id %s) -> %s", run_id, options.model, model_id,
                          request.output_url)
    return _Run(run_id=run_id, run_date=run_date, model_id=model_id, spec=resolved["spec"], stage=settings,
                run_manifest=run_manifest)


def _heartbeat(settings: StageSettings) -> dict[str, Any]:
    """Who is running and how often it writes its progress (recovery tells dead runs from live ones by it)."""
    return {"heartbeat_s": settings.progress_interval_s, "host": socket.gethostname(), "pid": os.getpid()}


class _ProgressReporter:
    """Writes the run manifest's ``progress`` (the heartbeat) and the Prefect progress artifact."""

    def __init__(self, request: RunRequest, run: _Run, callback: ProgressCallback | None) -> None:
        self.request, self.run, self.callback = request, run, callback
        self.artifact_id: Any = None

    def report(self, progress: RunProgress) -> None:
        data = {**progress.as_dict(), **_heartbeat(self.run.stage), "updated_at": utc_now_iso()}
        manifest = replace(self.run.run_manifest, progress=data)
        write_run_manifest(self.request.output_url, manifest, storage_options=self.request.options.storage_options)
        if self.callback is not None:
            self.callback(progress.done, progress.planned)
        percent = 100.0 * progress.done / progress.planned if progress.planned else 0.0
        with contextlib.suppress(Exception):  # the UI's progress must never stop a run
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(percent, key=f"stemflow-progress-{self.run.run_id[-8:]}",
                                                            description=f"stemflow run {self.run.run_id}")
            else:
                update_progress_artifact(self.artifact_id, percent)
        eta = "planning" if data["eta_s"] is None else f"ETA {data['eta_s'] / 60:.0f} min"
        get_run_logger().info("progress: %d/%d tracks (%d errors), %.0f tracks/h, %s", progress.done,
                              progress.planned, progress.errors, progress.tracks_per_hour, eta)


def _status_of(result: RunResult) -> str:
    if result.stopped:
        return "cancelled"
    return "partial" if result.progress.errors or result.sink.unrecorded_shards else "succeeded"


def _finish_run(request: RunRequest, run: _Run, result: RunResult, wall_s: float) -> RunSummary:
    """The run's summary, also written to the run manifest (status, counts, summary)."""
    progress, plan = result.progress, result.plan
    summary = RunSummary(
        run_id=run.run_id, model_id=run.model_id, output_url=request.output_url, planned=plan.planned,
        ok=progress.ok, errors=progress.errors, skipped=progress.skipped,
        recovered=result.recovery.recorded_tracks,
        shards=-(-plan.planned // request.options.shard_size), wall_s=wall_s, status=_status_of(result),
        failures=tuple(result.sink.failures), parquet_urls=tuple(result.sink.parts),
        manifest_url=run_manifest_url(request.output_url, run.run_id),
        extra={"plan": plan.as_dict(), "recovery": result.recovery.as_dict(), "parts_written":
               result.sink.parts_written, "unrecorded_shards": result.sink.unrecorded_shards,
               "incomplete_shards": result.incomplete_shards, "notes": list(result.notes)},
        catalogue=plan.catalogue, already_committed=plan.committed,
        errors_by_type=dict(progress.errors_by_type), quarantine=result.quarantine.as_dict(),
    )
    counts = {k: int(getattr(summary, k)) for k in ("planned", "ok", "errors", "skipped", "recovered", "shards")}
    counts.update(catalogue=plan.catalogue, already_committed=plan.committed, rejected=plan.rejected,
                  quarantined=result.quarantine.total)
    final = replace(run.run_manifest, status=summary.status, finished_at=utc_now_iso(), counts=counts,
                    progress={**progress.as_dict(), "updated_at": utc_now_iso()},
                    summary={"errors_by_type": dict(summary.errors_by_type), "quarantine": dict(summary.quarantine),
                             **summary.extra})
    write_run_manifest(request.output_url, final, storage_options=request.options.storage_options)
    return summary


def _publish_summary(summary: RunSummary, result: RunResult) -> None:
    """A markdown summary in the Prefect UI (the full failure list is in the Parquet)."""
    by_type = ", ".join(f"{k} {v}" for k, v in sorted(summary.errors_by_type.items())) or "none"
    lines = [
        f"# stemflow run `{summary.run_id}`: {summary.status}",
        "",
        f"- model_id: `{summary.model_id}`",
        f"- output: `{summary.output_url}`",
        f"- catalogue {summary.catalogue} entries, {summary.already_committed} already committed, planned "
        f"{summary.planned} in {summary.shards} shards"
        + (" (nothing to do: everything already committed)" if summary.planned == 0 else ""),
        f"- ok {summary.ok}, errors {summary.errors} ({by_type}), skipped (committed by another run) "
        f"{summary.skipped}, recovered from crashed runs {summary.recovered}",
        f"- quarantined (unreadable in the output) {result.quarantine.total}: {result.quarantine.counts}",
        f"- wall time {summary.wall_s:.1f} s, {summary.tracks_per_hour:.0f} tracks/hour",
        "",
        "Every failed track is an error row: `select track_id, source_url, error_type, error from "
        f"read_parquet('{summary.output_url}/metadata/model_id={summary.model_id}/*/run_id={summary.run_id}/*.parquet')"
        " where status = 'error'`",
    ]
    create_markdown_artifact("\n".join(lines), key="stemflow-run-summary",
                             description=f"stemflow run {summary.run_id}")


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """In the main thread, SIGTERM/SIGINT set ``stop`` (a second one interrupts at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt(f"signal {signum} again: stopping now")
        stop.set()
        get_run_logger().warning("signal %d: stopping gracefully (running tracks finish, nothing half-committed)",
                                 signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
