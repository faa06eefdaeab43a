"""The nightly job: separate every track of a catalogue not yet committed for a model.

``separate_catalogue`` is a thin Prefect flow over :func:`pipelines.run_body.run_flow_body`:
resolve the model (and its ``model_id``), record what crashed runs left
unrecorded (their journals only), plan against the committed index while the
catalogue streams (a folder/prefix listed folder by folder, or a CSV/JSONL/
Parquet manifest read in row batches), separate on one long-lived actor pool,
and write ``runs/<run_id>.json`` (progress during the run, the summary at the
end) and the Prefect artifacts.

Re-running a finished catalogue plans nothing, starts no actor and says so;
its requests are the listing (or manifest) reads, the index read and the run
manifest writes. Two runs racing on the same track cannot both commit it
(create-only markers), and only the winner records Parquet rows for it.

:func:`run_catalogue`, :func:`dry_run` and :func:`catalogue_status` are the CLI's backend.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from prefect import flow

from pipelines import runtime
from pipelines.parameters import ModelSettings, StageParameters, model_overrides
from pipelines.run_body import ProgressCallback, RunRequest, RunSummary, SeparationOptions, run_flow_body
from stemflow.catalogue.planning import PlanCounts
from stemflow.hub.cache import default_cache_dir
from stemflow.stage.catalogue_run import CatalogueRun, plan_counts
from stemflow.stage.settings import ShardJob


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
    stage: StageParameters | None = None,
    model_settings: ModelSettings | None = None,
    allow_sources: list[str] | None = None,
) -> dict[str, Any]:
    """Separate every track of ``catalogue_url`` not yet committed for the model into ``output_url``.

    ``catalogue_url``: a folder/prefix, or a ``.csv``/``.jsonl``/``.parquet`` manifest
    with a ``url`` column (optional ``track_id``, ``size``, ``etag``; other columns
    go to the records' ``source_extra``). ``model`` is a registry name or a
    community-format config YAML path (then ``checkpoint`` is its weights).
    ``stage`` overrides stage settings (e.g. ``{"tracks_per_call": 4}``),
    ``model_settings`` the separation settings (those that change the output
    change the model_id). ``allow_sources``: URL prefixes outside the catalogue's
    location that manifest rows may name (``["*"]``: any).
    """
    options = SeparationOptions(
        model=model, checkpoint=checkpoint, shard_size=shard_size, workers=workers,
        gpus_per_worker=gpus_per_worker, ray_address=ray_address, storage_options=storage_options, stage=stage,
        model_settings=model_settings, allow_sources=tuple(allow_sources or ()),
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
    allow_sources: tuple[str, ...] = (),
    stop: threading.Event | None = None,
) -> RunSummary:
    """CLI backend: run the catalogue flow (ephemeral Prefect unless PREFECT_API_URL is set).

    ``gpus`` > 0 runs ``gpus`` GPU actors (one GPU each) and ignores ``workers``.
    ``cache_dir``: the weights cache (default ``$STEMFLOW_CACHE`` or ``~/.cache/stemflow``).
    ``stop``: set it to stop the run gracefully (the CLI sets it on SIGTERM/SIGINT).
    """
    options = SeparationOptions(
        model=model, checkpoint=checkpoint, shard_size=shard_size, workers=gpus if gpus > 0 else workers,
        gpus_per_worker=1.0 if gpus > 0 else 0.0, ray_address=None, storage_options=storage_options, stage=stage,
        model_settings={"cache_dir": cache_dir} if cache_dir else None, allow_sources=tuple(allow_sources),
    )

    @flow(name="separate-catalogue", log_prints=False)
    def _cli_flow() -> RunSummary:
        return run_flow_body(RunRequest(catalogue_url, output_url, options, "separate-catalogue", stop=stop),
                             progress_callback=progress_callback)

    return _cli_flow()


def dry_run(catalogue_url: str, output_url: str, *, model: str = "spleeter-2stems", checkpoint: str | None = None,
            storage_options: Mapping[str, Any] | None = None, cache_dir: str | None = None,
            model_settings: Mapping[str, Any] | None = None, allow_sources: tuple[str, ...] = ()
            ) -> tuple[str, PlanCounts]:
    """CLI backend of ``run --dry-run``: the model_id and the plan's counts; nothing is separated or written."""
    settings = {"cache_dir": cache_dir or str(default_cache_dir(os.environ)), **model_overrides(model_settings)}
    _, model_id = runtime.resolve_model(model, checkpoint, settings)
    job = ShardJob(output_url, model_id, f"dry-run-{uuid.uuid4().hex[:8]}", "1970-01-01",
                   dict(storage_options or {}))
    run = CatalogueRun(catalogue_url, job, shard_size=1000, allow_sources=tuple(allow_sources))
    return model_id, plan_counts(run)


def catalogue_status(output_url: str, storage_options: Mapping[str, Any] | None = None
                     ) -> list[dict[str, Any]]:
    """CLI backend: per model_id, committed tracks (markers) and Parquet rows/errors/tracks."""
    return runtime.catalogue_status(output_url, storage_options)
