"""The Ray stage: separate one shard of tracks on a pool of model-holding actors.

This is the only module that imports :mod:`ray`. The flows in ``pipelines/``
plan and shard a catalogue, then call :func:`run_shard` once per shard; the CLI
and tests may call it directly.

Data path (one Ray Data pipeline per shard)::

    from_items(small track records: url, track_id, size)
      -> map_batches(_SeparateActor, ActorPoolStrategy(min, max), num_gpus=1 | CPUs)
           per actor: model loaded once in __init__
           per call:  fetch + decode (I/O threads, prefetched)
                      ||  separate (caller thread; the call's tracks share batches: pack_tracks)
                      ||  encode + upload stems + create-only commit marker (I/O threads)
      -> small outcome records back to the driver (status, error, Parquet rows as JSON)

Only URLs and small records travel through the object store; decoded audio and
stems live inside one actor for the time one track takes. Memory per actor is
bounded by ``tracks_per_call`` decoded sources plus ``max_pending_uploads``
tracks of stems being encoded; ``max_tasks_in_flight_per_actor=1`` keeps Ray Data
from queueing more work than that on an actor.

Exactly once: stems are written first, the ``_COMMITTED.json`` marker last with
a create-only write (:func:`stemflow.store.commit.commit_track`). A track whose marker
already exists is ``skipped`` (no Parquet rows, so two racing runs never both
record it), unless this same run committed it in an earlier attempt of the
shard: then its rows are rebuilt from the marker, which carries them. Each track's failure becomes an ``error``
outcome; a batch is never dropped for one bad track.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

import stemflow
from stemflow.audio.decode import DecodedAudio, probe
from stemflow.engine.separator import Separator
from stemflow.engine.track import TrackResult, decode_track, encode_stems, measure_track, separate_decoded
from stemflow.errors import AudioDecodeError, StemflowError, StorageError
from stemflow.hub.spec import ModelSpec, load_spec
from stemflow.stage.settings import (
    DEFAULT_MAX_DURATION_S,
    DEFAULT_MAX_SOURCE_BYTES,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_SKIPPED,
    ShardJob,
    TrackOutcome,
)
from stemflow.store.commit import CommitMarker, commit_track, read_marker, stem_url, write_stem
from stemflow.store.objects import object_info, read_bytes
from stemflow.store.records import error_row, stem_rows
from stemflow.store.retry import RetryPolicy

logger = logging.getLogger(__name__)


def build_separator(spec: ModelSpec, torch_threads: int | None = None) -> Separator:
    """Load the model of ``spec`` once and wrap it in a :class:`Separator`."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    loaded = load_spec(spec)
    return Separator(loaded.model, device=spec.device, batch_size=spec.batch_size,
                     precision=spec.precision, chunk_size=spec.chunk_size, num_overlap=spec.num_overlap)


@dataclass
class _Fetched:
    decoded: DecodedAudio | None
    error: BaseException | None
    seconds: float
    decode_s: float = 0.0


@dataclass
class _Separated:
    track_id: str
    source_url: str
    started: float
    result: TrackResult | None = None
    error: BaseException | None = None
    recorded: tuple[Mapping[str, Any], ...] | None = None  # already committed: its rows, if ours


class TrackWorker:
    """Fetch + decode, separate, then encode, upload and commit: the steps of
    :func:`stemflow.engine.track.separate_track` (the same functions: ``decode_track``,
    ``Separator.separate``/``separate_many``, ``measure_track``), split so they overlap.

    The steps are separate methods so an actor can fetch and finish on I/O
    threads while its caller thread separates. None of them raises for a bad
    track: failures travel as values and end as ``error`` outcomes. The marker's
    ``extra["record"]`` keeps the track's record columns, so rows lost to a
    crash between commit and Parquet can be rebuilt without the audio
    (:func:`rows_from_marker`).

    Memory per track is bounded before anything big is read: a source larger
    than ``max_source_bytes`` (one HEAD) is refused unread, and one whose header
    claims more than ``max_duration_s`` is refused undecoded; both become error
    rows that name the limit. ``None`` disables a limit.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        job: ShardJob,
        stem_format: str = "flac",
        bit_depth: int = 24,
        torch_threads: int | None = None,
        max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
        max_source_bytes: int | None = DEFAULT_MAX_SOURCE_BYTES,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.separator = build_separator(spec, torch_threads)
        self.retry = retry
        self.max_duration_s = max_duration_s
        self.max_source_bytes = max_source_bytes
        self.device = spec.device
        self.job = job
        self.stem_format = stem_format
        self.bit_depth = bit_depth

    def fetch(self, url: str) -> _Fetched:
        """Read and decode the source object (never raises). Runs on an I/O thread, so the
        next tracks are read and decoded while the model separates the current one."""
        started = time.perf_counter()
        try:
            if self.max_source_bytes is not None:
                size = object_info(url, self.job.storage_options, retry=self.retry).size
                if size > self.max_source_bytes:
                    raise AudioDecodeError(
                        f"{url}: the source is {size} bytes, over max_source_bytes={self.max_source_bytes}; "
                        "not read (raise the limit in the stage settings to process it)")
            data = read_bytes(url, self.job.storage_options, retry=self.retry)
            self._check_duration(data, url)
            decode_started = time.perf_counter()
            decoded = decode_track(self.separator, data, name=url)
            self.separator.check_audio(decoded.samples, decoded.sample_rate)
        except Exception as e:  # noqa: BLE001 - becomes this track's error row
            return _Fetched(None, e, time.perf_counter() - started)
        done = time.perf_counter()
        return _Fetched(decoded, None, done - started, decode_s=done - decode_started)

    def separate(self, track_id: str, url: str, fetched: Future[_Fetched] | _Fetched) -> _Separated:
        """Separate and measure one fetched source, unless already committed (never raises)."""
        sep, got = self._prepare(track_id, url, fetched)
        if got is not None and got.decoded is not None:
            try:
                started = time.perf_counter()
                stems = self.separator.separate(got.decoded.samples, got.decoded.sample_rate)
                timings = {"decode": got.decode_s, "separate": time.perf_counter() - started}
                sep.result = measure_track(got.decoded, stems, name=url, timings_s=timings)
            except Exception as e:  # noqa: BLE001 - becomes this track's error row
                sep.error = e
        return sep

    def separate_packed(self, items: Sequence[tuple[str, str, Future[_Fetched] | _Fetched]]) -> list[_Separated]:
        """Like :meth:`separate` for several ``(track_id, url, fetched)`` at once: their chunks share
        the model's batches (:func:`stemflow.engine.track.separate_decoded`), so no batch runs part empty
        but the very last. Never raises; a batch-wide failure falls back to one track at a time."""
        prepared = [self._prepare(track_id, url, fetched) for track_id, url, fetched in items]
        ready = [(sep, got) for sep, got in prepared if got is not None and got.decoded is not None]
        if len(ready) > 1:
            try:
                results = separate_decoded(
                    self.separator, [(got.decoded, sep.source_url, got.decode_s) for sep, got in ready])
            except Exception as e:  # noqa: BLE001 - e.g. out of memory for the packed batch
                logger.warning("packed separation of %d tracks failed (%s); one at a time", len(ready), e)
            else:
                for (sep, _), result in zip(ready, results):
                    sep.result = result
                return [sep for sep, _ in prepared]
        return [self.separate(sep.track_id, sep.source_url, got) if got is not None else sep for sep, got in prepared]

    def _prepare(self, track_id: str, url: str, fetched: Future[_Fetched] | _Fetched
                 ) -> tuple[_Separated, _Fetched | None]:
        """The track's record so far, and its decoded audio when it is to be separated (``None``:
        already committed, or failed to fetch or decode, with the error set)."""
        got = fetched.result() if isinstance(fetched, Future) else fetched
        sep = _Separated(track_id, url, started=time.perf_counter() - got.seconds)
        try:
            job = self.job
            marker = read_marker(job.output_url, job.model_id, track_id, storage_options=job.storage_options,
                                 retry=self.retry)
            if marker is not None:
                sep.recorded = tuple(rows_from_marker(marker, job)) if marker.run_id == job.run_id else ()
                return sep, None
            if got.error is not None:
                raise got.error
        except Exception as e:  # noqa: BLE001 - becomes this track's error row
            sep.error = e
            return sep, None
        return sep, got

    def _check_duration(self, data: bytes, url: str) -> None:
        """Refuse a source whose header claims more than ``max_duration_s`` (before decoding it)."""
        if self.max_duration_s is None or not data:
            return
        try:
            duration_s = probe(data, name=url).duration_s
        except StemflowError:
            return  # undecodable: decode_track raises the decoder's own clear error
        if duration_s is not None and duration_s > self.max_duration_s:
            raise AudioDecodeError(
                f"{url}: the source is {duration_s:.0f} s long, over max_duration_s={self.max_duration_s:g}; "
                "not decoded (raise the limit in the stage settings to process it)")

    def finish(self, sep: _Separated) -> TrackOutcome:
        """Encode and store the stems write-once, then create the marker (never raises)."""
        if sep.recorded is not None:  # committed before: by this run (a retried shard) or another
            return self._outcome(sep, STATUS_OK if sep.recorded else STATUS_SKIPPED, None, sep.recorded)
        if sep.error is None:
            try:
                return self._store_and_commit(sep)
            except Exception as e:  # noqa: BLE001 - becomes this track's error row
                sep.error = e
        message = f"{type(sep.error).__name__}: {sep.error}"
        row = error_row(self._track_columns(sep), message)
        return self._outcome(sep, STATUS_ERROR, message, (row,))

    def _store_and_commit(self, sep: _Separated) -> TrackOutcome:
        job, result = self.job, sep.result
        if result is None:
            raise StemflowError(f"track {sep.track_id!r} has no separation to store")
        started = time.perf_counter()
        stems: dict[str, dict[str, Any]] = {}
        stored = []
        for stem, encoded in encode_stems(result, format=self.stem_format, bit_depth=self.bit_depth).items():
            obj = write_stem(job.output_url, job.model_id, sep.track_id, stem, self.stem_format,
                             encoded.data, storage_options=job.storage_options, retry=self.retry)
            stored.append(obj)
            stems[stem] = {
                **result.stem_quality.get(stem, {}),
                "stem_url": stem_url(job.output_url, job.model_id, sep.track_id, stem, self.stem_format),
                "stem_bytes": obj.size,
                "stem_sha256": obj.sha256,
            }
        track = {**self._track_columns(sep), "encode_s": time.perf_counter() - started}
        track["processing_s"] = time.perf_counter() - sep.started
        won = commit_track(job.output_url, job.model_id, sep.track_id, stored, source_url=sep.source_url,
                           run_id=job.run_id, extra={"record": {"track": track, "stems": stems}},
                           storage_options=job.storage_options, retry=self.retry)
        if not won:
            return self._outcome(sep, STATUS_SKIPPED, None, ())
        rows = stem_rows({**track, **_partition(job)}, stems)
        return self._outcome(sep, STATUS_OK, None, tuple(rows))

    def _track_columns(self, sep: _Separated) -> dict[str, Any]:
        columns: dict[str, Any] = {
            "track_id": sep.track_id, "source_url": sep.source_url, "device": self.device,
            "stemflow_version": stemflow.__version__,
            "processing_s": time.perf_counter() - sep.started,
        }
        result = sep.result
        if result is not None:
            columns.update(result.track_quality)
            columns.update({
                "duration_s": result.duration_s, "sample_rate": result.sample_rate,
                "source_sample_rate": result.decoded.source_sample_rate,
                "channels_in": result.decoded.source_channels,
                "decode_s": result.timings_s.get("decode"), "separate_s": result.timings_s.get("separate"),
                "quality_s": result.timings_s.get("quality"),
            })
        return columns

    def _outcome(self, sep: _Separated, status: str, error: str | None,
                 rows: tuple[Mapping[str, Any], ...]) -> TrackOutcome:
        return TrackOutcome(sep.track_id, sep.source_url, status, error, tuple(rows),
                            time.perf_counter() - sep.started)


def _partition(job: ShardJob) -> dict[str, str]:
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
    return stem_rows({**record["track"], **_partition(job)}, {s: record["stems"][s] for s in order})

