"""The driver's side of a run, without Ray: feed one long-lived pool, count, recover from crashes, report.

:class:`RunScheduler` pulls shards from the plan (a generator: planning goes on
while the first shards separate), splits them into batches of
``tracks_per_call`` and keeps the :class:`Executor` full (``capacity`` batches in
flight: workers × ``batches_in_flight``). Outcomes stream back; when every
track of a shard has one, the :class:`RunSink` records the shard (Parquet part,
index, journal). Shards are pulled only as the pool needs them, so memory holds
a few shards whatever the catalogue's size.

Failures never stop the run:

- a track's own failure is an ``error`` outcome from the worker;
- a catalogue entry refused by planning becomes an ``error`` outcome here
  (``error_type="source"``), without going to a worker;
- a batch whose worker process died (:class:`WorkerCrash`) is split: each of
  its tracks is retried alone; a track that crashed ``max_worker_crashes``
  workers becomes an error row "crashed its worker N times" (``crash``);
- only a pool that keeps failing with no success at all (no worker can start)
  stops the run, with the last error.

A stop request (``stop`` event: SIGTERM/SIGINT) stops the feeding, lets the
batches in flight finish for ``stop_grace_s`` and cancels the rest; shards that
did not complete keep their journal entry, so the next run's recovery records
whatever they committed. The Ray executor is :mod:`stemflow.stage.ray_adapter`;
tests drive the scheduler with an in-process one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stemflow.catalogue.planning import Shard
from stemflow.errors import StemflowError
from stemflow.stage.finishing import unprocessed_outcome
from stemflow.stage.progress import RunProgress
from stemflow.stage.settings import StageSettings, TrackOutcome

logger = logging.getLogger(__name__)

Batch = tuple[tuple[int, Mapping[str, Any]], ...]
"""A batch in flight: ``(shard index, track record)`` per track."""


@dataclass(frozen=True)
class StageReport:
    """How a run's stage ended: stopped on request, shards left incomplete, whether a pool was started."""

    stopped: bool
    incomplete_shards: int
    pool_started: bool


@dataclass(frozen=True)
class WorkerCrash:
    """What an executor returns for a batch whose worker died (or could not run it)."""

    message: str


class Executor(Protocol):
    """A pool of workers that runs batches of track records and returns their outcomes."""

    capacity: int

    def submit(self, tracks: Sequence[Mapping[str, Any]]) -> Any:
        """Start a batch; a handle for :meth:`wait`."""

    def wait(self, timeout_s: float) -> list[tuple[Any, list[TrackOutcome] | WorkerCrash]]:
        """The batches finished within ``timeout_s``: ``(handle, outcomes in order, or a crash)``."""

    def cancel_all(self) -> None:
        """Stop every batch in flight (their tracks get no outcome)."""


class RunSink(Protocol):
    """Where a run's shards are journalled and recorded."""

    def shard_started(self, shard: Shard) -> None:
        """Before any track of ``shard`` goes to a worker (the intent journal)."""

    def shard_finished(self, shard: Shard, outcomes: Sequence[TrackOutcome]) -> None:
        """Every track of ``shard`` has its outcome (record it)."""

    def progress(self, progress: RunProgress) -> None:
        """The run so far (at most every ``progress_interval_s``, and at the end)."""


class _PlanFeeder:
    """Runs the planning generator on its own thread, a couple of shards ahead of the scheduler."""

    def __init__(self, shards: Iterator[Shard], depth: int = 2) -> None:
        self._shards = shards
        self._ready: queue.Queue[Shard | None] = queue.Queue(maxsize=depth)
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="stemflow-plan", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for shard in self._shards:
                while not self._closing.is_set():
                    try:
                        self._ready.put(shard, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self._closing.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - re-raised on the scheduler's thread
            self._error = e
        self._put_end()

    def _put_end(self) -> None:
        while not self._closing.is_set():
            try:
                self._ready.put(None, timeout=0.2)
                return
            except queue.Full:
                continue

    def get(self, timeout_s: float) -> Shard | None:
        """The next planned shard, or ``None`` if none is ready within ``timeout_s`` (or planning ended)."""
        if self._ended:
            return None
        try:
            shard = self._ready.get(timeout=timeout_s) if timeout_s > 0 else self._ready.get_nowait()
        except queue.Empty:
            return None
        if shard is None:
            self._ended = True
            if self._error is not None:
                raise StemflowError(f"planning failed: {self._error}") from self._error
        return shard

    @property
    def finished(self) -> bool:
        """Planning has ended and every shard was taken."""
        return self._ended

    def close(self) -> None:
        """Stop planning (a stopped run plans nothing more)."""
        self._closing.set()
        self._thread.join(timeout=5)


@dataclass
class _OpenShard:
    shard: Shard
    outcomes: dict[str, TrackOutcome] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.outcomes) >= len({t.track_id for t in self.shard.tracks})


class RunScheduler:
    """Feeds an executor from a stream of shards; see the module docstring."""

    def __init__(self, executor: Executor, settings: StageSettings, sink: RunSink, *,
                 stop: threading.Event | None = None, progress: RunProgress | None = None) -> None:
        self.executor = executor
        self.settings = settings
        self.sink = sink
        self.stop = stop or threading.Event()
        self.progress = progress or RunProgress()
        self.crashes: dict[str, int] = {}
        self.stopped = False
        self.incomplete_shards = 0
        self._open: dict[int, _OpenShard] = {}
        self._queue: deque[Batch] = deque()
        self._suspects: deque[Batch] = deque()
        self._suspect_handle: Any = None
        self._in_flight: dict[Any, Batch] = {}
        self._failing = 0
        self._last_report = 0.0

    def run(self, shards: Iterator[Shard]) -> RunProgress:
        """Process every shard; the final progress (``stopped`` if a stop was requested).

        Raises:
            StemflowError: planning failed (e.g. an unreadable manifest), or the pool keeps failing.
        """
        feeder = _PlanFeeder(shards)
        try:
            while not self.stop.is_set():
                self._fill(feeder)
                if not self._in_flight and not self._queue and not self._suspects:
                    if feeder.finished:
                        break
                    shard = feeder.get(timeout_s=0.5)
                    if shard is not None:
                        self._open_shard(shard)
                    continue
                for handle, result in self.executor.wait(min(1.0, self.settings.progress_interval_s)):
                    self._collect(self._in_flight.pop(handle), result, handle)
                self._report(force=False)
            if self.stop.is_set():
                self._drain_after_stop()
        finally:
            feeder.close()
        self.progress.planning_done = feeder.finished and not self.stopped
        self.incomplete_shards = len(self._open)
        self._report(force=True)
        return self.progress

    # --- feeding -------------------------------------------------------------------------------

    def _fill(self, feeder: _PlanFeeder) -> None:
        """Submit until the executor is full, opening the shards planning has ready.

        A track whose worker died is *suspect*: it runs alone, with nothing else in
        flight anywhere, so the next crash is its own and never charged to others.
        """
        if self._suspect_handle is not None:
            return
        if self._suspects:
            if not self._in_flight and self.executor.capacity > 0:
                batch = self._suspects.popleft()
                self._suspect_handle = self.executor.submit([track for _, track in batch])
                self._in_flight[self._suspect_handle] = batch
            return
        while len(self._in_flight) < self.executor.capacity:
            if not self._queue:
                shard = feeder.get(timeout_s=0.0)
                if shard is None:
                    self.progress.planning_done = feeder.finished
                    return
                self._open_shard(shard)
                continue
            batch = self._queue.popleft()
            handle = self.executor.submit([track for _, track in batch])
            self._in_flight[handle] = batch

    def _open_shard(self, shard: Shard) -> None:
        self.sink.shard_started(shard)
        self._open[shard.index] = _OpenShard(shard)
        self.progress.planned += len({t.track_id for t in shard.tracks})
        seen: set[str] = set()
        batch: list[tuple[int, Mapping[str, Any]]] = []
        for track in shard.tracks:
            if track.track_id in seen:
                continue
            seen.add(track.track_id)
            record = track.to_dict()
            if track.rejected is not None:
                self._record(shard.index, unprocessed_outcome(record, track.rejected, "source"))
                continue
            batch.append((shard.index, record))
            if len(batch) == self.settings.tracks_per_call:
                self._queue.append(tuple(batch))
                batch = []
        if batch:
            self._queue.append(tuple(batch))
        self._close_complete()

    # --- outcomes ------------------------------------------------------------------------------

    def _collect(self, batch: Batch, result: list[TrackOutcome] | WorkerCrash, handle: Any = None) -> None:
        if handle is not None and handle == self._suspect_handle:
            self._suspect_handle = None
        if isinstance(result, WorkerCrash):
            self._crashed(batch, result)
        else:
            self._failing = 0
            for (shard_index, _), outcome in zip(batch, result):
                self._record(shard_index, outcome)
        self._close_complete()

    def _crashed(self, batch: Batch, crash: WorkerCrash) -> None:
        """Retry each track of a crashed batch alone; a track at the crash limit becomes an error row."""
        self._failing += 1
        limit = self.settings.max_worker_crashes
        logger.warning("a worker died running %d track(s): %s", len(batch), crash.message)
        for shard_index, track in batch:
            track_id = str(track["track_id"])
            self.crashes[track_id] = self.crashes.get(track_id, 0) + 1
            if self.crashes[track_id] >= limit:
                message = f"crashed its worker {self.crashes[track_id]} times (last: {crash.message})"
                self._record(shard_index, unprocessed_outcome(track, message, "crash"))
            else:
                self._suspects.append(((shard_index, track),))
        if self._failing >= max(20, 4 * self.executor.capacity):
            raise StemflowError(f"the separation stage keeps failing ({self._failing} batches in a row, none "
                                f"succeeded): {crash.message}")

    def _record(self, shard_index: int, outcome: TrackOutcome) -> None:
        open_shard = self._open.get(shard_index)
        if open_shard is None or outcome.track_id in open_shard.outcomes:
            return
        open_shard.outcomes[outcome.track_id] = outcome
        self.progress.add(outcome)

    def _close_complete(self) -> None:
        for index in [i for i, s in self._open.items() if s.complete]:
            done = self._open.pop(index)
            order = {t.track_id: n for n, t in enumerate(done.shard.tracks)}
            outcomes = sorted(done.outcomes.values(), key=lambda o: order.get(o.track_id, 0))
            self.sink.shard_finished(done.shard, outcomes)

    # --- stopping and reporting ------------------------------------------------------------------

    def _drain_after_stop(self) -> None:
        """Let the batches in flight finish for ``stop_grace_s``, then cancel the rest."""
        self.stopped = True
        self._queue.clear()
        self._suspects.clear()
        deadline = time.monotonic() + self.settings.stop_grace_s
        while self._in_flight and time.monotonic() < deadline:
            for handle, result in self.executor.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
                batch = self._in_flight.pop(handle)
                if not isinstance(result, WorkerCrash):
                    self._collect(batch, result, handle)
        if self._in_flight:
            logger.warning("stopping: cancelling %d batches still running", len(self._in_flight))
            self.executor.cancel_all()
            self._in_flight.clear()

    def _report(self, *, force: bool) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= self.settings.progress_interval_s:
            self._last_report = now
            self.progress.in_flight = sum(len(b) for b in self._in_flight.values())
            self.sink.progress(self.progress)
