"""The evaluation flow: models against a data set with reference stems -> metrics and a leaderboard.

``evaluate`` is a thin Prefect flow over :mod:`stemflow.evaluation`:

1. discover the data set (MUSDB18-style folders or ``.stem.mp4`` files);
2. per model, separate every mixture. With ``engine="ray"`` (the default) this is
   the catalogue's own Ray stage (:func:`stemflow.stage.ray_adapter.run_shard`): stems are
   committed under ``<out>/stems/<model_id>/<track_id>/`` exactly once (a later
   evaluation of the same model reuses them), the stage's Parquet rows go to
   ``<out>/metadata/`` with ``run_id = eval_id``, and the committed stems are then
   scored. ``engine="local"`` runs the Separator in-process inside the task and
   stores nothing but the metrics (for a laptop, or tests without Ray);
3. score the mixture baseline;
4. write ``<out>/evaluation/<eval_id>/`` (metrics + leaderboard, see
   :func:`stemflow.evaluation.results.write_evaluation`) and publish the leaderboard as a
   Prefect artifact.

Tasks exchange URLs, ids and metric rows (a few dozen floats per track and stem),
never audio. :func:`run_evaluation` is the CLI's backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from pipelines.parameters import ModelSettings, StageParameters, model_overrides, stage_overrides
from stemflow.evaluation.leaderboard import leaderboard, leaderboard_markdown, reported_notes
from stemflow.evaluation.references import MIXTURE_BASELINE, ReferenceTrack, discover_dataset, load_references
from stemflow.evaluation.results import new_eval_id, write_evaluation
from stemflow.evaluation.scoring import error_metrics_row, metrics_table, score_track
from stemflow.hub.model_id import parse_model_id

ENGINES = ("ray", "local")

EstimatesOf = Callable[[ReferenceTrack], tuple[dict[str, np.ndarray], int]]
"""A model's estimated stems of one track and their sample rate."""


def _track_dicts(tracks: Sequence[ReferenceTrack]) -> list[dict[str, Any]]:
    return [{"name": t.name, "mixture_url": t.mixture_url, "stem_urls": dict(t.stem_urls)} for t in tracks]


def _track(record: Mapping[str, Any]) -> ReferenceTrack:
    return ReferenceTrack(record["name"], record["mixture_url"], dict(record["stem_urls"]))


@task(name="discover-references", retries=2, retry_delay_seconds=2)
def discover_task(dataset_url: str, storage_options: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The data set's tracks (name, mixture URL, reference stem URLs)."""
    return _track_dicts(discover_dataset(dataset_url, storage_options=storage_options))


@task(name="resolve-model", retries=1)
def resolve_task(model: str, checkpoint: str | None, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A picklable model spec, the ``model_id`` and the model's display name."""
    from pipelines.runtime import resolve_model
    from stemflow.hub.registry import get_model_entry, has_model

    spec, model_id = resolve_model(model, checkpoint, dict(settings))
    reported = None
    if has_model(model) and (sdr := get_model_entry(model).reported_sdr) is not None:
        reported = f"{sdr.value:.2f} dB ({sdr.metric}, {sdr.dataset})"
    return {"spec": asdict(spec), "model_id": model_id, "name": parse_model_id(model_id).name,
            "reported_sdr": reported}


def _score_or_error(model: Mapping[str, Any], track: ReferenceTrack, estimates_of: EstimatesOf,
                    storage_options: Mapping[str, Any] | None, max_duration_s: float | None) -> list[dict[str, Any]]:
    """Score one track; any failure becomes the track's error row."""
    try:
        estimates, sample_rate = estimates_of(track)
        references = load_references(track, sample_rate, storage_options=storage_options)
        return score_track(model_name=model["name"], model_id=model["model_id"], track=track.name,
                           references=references, estimates=estimates, max_duration_s=max_duration_s)
    except Exception as e:  # noqa: BLE001 - one bad track is a row, not a failed evaluation
        return [error_metrics_row(model["name"], model["model_id"], track.name, f"{type(e).__name__}: {e}")]


@task(name="separate-and-score-local")
def local_task(tracks: list[dict[str, Any]], model: Mapping[str, Any], storage_options: Mapping[str, Any] | None,
               max_duration_s: float | None) -> list[dict[str, Any]]:
    """Separate in-process (no Ray, nothing stored) and score every track."""
    from stemflow.engine.track import separate_track
    from stemflow.hub.spec import ModelSpec
    from stemflow.stage.worker import build_separator
    from stemflow.store.objects import read_bytes

    separator = build_separator(ModelSpec(**model["spec"]))

    def estimates_of(track: ReferenceTrack) -> tuple[dict[str, np.ndarray], int]:
        result = separate_track(separator, read_bytes(track.mixture_url, storage_options), name=track.mixture_url,
                                measure_quality=False)
        return result.stems, result.sample_rate

    return [row for t in tracks for row in _score_or_error(model, _track(t), estimates_of, storage_options,
                                                               max_duration_s)]


@task(name="separate-references-ray", retries=1, retry_delay_seconds=5)
def ray_task(tracks: list[dict[str, Any]], model: Mapping[str, Any], output_url: str, eval_id: str,
             storage_options: Mapping[str, Any] | None, stage: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Separate the mixtures on the Ray stage (commit stems, record rows); track name -> id/status/error."""
    from stemflow.catalogue.tracks import track_ref
    from stemflow.hub.spec import ModelSpec
    from stemflow.stage.ray_adapter import run_shard
    from stemflow.stage.settings import ShardJob, StageSettings
    from stemflow.store.records import write_part

    refs = {t["name"]: track_ref(t["mixture_url"], storage_options=storage_options) for t in tracks}
    run_date = f"{datetime.now(UTC):%Y-%m-%d}"
    job = ShardJob(output_url=output_url, model_id=model["model_id"], run_id=eval_id, run_date=run_date,
                   storage_options=dict(storage_options or {}))
    items = [{"url": r.url, "track_id": r.track_id} for r in refs.values()]
    result = run_shard(items, ModelSpec(**model["spec"]), job, StageSettings(**stage))
    if result.rows:
        write_part(output_url, model["model_id"], run_date, eval_id, 0, result.rows, storage_options=storage_options)
    by_id = {o.track_id: o for o in result.outcomes}
    return {name: {"track_id": r.track_id, "status": by_id[r.track_id].status, "error": by_id[r.track_id].error}
            for name, r in refs.items()}


@task(name="score-committed")
def score_committed_task(tracks: list[dict[str, Any]], model: Mapping[str, Any],
                         outcomes: Mapping[str, Mapping[str, Any]], output_url: str,
                         storage_options: Mapping[str, Any] | None,
                         max_duration_s: float | None) -> list[dict[str, Any]]:
    """Score the committed stems of every track, streamed from the output store (verified by their markers)."""
    from stemflow.errors import StemflowError
    from stemflow.evaluation.committed import committed_inputs
    from stemflow.evaluation.references import reference_inputs
    from stemflow.evaluation.streamed import score_track_streamed

    def score(track: ReferenceTrack) -> list[dict[str, Any]]:
        outcome = outcomes[track.name]
        if outcome["status"] == "error":
            raise StemflowError(outcome["error"] or "separation failed")
        committed = committed_inputs(output_url, model["model_id"], outcome["track_id"],
                                     storage_options=storage_options)
        if committed is None:
            raise StemflowError(f"track {outcome['track_id']} is not committed for {model['model_id']}")
        return score_track_streamed(model_name=model["name"], model_id=model["model_id"], track=track.name,
                                    references=reference_inputs(track), estimates=committed[1],
                                    max_duration_s=max_duration_s, storage_options=storage_options)

    rows: list[dict[str, Any]] = []
    for record in tracks:
        track = _track(record)
        try:
            rows += score(track)
        except Exception as e:  # noqa: BLE001 - one bad track is a row, not a failed evaluation
            rows.append(error_metrics_row(model["name"], model["model_id"], track.name, f"{type(e).__name__}: {e}"))
    return rows


@task(name="score-mixture-baseline")
def baseline_task(tracks: list[dict[str, Any]], sample_rate: int, storage_options: Mapping[str, Any] | None,
                  max_duration_s: float | None) -> list[dict[str, Any]]:
    """The mixture as the estimate of every reference stem, per track (streamed from the data set's objects)."""
    from stemflow.evaluation.streamed import baseline_rows_streamed

    rows: list[dict[str, Any]] = []
    for record in tracks:
        track = _track(record)
        try:
            rows += baseline_rows_streamed(track, sample_rate, max_duration_s=max_duration_s,
                                           storage_options=storage_options)
        except Exception as e:  # noqa: BLE001 - an unreadable reference is a row, not a failed evaluation
            rows.append(error_metrics_row(MIXTURE_BASELINE, MIXTURE_BASELINE, track.name, f"{type(e).__name__}: {e}"))
    return rows


@task(name="write-evaluation", retries=2, retry_delay_seconds=2)
def write_task(output_url: str, eval_id: str, rows: list[dict[str, Any]], info: Mapping[str, Any],
               storage_options: Mapping[str, Any] | None) -> dict[str, str]:
    """metrics.parquet and the leaderboard files; their URLs."""
    return write_evaluation(output_url, eval_id, metrics_table(rows), info=info, storage_options=storage_options)


@flow(name="evaluate", log_prints=False)
def evaluate(
    dataset_url: str,
    output_url: str,
    models: list[str],
    checkpoints: dict[str, str] | None = None,
    engine: str = "ray",
    eval_id: str | None = None,
    model_settings: ModelSettings | None = None,
    stage: StageParameters | None = None,
    storage_options: dict[str, Any] | None = None,
    max_duration_s: float | None = None,
    baseline_sample_rate: int = 44100,
) -> dict[str, Any]:
    """Score ``models`` on the reference data set at ``dataset_url``; write ``<out>/evaluation/<eval_id>/``.

    ``models`` holds registry names or community config YAML paths (their weights in
    ``checkpoints[config_path]``); ``model_settings`` (``cache_dir``, ``device``,
    ``chunk_size``…) go to every model; ``stage`` overrides Ray
    :class:`~stemflow.stage.settings.StageSettings` fields. Returns ``eval_id``, the file
    URLs and the leaderboard rows.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not models:
        raise ValueError("give at least one model")
    started = time.perf_counter()
    scoring = _Scoring(output_url=output_url, eval_id=eval_id or new_eval_id(), engine=engine,
                       storage_options=storage_options, stage=stage_overrides(stage), max_duration_s=max_duration_s)
    tracks = discover_task(dataset_url, storage_options)
    get_run_logger().info("evaluation %s: %d tracks, models %s, engine %s", scoring.eval_id, len(tracks),
                          ", ".join(models), engine)
    rows: list[dict[str, Any]] = []
    resolved = []
    for model in models:
        info = resolve_task(model, (checkpoints or {}).get(model), model_overrides(model_settings))
        resolved.append(info)
        rows += scoring.model_rows(tracks, info)
    rates = [r["sample_rate"] for r in rows if r.get("sample_rate")]
    rows += baseline_task(tracks, rates[0] if rates else baseline_sample_rate, storage_options, max_duration_s)
    info = {"dataset_url": dataset_url, "engine": engine, "tracks": [t["name"] for t in tracks],
            "models": [{k: m[k] for k in ("name", "model_id", "reported_sdr")} for m in resolved],
            "max_duration_s": max_duration_s, "wall_s": time.perf_counter() - started}
    return _publish(scoring, rows, info)


@dataclass(frozen=True)
class _Scoring:
    """Where and how one evaluation separates and scores its models."""

    output_url: str
    eval_id: str
    engine: str
    storage_options: Mapping[str, Any] | None
    stage: Mapping[str, Any]
    max_duration_s: float | None

    def model_rows(self, tracks: list[dict[str, Any]], model: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The metric rows of one resolved model over every track, with this evaluation's engine."""
        if self.engine == "local":
            return local_task(tracks, model, self.storage_options, self.max_duration_s)
        outcomes = ray_task(tracks, model, self.output_url, self.eval_id, self.storage_options, self.stage)
        return score_committed_task(tracks, model, outcomes, self.output_url, self.storage_options,
                                    self.max_duration_s)


def _publish(scoring: _Scoring, rows: list[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """Write the metrics and leaderboard files, publish the leaderboard artifact; the flow's result."""
    eval_id = scoring.eval_id
    urls = write_task(scoring.output_url, eval_id, rows, info, scoring.storage_options)
    board = leaderboard(metrics_table(rows))
    markdown = leaderboard_markdown(board, reported_notes(info))
    create_markdown_artifact(f"# stemflow evaluation `{eval_id}`\n\n" + markdown,
                             key="stemflow-leaderboard", description=f"leaderboard of {eval_id}")
    errors = sum(1 for r in rows if r.get("status") == "error")
    get_run_logger().info("evaluation %s written to %s (%d error rows)", eval_id, urls["metrics.parquet"], errors)
    return {"eval_id": eval_id, "urls": urls, "leaderboard": board.to_pylist(), "errors": errors, "info": info}


def run_evaluation(dataset_url: str, output_url: str, models: Sequence[str], **kwargs: Any) -> dict[str, Any]:
    """CLI backend: run the flow (Prefect's ephemeral API unless ``PREFECT_API_URL`` is set)."""
    return evaluate(dataset_url, output_url, list(models), **kwargs)
