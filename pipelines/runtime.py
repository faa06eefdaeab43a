"""What the flows need besides the run itself, without Prefect: model resolution, versions, status.

The run (recover, plan, separate, record) is :mod:`stemflow.stage.catalogue_run`;
the flow bodies are :mod:`pipelines.run_body`. ``status`` reads an output as it
is: markers (listed), Parquet records (streamed part by part, four columns),
the committed index and the runs; what it cannot read is quarantined and
reported, never fatal.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from stemflow.errors import StemflowError
from stemflow.hub.model_id import output_settings
from stemflow.hub.spec import ModelSpec, load_spec
from stemflow.stage.settings import STATUS_ERROR, STATUS_OK
from stemflow.store.commit import committed_tracks
from stemflow.store.index import CommittedIndex, list_index, load_index, track_keys
from stemflow.store.journal import runs_with_journals
from stemflow.store.paths import StorageOptions, check_component, filesystem, join_url
from stemflow.store.quarantine import Quarantine
from stemflow.store.record_scan import iter_record_tables
from stemflow.store.runs import iter_run_ids, read_run_manifest

logger = logging.getLogger(__name__)

RUN_ONLY_SETTINGS = frozenset({"batch_size", "device", "cache_dir", "offline"})
"""Model settings that do not change the output (so not the ``model_id``)."""


def resolve_model(model: str, checkpoint: str | None, settings: Mapping[str, Any]) -> tuple[ModelSpec, str]:
    """A :class:`ModelSpec` and its ``model_id`` for a registry name or a config YAML path.

    ``settings`` (:class:`pipelines.parameters.ModelSettings` keys): ``chunk_size``,
    ``num_overlap``, ``precision``, ``sum_to_mixture`` change the output, so they enter
    the ``model_id`` (``sum_to_mixture`` only when true, so ids made before the option
    existed stay the same); ``batch_size``, ``device``, ``cache_dir``, ``offline`` do
    not. The model is loaded once here to hash its weights and read its config; the
    returned spec is pinned to those weights (``ModelSpec.weights_sha256``), so a worker
    whose copy differs (a re-uploaded checkpoint, a tampered cache) refuses to load it.
    """
    spec = ModelSpec(
        name=None if _is_config(model) else model,
        config_path=model if _is_config(model) else None,
        checkpoint_path=checkpoint,
        cache_dir=settings.get("cache_dir"),
        offline=bool(settings.get("offline", False)),
        device=str(settings.get("device") or "cpu"),
        batch_size=settings.get("batch_size"),
        precision=str(settings.get("precision") or "auto"),
        chunk_size=settings.get("chunk_size"),
        num_overlap=settings.get("num_overlap"),
        sum_to_mixture=bool(settings.get("sum_to_mixture", False)),
    )
    loaded = load_spec(spec)
    extra = {k: v for k, v in settings.items()
             if k not in RUN_ONLY_SETTINGS and k not in ("chunk_size", "num_overlap", "precision", "sum_to_mixture")
             and v is not None}
    if spec.sum_to_mixture:
        extra["sum_to_mixture"] = True
    ident = loaded.model_id(output_settings(
        chunk_size=spec.chunk_size or loaded.config.audio.chunk_size,
        num_overlap=spec.num_overlap or loaded.config.inference.num_overlap,
        precision=spec.precision, device=spec.device, **extra))
    # every actor that loads the model from this spec refuses weights other than the ones hashed here
    return dataclasses.replace(spec, weights_sha256=loaded.weights_sha256), ident


def _is_config(model: str) -> bool:
    return model.endswith((".yaml", ".yml")) or Path(model).is_file()


def versions() -> dict[str, str]:
    """Versions of the software that shaped a run's output."""
    found = {"python": platform.python_version()}
    for package in ("stemflow", "torch", "numpy", "ray", "prefect", "pyarrow", "fsspec"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


# --- status ----------------------------------------------------------------------------------


def _model_ids(output_url: str, storage_options: StorageOptions) -> list[str]:
    fs, root = filesystem(join_url(output_url, "stems"), storage_options)
    try:
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)) if fs.exists(root) else []
    except OSError as e:
        raise StemflowError(f"cannot list {output_url!r}: {e}") from e


def _record_counts(output_url: str, storage_options: StorageOptions, quarantine: Quarantine
                   ) -> dict[str, dict[str, Any]]:
    """Per model: rows, error rows, errors by type and ok tracks, streamed part by part."""
    models: dict[str, dict[str, Any]] = {}
    for table in iter_record_tables(output_url, columns=("model_id", "track_id", "status", "error_type"),
                                    storage_options=storage_options, quarantine=quarantine):
        model_id = str(table.column("model_id")[0].as_py()) if table.num_rows else None
        if model_id is None:
            continue
        entry = models.setdefault(model_id, {"rows": 0, "error_rows": 0, "errors_by_type": {}, "ok_keys": []})
        entry["rows"] += table.num_rows
        status = table.column("status")
        errors = table.filter(pc.equal(status, STATUS_ERROR))
        entry["error_rows"] += errors.num_rows
        for kind in errors.column("error_type").to_pylist():
            key = kind or "unknown (written before 0.2)"
            entry["errors_by_type"][key] = entry["errors_by_type"].get(key, 0) + 1
        ok_ids = table.filter(pc.equal(status, STATUS_OK)).column("track_id").combine_chunks()
        entry["ok_keys"].append(np.unique(track_keys(ok_ids)))
    for entry in models.values():
        entry["ok_tracks"] = len(CommittedIndex.of(entry.pop("ok_keys")))
    return models


def _committed_count(output_url: str, model_id: str, storage_options: StorageOptions,
                     quarantine: Quarantine) -> int:
    """Markers of ``model_id`` (one listing); track folders with names that are not track ids are quarantined."""
    count = 0
    for name in committed_tracks(output_url, model_id, storage_options=storage_options):
        try:
            check_component(name, "track_id")
        except StemflowError as e:
            quarantine.add("track_folder", join_url(output_url, "stems", model_id) + f"/{name}", str(e))
            continue
        count += 1
    return count


def catalogue_status(output_url: str, storage_options: StorageOptions = None) -> list[dict[str, Any]]:
    """Per model_id: committed tracks (markers); rows, ok tracks and error rows (Parquet)."""
    return _status(output_url, storage_options, Quarantine())[0]


def _status(output_url: str, storage_options: StorageOptions, quarantine: Quarantine
            ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    records = _record_counts(output_url, storage_options, quarantine)
    model_ids = sorted(set(_model_ids(output_url, storage_options)) | set(records))
    status = []
    for mid in model_ids:
        counts = records.get(mid, {"rows": 0, "ok_tracks": 0, "error_rows": 0})
        status.append({"model_id": mid,
                       "committed_tracks": _committed_count(output_url, mid, storage_options, quarantine),
                       "rows": counts["rows"], "ok_tracks": counts["ok_tracks"], "error_rows": counts["error_rows"]})
    return status, records


def status_report(output_url: str, storage_options: StorageOptions = None) -> dict[str, Any]:
    """Everything ``stemflow status --json`` shows: per model counts, errors by type, the index, runs, quarantine."""
    quarantine = Quarantine()
    models, records = _status(output_url, storage_options, quarantine)
    for entry in models:
        mid = entry["model_id"]
        entry["errors_by_type"] = records.get(mid, {}).get("errors_by_type", {})
        files = list_index(output_url, mid, storage_options=storage_options, quarantine=quarantine)
        entry["indexed_tracks"] = (len(load_index(output_url, mid, storage_options=storage_options,
                                                  quarantine=quarantine)[0]) if files.exists else None)
    return {"output_url": output_url, "models": models, "runs": _runs_report(output_url, storage_options, quarantine),
            "quarantine": quarantine.as_dict()}


def _runs_report(output_url: str, storage_options: StorageOptions, quarantine: Quarantine) -> dict[str, Any]:
    """The latest run's manifest (status, counts, progress, summary) and the runs with journals left."""
    run_ids = list(iter_run_ids(output_url, storage_options=storage_options))
    latest = None
    if run_ids:
        try:
            manifest = read_run_manifest(output_url, run_ids[-1], storage_options=storage_options)
            latest = {"run_id": manifest.run_id, "status": manifest.status, "started_at": manifest.started_at,
                      "finished_at": manifest.finished_at, "counts": dict(manifest.counts),
                      "progress": dict(manifest.progress), "summary": dict(manifest.summary)}
        except StemflowError as e:
            quarantine.add("run_manifest", join_url(output_url, "runs", f"{run_ids[-1]}.json"), str(e))
    return {"count": len(run_ids), "latest": latest,
            "unfinished": runs_with_journals(output_url, storage_options=storage_options)}
