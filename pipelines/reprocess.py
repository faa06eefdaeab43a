"""Reprocess a catalogue with a newer model.

Everything not yet committed for the new model's ``model_id`` is separated
(that is the whole catalogue the first time). With ``previous_model_id`` and a
threshold, only tracks whose earlier records crossed it are taken, e.g. tracks
whose residual (``residual_db``) was above -30 dB or whose stems clipped
(``clipped_ratio`` above 0.001). Re-running after it finished does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow, get_run_logger, task

from pipelines.parameters import ModelSettings, StageParameters
from pipelines.run_body import RunRequest, SeparationOptions, run_flow_body
from stemflow.errors import ConfigError
from stemflow.store.record_scan import iter_record_tables
from stemflow.store.records import RECORD_SCHEMA


@task(name="select-by-quality", retries=2, retry_delay_seconds=2)
def select_by_quality_task(output_url: str, previous_model_id: str, quality_column: str,
                           above: float, storage_options: Mapping[str, Any] | None) -> list[str]:
    """Track ids whose ``quality_column`` exceeded ``above`` in any ok row of the previous model."""
    return select_by_quality(output_url, previous_model_id, quality_column, above, storage_options)


def select_by_quality(output_url: str, previous_model_id: str, quality_column: str, above: float,
                      storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Track ids of ``previous_model_id`` with some ``ok`` row where ``quality_column > above``.

    The records are streamed part by part, three columns at a time.
    """
    numeric = [f.name for f in RECORD_SCHEMA if pa.types.is_floating(f.type) or pa.types.is_integer(f.type)]
    if quality_column not in numeric:
        raise ConfigError(f"no numeric column {quality_column!r} in the records; have {numeric}")
    selected: set[str] = set()
    for table in iter_record_tables(output_url, previous_model_id, columns=("track_id", "status", quality_column),
                                    storage_options=storage_options):
        ok = pc.and_(pc.equal(table.column("status"), "ok"), pc.greater(table.column(quality_column), above))
        selected.update(table.filter(pc.fill_null(ok, False)).column("track_id").to_pylist())
    return sorted(selected)


@flow(name="reprocess", log_prints=False)
def reprocess(
    catalogue_url: str,
    output_url: str,
    model: str,
    checkpoint: str | None = None,
    previous_model_id: str | None = None,
    quality_column: str = "residual_db",
    above: float | None = None,
    shard_size: int = 50,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    ray_address: str | None = None,
    storage_options: dict[str, Any] | None = None,
    stage: StageParameters | None = None,
    model_settings: ModelSettings | None = None,
    allow_sources: list[str] | None = None,
) -> dict[str, Any]:
    """Separate with ``model`` what it has not committed; optionally only tracks above a threshold."""
    only = None
    if previous_model_id is not None and above is not None:
        only = select_by_quality_task(output_url, previous_model_id, quality_column, above,
                                      storage_options)
        get_run_logger().info("%d tracks of %s have %s > %s", len(only), previous_model_id,
                              quality_column, above)
    options = SeparationOptions(
        model=model, checkpoint=checkpoint, shard_size=shard_size, workers=workers,
        gpus_per_worker=gpus_per_worker, ray_address=ray_address, storage_options=storage_options, stage=stage,
        model_settings=model_settings, allow_sources=tuple(allow_sources or ()),
    )
    return run_flow_body(RunRequest(catalogue_url, output_url, options, "reprocess", only_track_ids=only)).as_dict()
