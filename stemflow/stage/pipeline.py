"""One worker's batches, overlapped so that the model never waits for I/O or CPU work it could overlap.

:class:`BatchPipeline` is what a Ray actor runs (without Ray: tests and the
benchmarks drive it directly). Several calls of :meth:`BatchPipeline.process`
may run at once on different threads (the actor takes ``batches_in_flight``
calls); inside each call::

    prepare   marker check + read + decode     I/O pool   (all of a call's tracks at once)
    separate  the model step                   the caller's thread, ``model_threads`` calls at once
    finish    measures + encode + upload +     CPU pool   (the call returns when they are done)
              create-only commit + rows

so while call *n* is on the model, call *n+1* is being fetched and decoded and
call *n-1* is being measured, encoded and uploaded. The model step itself is
not only the forward: the separator validates the track, gathers chunks into a
batch before it and overlap-adds the output after it, on the CPU. With
``model_threads=2`` two calls are in their model step at once, each on its own
:class:`~stemflow.engine.separator.Separator` around the one shared model: one
gathers or overlap-adds while the other's forward runs (the device runs the
forwards one after the other, as a GPU stream does), so the accelerator does
not wait for that CPU work either. That holds two batches on the device at
once (set ``model_threads=1`` where the GPU has room for one). Memory per
worker is bounded by ``batches_in_flight`` × ``tracks_per_call`` tracks
(decoded sources and their stems).

The time spent in model steps is counted (:attr:`BatchPipeline.model_busy_s`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stemflow.engine.separator import Separator
from stemflow.stage.settings import TrackOutcome
from stemflow.stage.worker import TrackWorker


def sibling_separator(separator: Separator) -> Separator:
    """Another :class:`Separator` around the same model and settings (its own batch buffer)."""
    return Separator(separator.model, device=separator.device, chunk_size=separator.chunk_size,
                     num_overlap=separator.num_overlap, batch_size=separator.batch_size,
                     precision=separator.precision, stems=separator.stems, sample_rate=separator.sample_rate,
                     compile=separator.compiled)


class BatchPipeline:
    """Runs batches of tracks through a :class:`TrackWorker` with its steps overlapped (thread-safe)."""

    def __init__(self, worker: TrackWorker, *, io_threads: int, cpu_threads: int, pack: bool = True,
                 model_threads: int = 1) -> None:
        self.worker = worker
        self.pack = pack
        self._io = ThreadPoolExecutor(max(1, io_threads), thread_name_prefix="stemflow-io")
        self._cpu = ThreadPoolExecutor(max(1, cpu_threads), thread_name_prefix="stemflow-cpu")
        self._separators: queue.Queue[Separator] = queue.Queue()
        self._separators.put(worker.separator)
        for _ in range(max(1, model_threads) - 1):
            self._separators.put(sibling_separator(worker.separator))
        self._busy_lock = threading.Lock()
        self.model_busy_s = 0.0
        self.model_calls = 0

    def process(self, tracks: Sequence[Mapping[str, Any]]) -> list[TrackOutcome]:
        """Every track of the batch (``url``, ``track_id``, ``extra``): one outcome each, in order."""
        prepared = [f.result() for f in [self._io.submit(self.worker.prepare, t) for t in tracks]]
        separator = self._separators.get()
        try:
            started = time.perf_counter()
            separated = self.worker.separate_prepared(prepared, pack=self.pack, separator=separator)
            elapsed = time.perf_counter() - started
        finally:
            self._separators.put(separator)
        with self._busy_lock:
            self.model_busy_s += elapsed
            self.model_calls += 1
        finishing = [self._cpu.submit(self.worker.finish, sep) for sep in separated]
        return [f.result() for f in finishing]

    def close(self) -> None:
        """Stop the thread pools (waits for running work)."""
        self._io.shutdown(wait=True)
        self._cpu.shutdown(wait=True)
