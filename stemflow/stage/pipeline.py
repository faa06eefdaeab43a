"""One worker's batches, overlapped so that the model never waits for I/O or CPU work it could overlap.

:class:`BatchPipeline` is what a Ray actor runs (without Ray: tests and the
benchmarks drive it directly). Several calls of :meth:`BatchPipeline.process`
may run at once on different threads (the actor takes ``batches_in_flight``
calls); inside each call::

    prepare   marker check + read + decode     I/O pool   (all of a call's tracks at once)
    separate  the model step                   the caller's thread, one call at a time (a lock)
    finish    measures + encode + upload +     CPU pool   (the call returns when they are done)
              create-only commit + rows

so while call *n* holds the model, call *n+1* is being fetched and decoded and
call *n-1* is being measured, encoded and uploaded. Memory per worker is
bounded by ``batches_in_flight`` × ``tracks_per_call`` tracks (decoded sources
and their stems).

The model step's busy time is measured (:attr:`BatchPipeline.model_busy_s`):
the share of wall time the accelerator had work is what the feed benchmark
reports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stemflow.stage.settings import TrackOutcome
from stemflow.stage.worker import TrackWorker


class BatchPipeline:
    """Runs batches of tracks through a :class:`TrackWorker` with its steps overlapped (thread-safe)."""

    def __init__(self, worker: TrackWorker, *, io_threads: int, cpu_threads: int, pack: bool = True) -> None:
        self.worker = worker
        self.pack = pack
        self._io = ThreadPoolExecutor(max(1, io_threads), thread_name_prefix="stemflow-io")
        self._cpu = ThreadPoolExecutor(max(1, cpu_threads), thread_name_prefix="stemflow-cpu")
        self._model = threading.Lock()
        self._busy_lock = threading.Lock()
        self.model_busy_s = 0.0
        self.model_calls = 0

    def process(self, tracks: Sequence[Mapping[str, Any]]) -> list[TrackOutcome]:
        """Every track of the batch (``url``, ``track_id``, ``extra``): one outcome each, in order."""
        prepared = [f.result() for f in [self._io.submit(self.worker.prepare, t) for t in tracks]]
        with self._model:
            started = time.perf_counter()
            separated = self.worker.separate_prepared(prepared, pack=self.pack)
            elapsed = time.perf_counter() - started
        with self._busy_lock:
            self.model_busy_s += elapsed
            self.model_calls += 1
        finishing = [self._cpu.submit(self.worker.finish, sep) for sep in separated]
        return [f.result() for f in finishing]

    def close(self) -> None:
        """Stop the thread pools (waits for running work)."""
        self._io.shutdown(wait=True)
        self._cpu.shutdown(wait=True)
