"""What the flows' tasks do, without Prefect: model resolution, planning, shards, records.

Each function here is the body of one Prefect task in
:mod:`pipelines.separate_catalogue` (tests call them directly). They exchange
URLs, ids and counts; the only payloads are the small per-shard track lists,
written to ``<out>/runs/<run_id>/shards/<n>.json``.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from stemflow.catalogue.listing import list_audio
from stemflow.catalogue.planning import plan
from stemflow.errors import StemflowError
from stemflow.hub.model_id import output_settings
from stemflow.hub.spec import ModelSpec, load_spec
from stemflow.stage.finishing import rows_from_marker
from stemflow.stage.ray_adapter import run_shard
from stemflow.stage.settings import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, ShardJob, StageSettings
from stemflow.store.commit import committed_tracks, read_marker
from stemflow.store.objects import read_bytes, write_atomic
from stemflow.store.paths import filesystem, join_url
from stemflow.store.records import read_records, write_part

logger = logging.getLogger(__name__)

FAILURES_KEPT = 200
"""At most this many failed tracks are listed per shard (counts are always exact)."""


def resolve_model(model: str, checkpoint: str | None, settings: Mapping[str, Any]) -> tuple[ModelSpec, str]:
    """A :class:`ModelSpec` and its ``model_id`` for a registry name or a config YAML path.

    ``settings`` may hold ``chunk_size``, ``num_overlap``, ``precision`` (they
    change the output, so they enter the ``model_id``, as does any other key)
    and ``batch_size``, ``device``, ``cache_dir``, ``offline`` (they do not).
    The model is loaded once here to hash its weights and read its config.
    """
    run_only = {"batch_size", "device", "cache_dir", "offline"}
    spec = ModelSpec(
        name=None if _is_config(model) else model,
        config_path=model if _is_config(model) else None,
        checkpoint_path=checkpoint,
        cache_dir=settings.get("cache_dir"),
        offline=bool(settings.get("offline", False)),
        device=str(settings.get("device", "cpu")),
        batch_size=settings.get("batch_size"),
        precision=str(settings.get("precision", "auto")),
        chunk_size=settings.get("chunk_size"),
        num_overlap=settings.get("num_overlap"),
    )
    loaded = load_spec(spec)
    extra = {k: v for k, v in settings.items()
             if k not in run_only and k not in ("chunk_size", "num_overlap", "precision")}
    ident = loaded.model_id(output_settings(
        chunk_size=spec.chunk_size or loaded.config.audio.chunk_size,
        num_overlap=spec.num_overlap or loaded.config.inference.num_overlap,
        precision=spec.precision, device=spec.device, **extra))
    return spec, ident


def _is_config(model: str) -> bool:
    return model.endswith((".yaml", ".yml")) or Path(model).is_file()


# --- planning ---------------------------------------------------------------------------


def shard_url(output_url: str, run_id: str, index: int) -> str:
    """``<out>/runs/<run_id>/shards/<index>.json``: one shard's track list."""
    return join_url(output_url, "runs", run_id, "shards", f"{index:05d}.json")


def plan_shards(
    catalogue_url: str,
    output_url: str,
    model_id: str,
    run_id: str,
    shard_size: int,
    storage_options: Mapping[str, Any] | None,
    *,
    only_track_ids: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Write this run's shards (catalogue minus committed) as JSON; ``{index, url, tracks}`` each.

    The listing streams (:func:`stemflow.catalogue.listing.list_audio`); the output
    location is excluded when it lies inside the catalogue.
    """
    listing = list_audio(catalogue_url, storage_options=storage_options, exclude=[output_url])
    if only_track_ids is not None:
        listing = (t for t in listing if t.track_id in only_track_ids)
    shards = []
    for shard in plan(listing, output_url, model_id, shard_size=shard_size, storage_options=storage_options):
        tracks = [{"url": t.url, "track_id": t.track_id, "size": t.size} for t in shard.tracks]
        url = shard_url(output_url, run_id, shard.index)
        write_atomic(url, json.dumps(tracks).encode(), storage_options)
        shards.append({"index": shard.index, "url": url, "tracks": len(tracks)})
    return shards


# --- one shard -----------------------------------------------------------------------------


def separate_shard(
    shard_url_: str,
    shard_index: int,
    spec: Mapping[str, Any],
    job: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Run one shard on the Ray stage, then write its Parquet part (committed tracks + errors).

    The part's index is ``shard_index + 1`` (0 is the recovery part), so a
    retried shard replaces its part rather than adding one.
    """
    shard_job = ShardJob(**job)
    tracks = json.loads(read_bytes(shard_url_, shard_job.storage_options))
    result = run_shard(tracks, ModelSpec(**spec), shard_job, StageSettings(**settings))
    rows = result.rows
    part_url = None
    if rows:
        part_url = write_part(shard_job.output_url, shard_job.model_id, shard_job.run_date,
                              shard_job.run_id, shard_index + 1, rows,
                              storage_options=shard_job.storage_options)
    failures = [{"track_id": o.track_id, "source_url": o.source_url, "error": o.error or ""}
                for o in result.outcomes if o.status == STATUS_ERROR][:FAILURES_KEPT]
    return {"ok": result.count(STATUS_OK), "errors": result.count(STATUS_ERROR),
            "skipped": result.count(STATUS_SKIPPED), "wall_s": result.wall_s, "part_url": part_url,
            "failures": failures}


# --- recovery of committed-but-unrecorded tracks ------------------------------------------------


def recover_unrecorded(
    output_url: str, model_id: str, run_id: str, run_date: str, part_index: int,
    storage_options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Write Parquet rows, from the markers, for committed tracks without ``ok`` rows.

    A run killed between a track's commit and its shard's Parquet part leaves
    such tracks; their markers carry the record columns, so no audio is read.
    """
    recorded = recorded_track_ids(output_url, model_id, storage_options)
    missing = [t for t in committed_tracks(output_url, model_id, storage_options=storage_options)
               if t not in recorded]
    job = ShardJob(output_url, model_id, run_id, run_date, dict(storage_options or {}))
    rows: list[dict[str, Any]] = []
    for track_id in missing:
        marker = read_marker(output_url, model_id, track_id, storage_options=storage_options)
        if marker is not None:
            rows.extend(rows_from_marker(marker, job))
    part_url = None
    if rows:
        part_url = write_part(output_url, model_id, run_date, run_id, part_index, rows,
                              storage_options=storage_options)
        logger.info("recorded %d committed tracks a previous run left unrecorded", len(missing))
    return {"tracks": len({r["track_id"] for r in rows}), "part_url": part_url}


def recorded_track_ids(output_url: str, model_id: str, storage_options: Mapping[str, Any] | None) -> set[str]:
    """Track ids with ``ok`` rows in the Parquet records of ``model_id``."""
    table = read_records(output_url, model_id=model_id, storage_options=storage_options)
    rows = table.select(["track_id", "status"]).to_pylist()
    return {r["track_id"] for r in rows if r["status"] == STATUS_OK}


# --- versions and status -----------------------------------------------------------------


def versions() -> dict[str, str]:
    """Versions of the software that shaped a run's output."""
    found = {"python": platform.python_version()}
    for package in ("stemflow", "torch", "numpy", "ray", "prefect", "pyarrow", "fsspec"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def catalogue_status(output_url: str, storage_options: Mapping[str, Any] | None = None
                     ) -> list[dict[str, Any]]:
    """Per model_id: committed tracks (markers); rows, ok tracks and error rows (Parquet)."""
    fs, root = filesystem(join_url(output_url, "stems"), storage_options)
    try:
        model_ids = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)) \
            if fs.exists(root) else []
    except OSError as e:
        raise StemflowError(f"cannot list {output_url!r}: {e}") from e
    table = read_records(output_url, storage_options=storage_options)
    records = table.select(["model_id", "track_id", "status"]).to_pylist()
    model_ids = sorted(set(model_ids) | {r["model_id"] for r in records})
    status = []
    for mid in model_ids:
        mine = [r for r in records if r["model_id"] == mid]
        status.append({
            "model_id": mid,
            "committed_tracks": sum(1 for _ in committed_tracks(output_url, mid, storage_options=storage_options)),
            "rows": len(mine),
            "ok_tracks": len({r["track_id"] for r in mine if r["status"] == STATUS_OK}),
            "error_rows": sum(1 for r in mine if r["status"] == STATUS_ERROR),
        })
    return status
