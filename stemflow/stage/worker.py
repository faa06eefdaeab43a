"""The track worker: one actor's work on its tracks, without Ray.

:class:`TrackWorker` holds one loaded model and takes each track through the
steps of :func:`stemflow.engine.track.separate_track` (the same functions:
``decode_track``, ``Separator.separate``/``separate_many``, ``measure_track``),
split so that they overlap (:mod:`stemflow.stage.pipeline` runs them on
threads):

    prepare    check the commit marker; unless committed, read + decode within the
               limits (:mod:`stemflow.stage.fetching`), on I/O threads
    separate   the model step only, one call at a time (``separate_prepared``:
               several tracks share the model's batches)
    finish     quality measures + encode + write the stems + create-only commit +
               Parquet rows (:mod:`stemflow.stage.finishing`), on CPU threads

None of the steps raises for a bad track: failures travel as values and end
as typed ``error`` outcomes. The marker is the truth: it is read just before a
track is fetched and separated, so a track already committed costs one GET
and a skip, never a second commit. A marker that exists but cannot be read is
the track's ``marker`` error (left in place, never overwritten).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import torch

from stemflow.audio.blocks import DEFAULT_MAX_DECODED_BYTES
from stemflow.engine.separator import Separator
from stemflow.engine.track import measure_track, sum_to_mixture_stem
from stemflow.errors import StorageError
from stemflow.hub.spec import ModelSpec, load_spec
from stemflow.stage.failures import CorruptMarkerError
from stemflow.stage.fetching import FetchedSource, SourceLimits, fetch_source
from stemflow.stage.finishing import SeparatedTrack, StemOutput, finish_track, rows_from_marker, source_extra_json
from stemflow.stage.streamed import StreamStepError, separate_streamed
from stemflow.stage.settings import (
    DEFAULT_MAX_DURATION_S,
    DEFAULT_MAX_SOURCE_BYTES,
    DEFAULT_STREAM_ABOVE_BYTES,
    ShardJob,
    TrackOutcome,
)
from stemflow.store.commit import marker_url
from stemflow.store.marker import MARKER_FORMAT, CommitMarker
from stemflow.store.objects import read_bytes
from stemflow.store.retry import RetryPolicy
from stemflow.tempfiles import sweep_stale, temp_dir

logger = logging.getLogger(__name__)

Fetch = Future[FetchedSource] | FetchedSource
"""A fetch as :meth:`TrackWorker.separate` takes it: done, or still running on an I/O thread."""

Prepared = tuple[SeparatedTrack, FetchedSource | None]
"""A track after :meth:`TrackWorker.prepare`: its record so far, and its decoded source if it is to be separated."""


def build_separator(spec: ModelSpec, torch_threads: int | None = None) -> Separator:
    """Load the model of ``spec`` once and wrap it in a :class:`Separator`."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    loaded = load_spec(spec)
    return Separator(loaded.model, device=spec.device, batch_size=spec.batch_size,
                     precision=spec.precision, chunk_size=spec.chunk_size, num_overlap=spec.num_overlap)


class TrackWorker:
    """Fetch + decode, separate, then measure, encode, upload and commit tracks for one job.

    ``job`` and ``retry`` are read at every step (a test may point a worker
    elsewhere between tracks). ``max_duration_s``, ``max_source_bytes`` and
    ``max_decoded_bytes`` bound what a track may be; above ``stream_above_bytes``
    it streams block by block (:mod:`stemflow.stage.fetching`, :mod:`stemflow.stage.streamed`).
    ``separator`` replaces the model of ``spec`` (a stand-in accelerator in the
    benchmarks). Starting a worker sweeps the temporary files of dead stemflow
    processes (:func:`stemflow.tempfiles.sweep_stale`).
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
        separator: Separator | None = None,
        max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES,
        stream_above_bytes: int | None = DEFAULT_STREAM_ABOVE_BYTES,
    ) -> None:
        sweep_stale()  # temporary files of workers that died here (SIGKILL, OOM) before this one started
        if separator is not None and torch_threads:
            torch.set_num_threads(torch_threads)
        self.separator = separator if separator is not None else build_separator(spec, torch_threads)
        self.residual_stem = sum_to_mixture_stem(self.separator, spec.sum_to_mixture)
        self.job = job
        self.retry = retry
        self.limits = SourceLimits(max_duration_s=max_duration_s, max_source_bytes=max_source_bytes,
                                   max_decoded_bytes=max_decoded_bytes, stream_above_bytes=stream_above_bytes)
        self.output = StemOutput(stem_format=stem_format, bit_depth=bit_depth, device=spec.device)

    def fetch(self, url: str) -> FetchedSource:
        """Read and decode the source object (never raises)."""
        return fetch_source(url, self.separator, self.limits, storage_options=self.job.storage_options,
                            retry=self.retry)

    def prepare(self, track: Mapping[str, Any]) -> Prepared:
        """Check ``track``'s marker, then (unless committed) fetch and decode it (never raises).

        ``track``: ``url``, ``track_id`` and optionally ``extra`` (the catalogue's columns).
        """
        started = time.perf_counter()
        sep = SeparatedTrack(str(track["track_id"]), str(track["url"]), started=started,
                             source_extra=source_extra_json(track.get("extra")))
        if self._committed(sep):
            return sep, None
        got = self.fetch(sep.source_url)
        if got.error is not None:
            sep.error, sep.error_step = got.error, "fetch"
            return sep, None
        return sep, got

    def separate_prepared(self, prepared: Sequence[Prepared], *, pack: bool = True,
                          separator: Separator | None = None) -> list[SeparatedTrack]:
        """The model step for prepared tracks: stems only, measured later by :meth:`finish` (never raises).

        With ``pack`` the tracks' chunks share the model's batches
        (``Separator.separate_many``; no batch runs part empty but the very last);
        if that fails (e.g. out of memory) the tracks run one at a time.
        ``separator``: another separator around the same model (a second model thread).
        """
        separator = separator or self.separator
        for sep, got in prepared:
            if got is not None and got.streamed is not None:
                self._separate_streamed(sep, got, separator)
        ready = [(sep, got) for sep, got in prepared if got is not None and got.decoded is not None]
        if pack and len(ready) > 1:
            started = time.perf_counter()
            try:
                outputs = separator.separate_many([got.decoded.samples for _, got in ready],
                                                  ready[0][1].decoded.sample_rate)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory for the packed batch
                logger.warning("packed separation of %d tracks failed (%s); one at a time", len(ready), e)
            else:
                elapsed = time.perf_counter() - started
                total = sum(got.decoded.samples.shape[-1] for _, got in ready)
                for (sep, got), stems in zip(ready, outputs):
                    share = elapsed * got.decoded.samples.shape[-1] / total
                    self._separated(sep, got, stems, share)
                return [sep for sep, _ in prepared]
        for sep, got in ready:
            started = time.perf_counter()
            try:
                stems = separator.separate(got.decoded.samples, got.decoded.sample_rate)
            except Exception as e:  # noqa: BLE001 - becomes this track's error row
                sep.error, sep.error_step = e, "separate"
                continue
            self._separated(sep, got, stems, time.perf_counter() - started)
        return [sep for sep, _ in prepared]

    def _separate_streamed(self, sep: SeparatedTrack, got: FetchedSource, separator: Separator) -> None:
        """The model step of a long track: separated, measured and encoded block by block into local files."""
        assert got.streamed is not None
        sep.cleanup = got.streamed.stack  # the finishing step closes it: decoder, local copy, encoded files
        try:
            folder = sep.cleanup.enter_context(temp_dir("stems"))
            sep.streamed = separate_streamed(separator, got.streamed, folder=folder,
                                             stem_format=self.output.stem_format,  # type: ignore[arg-type]
                                             bit_depth=self.output.bit_depth, residual_stem=self.residual_stem)
        except StreamStepError as e:  # measuring or encoding, on the sink thread
            sep.error, sep.error_step = e.__cause__ or e, e.step
            return
        except Exception as e:  # noqa: BLE001 - becomes this track's error row
            sep.error, sep.error_step = e, "separate"
            return
        sep.streamed.timings_s["decode"] = got.decode_s

    def _separated(self, sep: SeparatedTrack, got: FetchedSource, stems: dict[str, Any], seconds: float) -> None:
        sep.decoded, sep.stems, sep.residual_stem = got.decoded, stems, self.residual_stem
        sep.timings_s = {"decode": got.decode_s, "separate": seconds}

    def finish(self, sep: SeparatedTrack) -> TrackOutcome:
        """Measure, encode and store the stems write-once, then create the marker (never raises)."""
        return finish_track(sep, self.job, self.output, retry=self.retry)

    # --- one track at a time (tests, the disk-fault checks) -------------------------------------

    def separate(self, track_id: str, url: str, fetched: Fetch) -> SeparatedTrack:
        """Separate and measure one fetched source, unless already committed (never raises)."""
        (sep,) = self.separate_packed([(track_id, url, fetched)])
        return sep

    def separate_packed(self, items: Sequence[tuple[str, str, Fetch]]) -> list[SeparatedTrack]:
        """:meth:`separate` for several ``(track_id, url, fetched)`` at once, sharing the model's batches."""
        prepared: list[Prepared] = []
        for track_id, url, fetched in items:
            got = fetched.result() if isinstance(fetched, Future) else fetched
            sep = SeparatedTrack(track_id, url, started=time.perf_counter() - got.seconds)
            if not self._committed(sep) and got.error is not None:
                sep.error, sep.error_step = got.error, "fetch"
            used = sep.recorded is None and sep.error is None
            if not used and got.streamed is not None:
                got.streamed.stack.close()  # never separated: release its decoder and local copy now
            prepared.append((sep, got if used else None))
        separated = self.separate_prepared(prepared)
        for sep in separated:
            if sep.stems is not None and sep.decoded is not None and sep.error is None:
                try:
                    sep.result = measure_track(sep.decoded, sep.stems, name=sep.source_url,
                                               timings_s=sep.timings_s or {}, residual_stem=sep.residual_stem)
                except Exception as e:  # noqa: BLE001 - becomes this track's error row
                    sep.error, sep.error_step = e, "measure"
        return separated

    def _committed(self, sep: SeparatedTrack) -> bool:
        """Whether ``sep`` is already committed (then ``recorded`` is set); a read failure is its error."""
        job = self.job
        url = marker_url(job.output_url, job.model_id, sep.track_id)
        try:
            data = read_bytes(url, job.storage_options, retry=self.retry)
        except FileNotFoundError:
            return False
        except Exception as e:  # noqa: BLE001 - becomes this track's error row
            sep.error, sep.error_step = e, "marker"
            return True
        try:
            marker = CommitMarker.from_json(data)
        except StorageError as e:
            if _newer_marker(data):
                logger.info("track %s is committed by a newer stemflow (%s); skipped", sep.track_id, url)
                sep.recorded = ()
            else:
                sep.error, sep.error_step = CorruptMarkerError(
                    f"{url} exists but is not a readable stemflow marker ({e}); the track is not done and is "
                    "not redone while that file is there: move it away to separate the track again"), "marker"
            return True
        try:
            sep.recorded = tuple(rows_from_marker(marker, job)) if marker.run_id == job.run_id else ()
        except StorageError as e:
            sep.error, sep.error_step = e, "marker"
        return True


def _newer_marker(data: bytes) -> bool:
    """A marker of a later format version (``stemflow.commit/<n>``, not ours): committed, not corrupt."""
    try:
        value = json.loads(data.decode("utf-8")).get("format", "")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return False
    prefix = MARKER_FORMAT.rsplit("/", 1)[0] + "/"
    return isinstance(value, str) and value.startswith(prefix) and value != MARKER_FORMAT
