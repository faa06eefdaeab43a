"""Finishing one separated track: measure, encode, write the stems, commit the marker, and its Parquet rows.

This runs on an actor's CPU threads while the model separates the next tracks,
so the accelerator never waits for the quality measures or the uploads.

Exactly once: the stems are written first, the ``_COMMITTED.json`` marker last
with a create-only write (:func:`stemflow.store.commit.commit_track`). A track
another run committed first is ``skipped`` (no rows, so two racing runs never
both record it). The marker's ``extra["record"]`` keeps the track's record
columns, so rows lost to a crash between the commit and the Parquet part are
rebuilt without the audio (:func:`rows_from_marker`). :func:`finish_track`
never raises: a failure at any step is the track's ``error`` outcome and row.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

import stemflow
from stemflow.audio.decode import DecodedAudio
from stemflow.engine.track import TrackResult, encode_stems, measure_track
from stemflow.errors import StemflowError, StorageError
from stemflow.stage.failures import error_type_of
from stemflow.stage.streamed import StreamedResult
from stemflow.stage.settings import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, ShardJob, TrackOutcome
from stemflow.store.commit import CommitMarker, StemObject, commit_track, stored_stem_url, write_stem, write_stem_file
from stemflow.store.records import error_row, stem_rows
from stemflow.store.retry import RetryPolicy


@dataclass(frozen=True)
class StemOutput:
    """How a worker stores a track's stems (format, bit depth) and the device its rows name."""

    stem_format: str = "flac"
    bit_depth: int = 24
    device: str = "cpu"


@dataclass
class SeparatedTrack:
    """One track between its steps: decoded, separated, measured; or why it stopped.

    ``started``: ``time.perf_counter()`` when its fetch began. After the model
    step ``stems`` (and ``decoded``, ``timings_s``) are set; the finishing step
    measures them into ``result``. ``error`` and ``error_step`` (a
    :data:`stemflow.stage.failures.STEPS` value) say why it stopped. ``recorded``
    is set when the track was already committed: its rows when this same run
    committed it (a retried batch), ``()`` when another run did.
    ``source_extra``: the catalogue's extra columns as JSON, for the rows.
    ``residual_stem``: the stem that takes the residual when measured (``sum_to_mixture``).
    A long track separated block by block has ``streamed`` (its stems in local
    files, already measured) instead of ``stems``/``result``; ``cleanup``
    removes its local files and is closed when the track is finished.
    """

    track_id: str
    source_url: str
    started: float
    result: TrackResult | None = None
    error: BaseException | None = None
    recorded: tuple[Mapping[str, Any], ...] | None = None
    error_step: str = "fetch"
    source_extra: str | None = None
    decoded: DecodedAudio | None = None
    stems: dict[str, np.ndarray] | None = None
    timings_s: dict[str, float] | None = None
    residual_stem: str | None = None
    streamed: StreamedResult | None = None
    cleanup: contextlib.ExitStack | None = None


def finish_track(sep: SeparatedTrack, job: ShardJob, output: StemOutput, *,
                 retry: RetryPolicy | None) -> TrackOutcome:
    """Measure, store and commit ``sep`` for ``job``, or record its error (never raises).

    Whatever happens, the track's local files (``sep.cleanup``) are removed.
    """
    try:
        return _finish(sep, job, output, retry=retry)
    finally:
        if sep.cleanup is not None:
            sep.cleanup.close()


def _finish(sep: SeparatedTrack, job: ShardJob, output: StemOutput, *, retry: RetryPolicy | None) -> TrackOutcome:
    if sep.recorded is not None:  # committed before: by this run (a retried batch) or another
        return track_outcome(sep, STATUS_OK if sep.recorded else STATUS_SKIPPED, None, sep.recorded)
    if sep.error is None and sep.result is None and sep.stems is not None and sep.decoded is not None:
        try:
            sep.result = measure_track(sep.decoded, sep.stems, name=sep.source_url, timings_s=sep.timings_s or {},
                                       residual_stem=sep.residual_stem)
            sep.stems = sep.decoded = None  # the result holds them now
        except Exception as e:  # noqa: BLE001 - becomes this track's error row
            sep.error, sep.error_step = e, "measure"
    if sep.error is None:
        try:
            return store_and_commit(sep, job, output, retry=retry)
        except Exception as e:  # noqa: BLE001 - becomes this track's error row
            sep.error, sep.error_step = e, "finish"
    return error_outcome(sep, sep.error or StemflowError("the track has no separation"), output.device)


def source_extra_json(extra: Mapping[str, Any] | None) -> str | None:
    """A catalogue row's extra columns as the ``source_extra`` JSON text (``None`` when there are none)."""
    return json.dumps(dict(extra), sort_keys=True, ensure_ascii=False, default=str) if extra else None


def unprocessed_outcome(track: Mapping[str, Any], message: str, error_type: str) -> TrackOutcome:
    """The error outcome of a track the stage never got to process (refused entry, crashed worker)."""
    sep = SeparatedTrack(str(track["track_id"]), str(track["url"]), started=time.perf_counter(),
                         source_extra=source_extra_json(track.get("extra")))
    row = error_row({**track_columns(sep, ""), "device": None, "processing_s": None}, message, error_type)
    return replace(track_outcome(sep, STATUS_ERROR, message, (row,)), error_type=error_type)


def error_outcome(sep: SeparatedTrack, error: BaseException, device: str) -> TrackOutcome:
    """The error outcome and row of ``sep``, typed by where it failed (:func:`error_type_of`)."""
    message = f"{type(error).__name__}: {error}"
    kind = error_type_of(sep.error_step, error)
    row = error_row(track_columns(sep, device), message, kind)
    return replace(track_outcome(sep, STATUS_ERROR, message, (row,)), error_type=kind)


def store_and_commit(sep: SeparatedTrack, job: ShardJob, output: StemOutput, *,
                     retry: RetryPolicy | None) -> TrackOutcome:
    """Encode and write the stems write-once, then create the marker; ``skipped`` if another run won.

    Raises:
        StemflowError: the track has no separation, or storing it failed.
    """
    result = sep.result or sep.streamed
    if result is None:
        raise StemflowError(f"track {sep.track_id!r} has no separation to store")
    started = time.perf_counter()
    stems: dict[str, dict[str, Any]] = {}
    stored = []
    for stem, obj in _store_stems(sep, job, output, retry):
        stored.append(obj)
        stems[stem] = {
            **result.stem_quality.get(stem, {}),
            "stem_url": stored_stem_url(job.output_url, job.model_id, sep.track_id, obj),
            "stem_bytes": obj.size,
            "stem_sha256": obj.sha256,
        }
    track = {**track_columns(sep, output.device), "encode_s": time.perf_counter() - started}
    track["processing_s"] = time.perf_counter() - sep.started
    won = commit_track(job.output_url, job.model_id, sep.track_id, stored, source_url=sep.source_url,
                       run_id=job.run_id, extra={"record": {"track": track, "stems": stems}},
                       storage_options=job.storage_options, retry=retry)
    if not won:
        return track_outcome(sep, STATUS_SKIPPED, None, ())
    rows = stem_rows({**track, **partition_columns(job)}, stems)
    return track_outcome(sep, STATUS_OK, None, tuple(rows))


def _store_stems(sep: SeparatedTrack, job: ShardJob, output: StemOutput,
                 retry: RetryPolicy | None) -> Iterator[tuple[str, StemObject]]:
    """Each stem stored write-once: encoded from memory, or uploaded from the streamed track's files."""
    place = (job.output_url, job.model_id, sep.track_id)
    if sep.streamed is not None:
        for stem, path in sep.streamed.files.items():
            yield stem, write_stem_file(*place, stem, output.stem_format, path, storage_options=job.storage_options,
                                        retry=retry)
        return
    assert sep.result is not None
    for stem, encoded in encode_stems(sep.result, format=output.stem_format, bit_depth=output.bit_depth).items():
        yield stem, write_stem(*place, stem, output.stem_format, encoded.data, storage_options=job.storage_options,
                               retry=retry)


def track_columns(sep: SeparatedTrack, device: str) -> dict[str, Any]:
    """The track-level record columns of ``sep`` (the separation's measures once it has them)."""
    columns: dict[str, Any] = {
        "track_id": sep.track_id, "source_url": sep.source_url, "device": device,
        "stemflow_version": stemflow.__version__,
        "processing_s": time.perf_counter() - sep.started,
    }
    if sep.source_extra is not None:
        columns["source_extra"] = sep.source_extra
    result = sep.result or sep.streamed
    if result is not None:
        columns.update(result.track_quality)
        columns.update({
            "duration_s": result.duration_s, "sample_rate": result.sample_rate,
            "source_sample_rate": result.source_sample_rate,
            "channels_in": result.source_channels,
            "decode_s": result.timings_s.get("decode"), "separate_s": result.timings_s.get("separate"),
            "quality_s": result.timings_s.get("quality"), "residual_stem": result.residual_stem,
        })
    return columns


def track_outcome(sep: SeparatedTrack, status: str, error: str | None,
                  rows: tuple[Mapping[str, Any], ...]) -> TrackOutcome:
    """The driver's record of ``sep``; ``seconds`` runs from the start of its fetch until now."""
    return TrackOutcome(sep.track_id, sep.source_url, status, error, tuple(rows),
                        time.perf_counter() - sep.started)


def partition_columns(job: ShardJob) -> dict[str, str]:
    """The hive partition columns of ``job``'s rows: ``model_id``, ``run_date``, ``run_id``."""
    return {"model_id": job.model_id, "run_date": job.run_date, "run_id": job.run_id}


def rows_from_marker(marker: CommitMarker, job: ShardJob) -> list[dict[str, Any]]:
    """The ``ok`` rows of a committed track, rebuilt from its marker, for the run of ``job``.

    Raises:
        StorageError: the marker holds no record columns (not written by this stage).
    """
    record = marker.extra.get("record")
    if not isinstance(record, Mapping) or not record.get("stems"):
        raise StorageError(f"the marker of track {marker.track_id!r} holds no record columns")
    order = [s.stem for s in marker.stems if s.stem in record["stems"]]  # the marker keeps commit order
    return stem_rows({**record["track"], **partition_columns(job)}, {s: record["stems"][s] for s in order})
