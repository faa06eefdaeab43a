"""The Ray adapter: separate one shard of tracks on a pool of model-holding actors.

This is the only module that imports :mod:`ray`. The flows in ``pipelines/``
plan and shard a catalogue, then call :func:`run_shard` once per shard; the
evaluation flow and tests may call it directly. The work on each track is
:class:`stemflow.stage.worker.TrackWorker`'s; this module only schedules it.

Data path (one Ray Data pipeline per shard)::

    from_items(small track records: url, track_id)
      -> map_batches(_SeparateActor, ActorPoolStrategy(min, max), num_gpus=1 | CPUs)
           per actor: model loaded once in __init__ (a TrackWorker)
           per call:  fetch + decode (I/O threads, prefetched)
                      ||  separate (caller thread; the call's tracks share batches: pack_tracks)
                      ||  encode + upload stems + create-only commit marker (I/O threads)
      -> small outcome records back to the driver (status, error, Parquet rows as JSON)

Only URLs and small records travel through the object store; decoded audio and
stems live inside one actor for the time one track takes. Memory per actor is
bounded by ``tracks_per_call`` decoded sources plus ``max_pending_uploads``
tracks of stems being encoded; ``max_tasks_in_flight_per_actor=1`` keeps Ray Data
from queueing more work than that on an actor. Each track's failure is an
``error`` outcome; a batch is never dropped for one bad track.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import ray
import ray.data

from stemflow.errors import StemflowError
from stemflow.hub.spec import ModelSpec
from stemflow.stage.settings import ShardJob, ShardResult, StageSettings, TrackOutcome
from stemflow.stage.worker import TrackWorker

logger = logging.getLogger(__name__)


def connect_ray(settings: StageSettings) -> None:
    """Join the configured Ray cluster, or start a local one on demand (idempotent)."""
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"runtime_env": dict(settings.runtime_env)} if settings.runtime_env else {}
    if settings.ray_address:
        if not settings.ray_address.startswith("ray://"):  # Ray Client takes fewer options
            kwargs["configure_logging"] = False
        ray.init(address=settings.ray_address, **kwargs)
        logger.info("joined Ray cluster at %s", settings.ray_address)
    else:
        num_cpus = settings.local_num_cpus or os.cpu_count() or 1
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, configure_logging=False,
                 **kwargs)
        logger.info("started a local Ray with %d CPUs", num_cpus)


def _actor_resources(settings: StageSettings) -> tuple[float, float, int]:
    """(num_cpus, num_gpus, torch threads) for one actor."""
    if settings.gpus_per_worker > 0:
        cpus = settings.cpus_per_worker if settings.cpus_per_worker is not None else 1.0
        return cpus, settings.gpus_per_worker, settings.torch_threads or max(1, int(cpus))
    total = ray.cluster_resources().get("CPU", 1.0)
    cpus = settings.cpus_per_worker
    if cpus is None:
        cpus = max(1.0, float(int(total // settings.workers)))
    return cpus, 0.0, settings.torch_threads or max(1, int(cpus))


class _SeparateActor:
    """A Ray Data callable class: loads the model once, then separates batches of tracks."""

    def __init__(
        self,
        model_spec: ModelSpec,
        job: ShardJob,
        settings: StageSettings,
        torch_threads: int,
    ) -> None:
        if settings.gpus_per_worker > 0 and model_spec.device == "cpu":
            model_spec = replace(model_spec, device="cuda")  # Ray sets CUDA_VISIBLE_DEVICES per actor
        self._worker = TrackWorker(
            model_spec, job=job, stem_format=settings.stem_format, bit_depth=settings.bit_depth,
            torch_threads=torch_threads, max_duration_s=settings.max_duration_s,
            max_source_bytes=settings.max_source_bytes, retry=settings.retry_policy(),
            max_decoded_bytes=settings.max_decoded_bytes,
        )
        self._io = ThreadPoolExecutor(settings.io_threads, thread_name_prefix="stemflow-io")
        self._max_pending = settings.max_pending_uploads
        self._pack = settings.pack_tracks

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
        """Separate every track of ``batch`` (columns url, track_id); one outcome row each."""
        urls = [str(u) for u in batch["url"]]
        track_ids = [str(t) for t in batch["track_id"]]
        fetches = [self._io.submit(self._worker.fetch, url) for url in urls]
        pending: list[Future[TrackOutcome]] = []
        outcomes: list[TrackOutcome] = []
        if self._pack:
            for separated in self._worker.separate_packed(list(zip(track_ids, urls, fetches))):
                pending.append(self._io.submit(self._worker.finish, separated))
        else:
            for url, track_id, fetched in zip(urls, track_ids, fetches):
                while len(pending) >= self._max_pending:
                    outcomes.append(pending.pop(0).result())
                separated = self._worker.separate(track_id, url, fetched)
                pending.append(self._io.submit(self._worker.finish, separated))
        outcomes.extend(f.result() for f in pending)
        return _outcome_columns(outcomes)


def _outcome_columns(outcomes: Sequence[TrackOutcome]) -> dict[str, list[Any]]:
    """Outcomes as Ray Data columns (rows as JSON text); :func:`_outcome_from_row` reads one back."""
    return {
        "track_id": [o.track_id for o in outcomes],
        "source_url": [o.source_url for o in outcomes],
        "status": [o.status for o in outcomes],
        "error": [o.error or "" for o in outcomes],
        "rows_json": [json.dumps(list(o.rows), default=_json_default) for o in outcomes],
        "seconds": [o.seconds for o in outcomes],
    }


def _json_default(value: Any) -> Any:
    """NumPy scalars in the rows as plain Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_shard(
    tracks: Sequence[Mapping[str, Any]],
    model_spec: ModelSpec,
    job: ShardJob,
    settings: StageSettings = StageSettings(),
) -> ShardResult:
    """Separate ``tracks`` (records with ``url`` and ``track_id``) on a Ray actor pool.

    Returns one :class:`TrackOutcome` per input track, in no particular order.
    Raises :class:`StemflowError` only if the Ray pipeline itself fails (actors
    cannot start, the cluster goes away); a bad track is an ``error`` outcome.
    """
    started = time.perf_counter()
    if not tracks:
        return ShardResult(outcomes=(), wall_s=0.0, workers=0)
    connect_ray(settings)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = settings.show_progress
    ctx.print_on_execution_start = settings.show_progress
    workers = min(settings.workers, len(tracks))
    items = [{"url": str(t["url"]), "track_id": str(t["track_id"])} for t in tracks]
    dataset = _actor_pool_pipeline(items, model_spec, job, settings, workers)
    try:
        outcomes = tuple(_outcome_from_row(row) for row in dataset.iter_rows())
    except Exception as e:  # noqa: BLE001 - Ray wraps everything; surface one type
        raise StemflowError(f"the Ray stage failed on a shard of {len(tracks)} tracks: {e}") from e
    _check_complete(items, outcomes)
    wall_s = time.perf_counter() - started
    logger.info("shard of %d tracks done in %.1f s on %d workers", len(items), wall_s, workers)
    return ShardResult(outcomes=outcomes, wall_s=wall_s, workers=workers)


def _actor_pool_pipeline(items: Sequence[Mapping[str, str]], model_spec: ModelSpec, job: ShardJob,
                         settings: StageSettings, workers: int) -> ray.data.Dataset:
    """The (lazy) Ray Data pipeline of one shard: ``items`` through a pool of up to ``workers`` actors."""
    num_cpus, num_gpus, threads = _actor_resources(settings)
    min_workers = min(settings.min_workers or workers, workers)
    return ray.data.from_items(list(items)).map_batches(
        _SeparateActor,
        batch_size=settings.tracks_per_call,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            min_size=min_workers, max_size=workers, max_tasks_in_flight_per_actor=1
        ),
        fn_constructor_kwargs={
            "model_spec": model_spec,
            "job": job,
            "settings": settings,
            "torch_threads": threads,
        },
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )


def _outcome_from_row(row: Mapping[str, Any]) -> TrackOutcome:
    """One row of :func:`_outcome_columns` back as a :class:`TrackOutcome`."""
    return TrackOutcome(
        track_id=str(row["track_id"]),
        source_url=str(row["source_url"]),
        status=str(row["status"]),
        error=str(row["error"]) or None,
        rows=tuple(json.loads(str(row["rows_json"]))),
        seconds=float(row["seconds"]),
    )


def _check_complete(items: Sequence[Mapping[str, str]], outcomes: Sequence[TrackOutcome]) -> None:
    """Every input track must come back exactly once; anything else is a stage bug."""
    sent = sorted(i["track_id"] for i in items)
    got = sorted(o.track_id for o in outcomes)
    if sent != got:
        raise StemflowError(f"the Ray stage returned {len(got)} outcomes for {len(sent)} tracks")

