"""The track worker: one actor's work on its tracks, without Ray.

:class:`TrackWorker` holds one loaded model and takes each track through the
steps of :func:`stemflow.engine.track.separate_track` (the same functions:
``decode_track``, ``Separator.separate``/``separate_many``, ``measure_track``),
split so that they overlap:

    fetch      read + decode within the limits (:mod:`stemflow.stage.fetching`), on I/O threads
    separate   check the marker, separate and measure, on the caller's thread
               (``separate_packed``: several tracks share the model's batches)
    finish     encode + write the stems + create-only commit + Parquet rows
               (:mod:`stemflow.stage.finishing`), on I/O threads

None of the steps raises for a bad track: failures travel as values and end
as ``error`` outcomes. The marker is the truth: it is read just before
separating, so a track already committed costs a skip, never a second commit.
:mod:`stemflow.stage.ray_adapter` runs workers as Ray actors; tests and the
disk-fault checks drive one directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future

import torch

from stemflow.audio.blocks import DEFAULT_MAX_DECODED_BYTES
from stemflow.engine.separator import Separator
from stemflow.engine.track import measure_track, separate_decoded, sum_to_mixture_stem
from stemflow.hub.spec import ModelSpec, load_spec
from stemflow.stage.fetching import FetchedSource, SourceLimits, fetch_source
from stemflow.stage.finishing import SeparatedTrack, StemOutput, finish_track, rows_from_marker
from stemflow.stage.settings import DEFAULT_MAX_DURATION_S, DEFAULT_MAX_SOURCE_BYTES, ShardJob, TrackOutcome
from stemflow.store.commit import read_marker
from stemflow.store.retry import RetryPolicy
from stemflow.tempfiles import sweep_stale

logger = logging.getLogger(__name__)

Fetch = Future[FetchedSource] | FetchedSource
"""A fetch as :meth:`TrackWorker.separate` takes it: done, or still running on an I/O thread."""


def build_separator(spec: ModelSpec, torch_threads: int | None = None) -> Separator:
    """Load the model of ``spec`` once and wrap it in a :class:`Separator`."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    loaded = load_spec(spec)
    return Separator(loaded.model, device=spec.device, batch_size=spec.batch_size,
                     precision=spec.precision, chunk_size=spec.chunk_size, num_overlap=spec.num_overlap)


class TrackWorker:
    """Fetch + decode, separate, then encode, upload and commit the tracks of one shard job.

    ``job`` and ``retry`` are read at every step (a test may point a worker
    elsewhere between tracks). ``max_duration_s``, ``max_source_bytes`` and
    ``max_decoded_bytes`` bound the memory per track (:mod:`stemflow.stage.fetching`).
    Starting a worker sweeps the temporary files of dead stemflow processes
    (:func:`stemflow.tempfiles.sweep_stale`).
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
        max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES,
    ) -> None:
        sweep_stale()  # temporary files of workers that died here (SIGKILL, OOM) before this one started
        self.separator = build_separator(spec, torch_threads)
        self.sum_to_mixture = spec.sum_to_mixture
        self.residual_stem = sum_to_mixture_stem(self.separator, spec.sum_to_mixture)
        self.job = job
        self.retry = retry
        self.limits = SourceLimits(max_duration_s=max_duration_s, max_source_bytes=max_source_bytes,
                                   max_decoded_bytes=max_decoded_bytes)
        self.output = StemOutput(stem_format=stem_format, bit_depth=bit_depth, device=spec.device)

    def fetch(self, url: str) -> FetchedSource:
        """Read and decode the source object (never raises)."""
        return fetch_source(url, self.separator, self.limits, storage_options=self.job.storage_options,
                            retry=self.retry)

    def separate(self, track_id: str, url: str, fetched: Fetch) -> SeparatedTrack:
        """Separate and measure one fetched source, unless already committed (never raises)."""
        sep, got = self._prepare(track_id, url, fetched)
        if got is not None and got.decoded is not None:
            try:
                started = time.perf_counter()
                stems = self.separator.separate(got.decoded.samples, got.decoded.sample_rate)
                timings = {"decode": got.decode_s, "separate": time.perf_counter() - started}
                sep.result = measure_track(got.decoded, stems, name=url, timings_s=timings,
                                           residual_stem=self.residual_stem)
            except Exception as e:  # noqa: BLE001 - becomes this track's error row
                sep.error = e
        return sep

    def separate_packed(self, items: Sequence[tuple[str, str, Fetch]]) -> list[SeparatedTrack]:
        """Like :meth:`separate` for several ``(track_id, url, fetched)`` at once: their chunks share
        the model's batches (:func:`stemflow.engine.track.separate_decoded`), so no batch runs part empty
        but the very last. Never raises; a batch-wide failure falls back to one track at a time."""
        prepared = [self._prepare(track_id, url, fetched) for track_id, url, fetched in items]
        ready = [(sep, got) for sep, got in prepared if got is not None and got.decoded is not None]
        if len(ready) > 1:
            try:
                results = separate_decoded(
                    self.separator, [(got.decoded, sep.source_url, got.decode_s) for sep, got in ready],
                    sum_to_mixture=self.sum_to_mixture)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory for the packed batch
                logger.warning("packed separation of %d tracks failed (%s); one at a time", len(ready), e)
            else:
                for (sep, _), result in zip(ready, results):
                    sep.result = result
                return [sep for sep, _ in prepared]
        return [self.separate(sep.track_id, sep.source_url, got) if got is not None else sep for sep, got in prepared]

    def finish(self, sep: SeparatedTrack) -> TrackOutcome:
        """Encode and store the stems write-once, then create the marker (never raises)."""
        return finish_track(sep, self.job, self.output, retry=self.retry)

    def _prepare(self, track_id: str, url: str, fetched: Fetch) -> tuple[SeparatedTrack, FetchedSource | None]:
        """The track's record so far, and its decoded audio when it is to be separated (``None``:
        already committed, or failed to fetch or decode, with the error set)."""
        got = fetched.result() if isinstance(fetched, Future) else fetched
        sep = SeparatedTrack(track_id, url, started=time.perf_counter() - got.seconds)
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
