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

from prefect import flow, get_run_logger, task

from pipelines.separate_catalogue import RunRequest, SeparationOptions, run_flow_body
from stemflow.errors import ConfigError
from stemflow.store.records import read_records


@task(name="select-by-quality", retries=2, retry_delay_seconds=2)
def select_by_quality_task(output_url: str, previous_model_id: str, quality_column: str,
                           above: float, storage_options: Mapping[str, Any] | None) -> list[str]:
    """Track ids whose ``quality_column`` exceeded ``above`` in any ok row of the previous model."""
    return select_by_quality(output_url, previous_model_id, quality_column, above, storage_options)


def select_by_quality(output_url: str, previous_model_id: str, quality_column: str, above: float,
                      storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Track ids of ``previous_model_id`` with some ``ok`` row where ``quality_column > above``."""
    table = read_records(output_url, model_id=previous_model_id, storage_options=storage_options)
    if quality_column not in table.column_names:
        raise ConfigError(f"no column {quality_column!r} in the records; have {table.column_names}")
    rows = table.select(["track_id", "status", quality_column]).to_pylist()
    return sorted({r["track_id"] for r in rows
                   if r["status"] == "ok" and r[quality_column] is not None and r[quality_column] > above})


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
    stage: dict[str, Any] | None = None,
    model_settings: dict[str, Any] | None = None,
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
        model_settings=model_settings,
    )
    return run_flow_body(RunRequest(catalogue_url, output_url, options, "reprocess", only_track_ids=only)).as_dict()
