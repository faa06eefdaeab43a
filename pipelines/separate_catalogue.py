"""The nightly job: separate every track of a catalogue not yet committed for a model.

``separate_catalogue`` is a thin Prefect flow: resolve the model (and its
``model_id``), reconcile what a crashed run left committed but unrecorded,
plan (listing minus committed, in shards), run each shard as one Prefect task
with retries (the Ray stage separates it; the task writes the shard's Parquet
part once its tracks are committed), then write ``runs/<run_id>.json`` and a
summary artifact. Tasks exchange URLs and counts: each shard's track list is
written to ``runs/<run_id>/shards/<n>.json`` and the task gets that URL.

Re-running a finished catalogue plans zero shards and says so. Two runs racing
on the same track cannot both commit it (create-only markers), and only the
winner records Parquet rows for it.

:func:`run_catalogue` and :func:`catalogue_status` are the CLI's backend.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipelines import runtime
from stemflow.hub.cache import default_cache_dir
from stemflow.stage.settings import StageSettings
from stemflow.store.commit import utc_now_iso
from stemflow.store.runs import RunManifest, run_manifest_url, write_run_manifest

ProgressCallback = Callable[[int, int], None]
"""Called with (tracks done, tracks planned) after every shard."""


@dataclass(frozen=True)
class RunSummary:
    """What one run did: counts, throughput, where its outputs are.

    ``manifest_url`` is the run manifest's URL (``runs/<run_id>.json``; the field
    keeps its name because it is a key of the flows' result).
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

    @property
    def tracks_per_hour(self) -> float:
        """Tracks finished (ok or error) per hour of wall time."""
        done = self.ok + self.errors
        return 3600.0 * done / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (the flow's return value and the run manifest's counts)."""
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
    stage: Mapping[str, Any] | None = None
    model_settings: Mapping[str, Any] | None = None

    def flow_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of a flow (``separate_catalogue(url, out, **kwargs)``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class RunRequest:
    """One separation run as a flow asks for it: what to separate, where to, how, under which flow name.

    ``only_track_ids``: separate only these tracks of the catalogue (``None``: all of them).
    """

    catalogue_url: str
    output_url: str
    options: SeparationOptions
    flow_name: str
    only_track_ids: Iterable[str] | None = None


@dataclass(frozen=True)
class _Run:
    """A started run: its ids, its model, its stage settings and the run manifest written so far."""

    run_id: str
    run_date: str
    model_id: str
    spec: Mapping[str, Any]
    stage: Mapping[str, Any]
    run_manifest: RunManifest


@task(name="resolve-model", retries=1)
def resolve_model_task(model: str, checkpoint: str | None, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a registry name or a config path into a model spec and its model_id."""
    spec, model_id = runtime.resolve_model(model, checkpoint, settings)
    return {"spec": asdict(spec), "model_id": model_id}


@task(name="recover-unrecorded", retries=2, retry_delay_seconds=2)
def recover_task(output_url: str, model_id: str, run_id: str, run_date: str, part_index: int,
                 storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Record tracks committed by a crashed run but missing from the Parquet (from their markers)."""
    return runtime.recover_unrecorded(output_url, model_id, run_id, run_date, part_index, storage_options)


@task(name="plan-shards", retries=2, retry_delay_seconds=2)
def plan_task(catalogue_url: str, output_url: str, model_id: str, run_id: str, shard_size: int,
              storage_options: Mapping[str, Any] | None,
              only_track_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Plan: list the catalogue minus committed tracks, write one JSON per shard; their URLs + sizes."""
    return runtime.plan_shards(
        catalogue_url, output_url, model_id, run_id, shard_size, storage_options,
        only_track_ids=set(only_track_ids) if only_track_ids is not None else None,
    )


@task(name="separate-shard", retries=2, retry_delay_seconds=5)
def shard_task(shard_url: str, shard_index: int, spec: Mapping[str, Any], job: Mapping[str, Any],
               settings: Mapping[str, Any]) -> dict[str, Any]:
    """Separate one shard on Ray, then write its Parquet part; counts and the part's URL."""
    return runtime.separate_shard(shard_url, shard_index, spec, job, settings)


def _stage_settings(request: RunRequest) -> dict[str, Any]:
    """Stage settings as a plain dict; ``RAY_ADDRESS`` picks a cluster when none is given."""
    options = request.options
    settings: dict[str, Any] = {
        "workers": options.workers,
        "gpus_per_worker": options.gpus_per_worker,
        "ray_address": options.ray_address or os.environ.get("RAY_ADDRESS") or None,
    }
    settings.update(options.stage or {})
    StageSettings(**settings)  # validate early, in the flow, with a clear error
    return settings


def run_flow_body(request: RunRequest, progress_callback: ProgressCallback | None = None) -> RunSummary:
    """The body shared by ``separate_catalogue``, ``reprocess`` and the karaoke flow (called inside a flow)."""
    log = get_run_logger()
    started = time.perf_counter()
    run = _start_run(request)
    try:
        summary = _run_shards(request, run, progress_callback, started)
    except BaseException:
        failed = replace(run.run_manifest, status="failed", finished_at=utc_now_iso())
        write_run_manifest(request.output_url, failed, storage_options=request.options.storage_options)
        raise
    summary = _finish_run(request, run, summary)
    _publish_summary(summary)
    log.info("run %s finished: %d ok, %d errors, %d skipped, %.0f tracks/h", run.run_id,
             summary.ok, summary.errors, summary.skipped, summary.tracks_per_hour)
    return summary


def _start_run(request: RunRequest) -> _Run:
    """Name the run, validate its settings, resolve the model, write the ``running`` run manifest."""
    options = request.options
    started_at = utc_now_iso()
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    run_date = f"{datetime.now(UTC):%Y-%m-%d}"
    settings = _stage_settings(request)
    model_settings = {"cache_dir": str(default_cache_dir(os.environ)), **(options.model_settings or {})}
    resolved = resolve_model_task(options.model, options.checkpoint, model_settings)
    model_id = resolved["model_id"]
    run_manifest = RunManifest(
        run_id=run_id, status="running", started_at=started_at,
        inputs={"flow": request.flow_name, "catalogue_url": request.catalogue_url, "out_url": request.output_url,
                "model": options.model, "checkpoint": options.checkpoint, "model_id": model_id,
                "shard_size": options.shard_size},  # stored keys as ever: "out_url" is the output URL
        settings={**settings, **model_settings}, versions=runtime.versions(),
    )
    write_run_manifest(request.output_url, run_manifest, storage_options=options.storage_options)
    get_run_logger().info("run %s: model %s (model_id %s) -> %s", run_id, options.model, model_id,
                          request.output_url)
    return _Run(run_id=run_id, run_date=run_date, model_id=model_id, spec=resolved["spec"], stage=settings,
                run_manifest=run_manifest)


def _run_shards(request: RunRequest, run: _Run, progress_callback: ProgressCallback | None,
                started: float) -> RunSummary:
    """Recover, plan, run every shard (one task each); the counts."""
    log = get_run_logger()
    output_url, storage_options = request.output_url, request.options.storage_options
    recovered = recover_task(output_url, run.model_id, run.run_id, run.run_date, 0, storage_options)
    ids = sorted(request.only_track_ids) if request.only_track_ids is not None else None
    shards = plan_task(request.catalogue_url, output_url, run.model_id, run.run_id, request.options.shard_size,
                       storage_options, ids)
    planned = sum(s["tracks"] for s in shards)
    if shards:
        log.info("planned %d tracks in %d shards", planned, len(shards))
    else:
        log.info("nothing to do: every track of %s is already committed for %s", request.catalogue_url,
                 run.model_id)
    job = {"output_url": output_url, "model_id": run.model_id, "run_id": run.run_id, "run_date": run.run_date,
           "storage_options": dict(storage_options or {})}
    results: list[dict[str, Any]] = []
    done = 0
    for shard in shards:
        results.append(shard_task(shard["url"], shard["index"], run.spec, job, run.stage))
        done += shard["tracks"]
        if progress_callback is not None:
            progress_callback(done, planned)
    return RunSummary(
        run_id=run.run_id, model_id=run.model_id, output_url=output_url, planned=planned,
        ok=sum(r["ok"] for r in results), errors=sum(r["errors"] for r in results),
        skipped=sum(r["skipped"] for r in results), recovered=recovered["tracks"],
        shards=len(shards), wall_s=time.perf_counter() - started, status="running",
        failures=tuple(f for r in results for f in r["failures"]),
        parquet_urls=tuple(u for u in [recovered["part_url"], *(r["part_url"] for r in results)] if u),
        manifest_url=run_manifest_url(output_url, run.run_id),
    )


def _finish_run(request: RunRequest, run: _Run, summary: RunSummary) -> RunSummary:
    """The summary with its final status, also written to the run manifest with the counts."""
    counts = {k: int(getattr(summary, k)) for k in ("planned", "ok", "errors", "skipped", "recovered", "shards")}
    summary = replace(summary, status="partial" if summary.errors else "succeeded")
    finished = replace(run.run_manifest, status=summary.status, finished_at=utc_now_iso(), counts=counts)
    write_run_manifest(request.output_url, finished, storage_options=request.options.storage_options)
    return summary


def _publish_summary(summary: RunSummary) -> None:
    """A markdown summary and a table of failures in the Prefect UI."""
    lines = [
        f"# stemflow run `{summary.run_id}`",
        "",
        f"- model_id: `{summary.model_id}`",
        f"- output: `{summary.output_url}`",
        f"- planned {summary.planned} tracks in {summary.shards} shards"
        + (" (nothing to do: everything already committed)" if summary.planned == 0 else ""),
        f"- ok {summary.ok}, errors {summary.errors}, skipped (committed by another run) "
        f"{summary.skipped}, recovered from markers {summary.recovered}",
        f"- wall time {summary.wall_s:.1f} s, {summary.tracks_per_hour:.0f} tracks/hour",
    ]
    create_markdown_artifact("\n".join(lines), key="stemflow-run-summary",
                             description=f"stemflow run {summary.run_id}")
    if summary.failures:
        create_table_artifact([dict(f) for f in summary.failures], key="stemflow-run-failures",
                              description=f"failed tracks of run {summary.run_id}")


@flow(name="separate-catalogue", log_prints=False)
def separate_catalogue(
    catalogue_url: str,
    output_url: str,
    model: str = "spleeter-2stems",
    checkpoint: str | None = None,
    shard_size: int = 50,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    ray_address: str | None = None,
    storage_options: dict[str, Any] | None = None,
    stage: dict[str, Any] | None = None,
    model_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Separate every track of ``catalogue_url`` not yet committed for the model into ``output_url``.

    ``model`` is a registry name or a community-format config YAML path (then
    ``checkpoint`` is its weights). ``stage`` overrides :class:`StageSettings`
    fields (e.g. ``{"tracks_per_call": 4}``); ``model_settings`` overrides
    separation settings that change the output (and so the model_id).
    """
    options = SeparationOptions(
        model=model, checkpoint=checkpoint, shard_size=shard_size, workers=workers,
        gpus_per_worker=gpus_per_worker, ray_address=ray_address, storage_options=storage_options, stage=stage,
        model_settings=model_settings,
    )
    return run_flow_body(RunRequest(catalogue_url, output_url, options, "separate-catalogue")).as_dict()


def run_catalogue(
    catalogue_url: str,
    output_url: str,
    *,
    model: str = "spleeter-2stems",
    checkpoint: str | None = None,
    shard_size: int = 50,
    workers: int = 1,
    gpus: int = 0,
    storage_options: Mapping[str, Any] | None = None,
    progress_callback: ProgressCallback | None = None,
    stage: Mapping[str, Any] | None = None,
    cache_dir: str | None = None,
) -> RunSummary:
    """CLI backend: run the catalogue flow (ephemeral Prefect unless PREFECT_API_URL is set).

    ``gpus`` > 0 runs ``gpus`` GPU actors (one GPU each) and ignores ``workers``.
    ``cache_dir``: the weights cache (default ``$STEMFLOW_CACHE`` or ``~/.cache/stemflow``).
    """
    options = SeparationOptions(
        model=model, checkpoint=checkpoint, shard_size=shard_size, workers=gpus if gpus > 0 else workers,
        gpus_per_worker=1.0 if gpus > 0 else 0.0, ray_address=None, storage_options=storage_options, stage=stage,
        model_settings={"cache_dir": cache_dir} if cache_dir else None,
    )

    @flow(name="separate-catalogue", log_prints=False)
    def _cli_flow() -> RunSummary:
        return run_flow_body(RunRequest(catalogue_url, output_url, options, "separate-catalogue"),
                             progress_callback=progress_callback)

    return _cli_flow()


def catalogue_status(output_url: str, storage_options: Mapping[str, Any] | None = None
                     ) -> list[dict[str, Any]]:
    """CLI backend: per model_id, committed tracks (markers) and Parquet rows/errors/tracks."""
    return runtime.catalogue_status(output_url, storage_options)
