"""Karaoke dataset flow: separate what is missing, then build a versioned dataset from the committed stems.

``karaoke_dataset(source_url, dataset_url, ...)`` takes either

* a **catalogue** (a folder/prefix of audio, or a CSV/JSONL/Parquet manifest whose
  other columns, e.g. ``artist``, group the splits) and ``output_url`` (where the
  stems are committed; default ``<dataset_url>/separation``): tracks not yet
  committed for the model are separated first by the ``separate-catalogue``
  flow (a subflow), then the dataset is built from the catalogue's committed
  tracks; or
* a separation **output** (``<out>/stems/<model_id>/…`` exists): every track
  committed for the model is used as is, each track its own group.

Then: plan the version (an existing complete one with the same model, settings
and tracks ends the flow: nothing to do), one task per track (score, gain,
write; :func:`stemflow.karaoke.dataset.prepare_track`), one task for the dataset index
(``manifest.parquet``), card and ``_COMPLETE.json``. Tasks exchange URLs, ids and small row dicts.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from prefect import flow, get_run_logger, task

from pipelines.parameters import ModelSettings, StageParameters, model_overrides
from pipelines.run_body import SeparationOptions, resolve_model_task
from pipelines.separate_catalogue import separate_catalogue
from stemflow.catalogue.planning import iter_catalogue
from stemflow.catalogue.tracks import TrackRef
from stemflow.errors import ConfigError, StemflowError
from stemflow.hub.cache import default_cache_dir
from stemflow.hub.spec import ModelSpec
from stemflow.karaoke.dataset import DatasetTrack, finish_dataset, plan_version, prepare_track
from stemflow.karaoke.settings import DatasetSettings, load_settings
from stemflow.stage.worker import build_separator
from stemflow.store.commit import committed_tracks
from stemflow.store.objects import exists
from stemflow.store.paths import join_url

_SEPARATORS: dict[str, Any] = {}
_SEPARATORS_LOCK = threading.Lock()


def is_separation_output(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``url`` is a separation output (it has a ``stems/`` folder)."""
    return exists(join_url(url, "stems"), storage_options)


class _LockedVocals:
    """The vocal model of a spec, one caller at a time: whole-array ``__call__`` or streamed ``vocals_blocks``."""

    def __init__(self, separator: Any) -> None:
        from stemflow.karaoke.streamed import separator_vocals

        self._separator = separator
        self._streaming = separator_vocals(separator)

    def __call__(self, audio: Any, sample_rate: int) -> Any:
        with _SEPARATORS_LOCK:  # a Separator keeps a batch buffer: one call at a time
            return self._separator.separate(audio, sample_rate)["vocals"]

    def vocals_blocks(self, blocks: Any, num_samples: int, sample_rate: int) -> Any:
        """The vocals of the backing's blocks, through the engine's bounded-memory path."""
        if sample_rate != self._separator.sample_rate:
            raise ValueError(f"the backing is at {sample_rate} Hz but the vocal model runs at "
                             f"{self._separator.sample_rate} Hz")
        with _SEPARATORS_LOCK:
            yield from self._streaming.vocals_blocks(blocks, num_samples, sample_rate)


def _vocal_separator(spec: Mapping[str, Any]) -> Any:
    """The model of ``spec`` as a vocal separator (whole-array or streamed), loaded once per process."""
    key = json.dumps(dict(spec), sort_keys=True)
    with _SEPARATORS_LOCK:
        if key not in _SEPARATORS:
            _SEPARATORS[key] = build_separator(ModelSpec(**spec))
        separator = _SEPARATORS[key]
    return _LockedVocals(separator)


@task(name="list-catalogue", retries=2, retry_delay_seconds=2)
def list_catalogue_task(catalogue_url: str, output_url: str, storage_options: Mapping[str, Any] | None,
                        allow_sources: list[str] | None = None) -> list[dict[str, Any]]:
    """The catalogue's readable tracks (url, track_id, extra columns) as dicts (refused rows left out)."""
    tracks = iter_catalogue(catalogue_url, storage_options=storage_options, exclude=[output_url],
                            allow_sources=allow_sources or ())
    return [t.to_dict() for t in tracks if t.rejected is None]


@task(name="committed-tracks", retries=2, retry_delay_seconds=2)
def committed_task(output_url: str, model_id: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    """Track ids committed for ``model_id`` under ``output_url``."""
    return list(committed_tracks(output_url, model_id, storage_options=storage_options))


@task(name="plan-version", retries=2, retry_delay_seconds=2)
def plan_version_task(dataset_url: str, model_id: str, settings: DatasetSettings, tracks: list[DatasetTrack],
                      storage_options: Mapping[str, Any] | None) -> tuple[str, bool]:
    """The version name and whether it is already complete."""
    return plan_version(dataset_url, model_id, settings, tracks, storage_options=storage_options)


@task(name="prepare-track", retries=1, retry_delay_seconds=2)
def prepare_track_task(track: Mapping[str, Any], output_url: str, model_id: str, version_url: str,
                       settings: DatasetSettings, spec: Mapping[str, Any] | None,
                       storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Score and write one track; its dataset index row (an error row for a bad track)."""
    separator = _vocal_separator(spec) if spec is not None and settings.residue else None
    return prepare_track(DatasetTrack(**track), output_url=output_url, model_id=model_id, version_url=version_url,
                         settings=settings, vocal_separator=separator, storage_options=storage_options)


@task(name="finish-dataset", retries=1, retry_delay_seconds=2)
def finish_task(version_url: str, rows: list[dict[str, Any]], model_id: str, settings: DatasetSettings,
                models: Mapping[str, Any], storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The dataset index (``manifest.parquet``), card, shards, then the completion marker; the counts."""
    return finish_dataset(version_url, rows, model_id=model_id, settings=settings, models=models,
                          storage_options=storage_options)


@flow(name="karaoke-dataset", log_prints=False)
def karaoke_dataset(
    source_url: str,
    dataset_url: str,
    model: str = "spleeter-2stems",
    output_url: str | None = None,
    checkpoint: str | None = None,
    format: str | None = None,
    loudness: str | float | None = None,
    stems4: bool | None = None,
    group_column: str | None = None,
    splits: list[float] | None = None,
    seed: int | None = None,
    residue: bool | None = None,
    webdataset: bool | None = None,
    config_path: str | None = None,
    sum_to_mixture: bool | None = None,
    shard_size: int = 50,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    ray_address: str | None = None,
    storage_options: dict[str, Any] | None = None,
    stage: StageParameters | None = None,
    model_settings: ModelSettings | None = None,
    allow_sources: list[str] | None = None,
) -> dict[str, Any]:
    """Build a karaoke dataset version under ``dataset_url`` (see the module docstring).

    Options left ``None`` come from ``configs/karaoke.yaml`` (or ``config_path``);
    ``loudness`` is a target in LUFS or ``"none"``; ``sum_to_mixture`` (default on)
    separates so that the stems sum to the mixture, giving a full-band backing track
    (:mod:`stemflow.engine.track`; it is part of the model_id). ``model_settings`` are the
    separation settings (``cache_dir``, ``batch_size``, ``chunk_size``…; ``cache_dir``
    defaults to ``$STEMFLOW_CACHE`` or ``~/.cache/stemflow``).
    """
    settings = load_settings(config_path, **_overrides(format, loudness, stems4, group_column, splits, seed,
                                                       residue, webdataset, sum_to_mixture))
    options = SeparationOptions(
        model=model, checkpoint=checkpoint, shard_size=shard_size, workers=workers,
        gpus_per_worker=gpus_per_worker, ray_address=ray_address, storage_options=storage_options, stage=stage,
        model_settings={**_with_cache_dir(model, model_settings), "sum_to_mixture": settings.sum_to_mixture},
        allow_sources=tuple(allow_sources or ()),
    )
    resolved = resolve_model_task(model, checkpoint, options.model_settings)
    model_id = resolved["model_id"]
    output_url, separation, tracks = _dataset_tracks(source_url, output_url or join_url(dataset_url, "separation"),
                                                     model_id, settings, options)
    build = _VersionBuild(dataset_url=dataset_url, output_url=output_url, model=model, model_id=model_id,
                          spec=resolved["spec"], settings=settings, storage_options=storage_options)
    return _build_version(build, tracks, separation)


@dataclass(frozen=True)
class _VersionBuild:
    """What building one dataset version needs: where it goes, whose stems, which settings."""

    dataset_url: str
    output_url: str
    model: str
    model_id: str
    spec: Mapping[str, Any]
    settings: DatasetSettings
    storage_options: Mapping[str, Any] | None


def _with_cache_dir(model: str, model_settings: Any) -> dict[str, Any]:
    """``model_settings`` (validated) with the weights cache defaulted for a registry model (``$STEMFLOW_CACHE``)."""
    settings = model_overrides(model_settings)
    if not model.endswith((".yaml", ".yml")):
        settings.setdefault("cache_dir", str(default_cache_dir(os.environ)))
    return settings


def _dataset_tracks(source_url: str, output_url: str, model_id: str, settings: DatasetSettings,
                    options: SeparationOptions) -> tuple[str, dict[str, Any], list[DatasetTrack]]:
    """The output URL, the separation's summary and the committed tracks the dataset is built from.

    A separation output is used as it is; a catalogue is separated first (what is missing).
    """
    storage_options = options.storage_options
    if is_separation_output(source_url, storage_options):
        tracks = [DatasetTrack(t) for t in committed_task(source_url, model_id, storage_options)]
        separation: dict[str, Any] = {"planned": 0, "source": "output"}
        output_url = source_url
    else:
        listed = [TrackRef.from_dict(t) for t in list_catalogue_task(source_url, output_url, storage_options,
                                                                      list(options.allow_sources))]
        if not listed:
            raise StemflowError(f"no tracks in catalogue {source_url!r}")
        separation = _separate_missing(source_url, output_url, options)
        done = set(committed_task(output_url, model_id, storage_options))
        tracks = [DatasetTrack(t.track_id, t.url, t.extra.get(settings.group_column))
                  for t in listed if t.track_id in done]
        get_run_logger().info("%d of %d catalogue tracks are committed for %s", len(tracks), len(listed), model_id)
    if not tracks:
        raise StemflowError(f"no track is committed for {model_id} under {output_url!r}")
    return output_url, separation, tracks


def _separate_missing(source_url: str, output_url: str, options: SeparationOptions) -> dict[str, Any]:
    """Separate what the catalogue's model has not committed yet (the ``separate-catalogue`` subflow)."""
    return separate_catalogue(source_url, output_url, **options.flow_kwargs())


def _build_version(build: _VersionBuild, tracks: list[DatasetTrack], separation: Mapping[str, Any]
                   ) -> dict[str, Any]:
    """Plan the version; unless already complete, prepare every track and finish it. The flow's result."""
    log = get_run_logger()
    version, complete = plan_version_task(build.dataset_url, build.model_id, build.settings, tracks,
                                          build.storage_options)
    version_url = join_url(build.dataset_url, version)
    result = {"version": version, "version_url": version_url, "model_id": build.model_id,
              "output_url": build.output_url, "separation": separation, "created": not complete}
    if complete:
        log.info("dataset version %s is already complete: nothing to do", version)
        return result
    rows = [prepare_track_task(asdict(t), build.output_url, build.model_id, version_url, build.settings, build.spec,
                               build.storage_options) for t in tracks]
    models = {"separation": build.model,
              "residue (vocal model on the backing)": build.model if build.settings.residue else "off",
              **_model_facts(build.model)}
    counts = finish_task(version_url, rows, build.model_id, build.settings, models, build.storage_options)
    log.info("dataset %s: %d tracks, %d accepted", version_url, counts["tracks"], counts["accepted"])
    return {**result, "counts": counts}


def _model_facts(model: str) -> dict[str, str]:
    """Licence, architecture and reported SDR of a registry model for the card (``{}`` for a config path)."""
    from stemflow.hub.registry import get_model_entry

    try:
        entry = get_model_entry(model)
    except StemflowError:
        return {}
    facts = {"architecture": entry.architecture, "stems": ", ".join(entry.stems), "licence": entry.license}
    if entry.reported_sdr is not None:
        facts["reported SDR"] = entry.reported_sdr.describe()
    return facts


def _overrides(format: str | None, loudness: str | float | None, stems4: bool | None, group_column: str | None,
               splits: list[float] | None, seed: int | None, residue: bool | None, webdataset: bool | None,
               sum_to_mixture: bool | None = None) -> dict[str, Any]:
    """The dataset settings given explicitly (``None`` = keep the config file's)."""
    given: dict[str, Any] = {}
    if format is not None:
        given["format"] = format
    if loudness is not None:
        text = str(loudness).strip().lower()
        try:
            given["loudness_lufs"] = None if text == "none" else float(text)
        except ValueError as e:
            raise ConfigError(f"loudness must be a target in LUFS (e.g. -14) or 'none', got {loudness!r}") from e
    if splits is not None:
        given["splits"] = tuple(float(f) for f in splits)
    for name, value in (("stems4", stems4), ("group_column", group_column), ("seed", seed), ("residue", residue),
                        ("webdataset", webdataset), ("sum_to_mixture", sum_to_mixture)):
        if value is not None:
            given[name] = value
    return given
