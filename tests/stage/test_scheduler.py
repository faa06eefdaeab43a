"""The run scheduler without Ray: feeding, shard completion, crash accounting, stops, planning errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import pytest

from stemflow.catalogue.planning import Shard, shard
from stemflow.catalogue.tracks import TrackRef
from stemflow.errors import StemflowError
from stemflow.stage.progress import RunProgress
from stemflow.stage.scheduler import RunScheduler, WorkerCrash
from stemflow.stage.settings import STATUS_ERROR, STATUS_OK, StageSettings, TrackOutcome


class FakeExecutor:
    """Runs batches on threads; tracks named in ``poison`` crash their batch, ``slow`` ones take a while."""

    def __init__(self, capacity: int, poison: set[str] = frozenset(), delay_s: float = 0.0,
                 fail_all: bool = False) -> None:
        self.capacity = capacity
        self.poison = poison
        self.delay_s = delay_s
        self.fail_all = fail_all
        self.pool = ThreadPoolExecutor(capacity)
        self.futures: dict[Future, int] = {}
        self.submitted: list[list[str]] = []
        self.max_in_flight = 0
        self.cancelled = False

    def _run(self, tracks: Sequence[Mapping[str, Any]]) -> list[TrackOutcome] | WorkerCrash:
        time.sleep(self.delay_s)
        if self.fail_all:
            return WorkerCrash("no worker could start")
        if any(t["track_id"] in self.poison for t in tracks):
            return WorkerCrash("worker died (SIGKILL)")
        return [TrackOutcome(t["track_id"], t["url"], STATUS_OK, None, ({"track_id": t["track_id"]},), 0.0)
                for t in tracks]

    def submit(self, tracks: Sequence[Mapping[str, Any]]) -> Future:
        self.submitted.append([t["track_id"] for t in tracks])
        future = self.pool.submit(self._run, list(tracks))
        self.futures[future] = 1
        self.max_in_flight = max(self.max_in_flight, len(self.futures))
        return future

    def wait(self, timeout_s: float) -> list[tuple[Future, Any]]:
        if not self.futures:
            time.sleep(min(timeout_s, 0.01))
            return []
        done, _ = wait(list(self.futures), timeout=timeout_s, return_when="FIRST_COMPLETED")
        for future in done:
            del self.futures[future]
        return [(f, f.result()) for f in done]

    def cancel_all(self) -> None:
        self.cancelled = True
        self.futures.clear()


class Sink:
    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: dict[int, list[TrackOutcome]] = {}
        self.reports: list[dict[str, Any]] = []

    def shard_started(self, shard: Shard) -> None:
        self.started.append(shard.index)

    def shard_finished(self, shard: Shard, outcomes: Sequence[TrackOutcome]) -> None:
        assert shard.index in self.started
        self.finished[shard.index] = list(outcomes)

    def progress(self, progress: RunProgress) -> None:
        self.reports.append(progress.as_dict())


def tracks(n: int, **extra: Any) -> list[TrackRef]:
    return [TrackRef(url=f"s3://b/t{i}.wav", track_id=f"t{i:03d}", size=1, **extra) for i in range(n)]


SETTINGS = StageSettings(tracks_per_call=2, progress_interval_s=0.05, max_worker_crashes=3)


def test_every_track_once_shards_recorded_in_order_and_the_pool_kept_full() -> None:
    executor, sink = FakeExecutor(capacity=3, delay_s=0.01), Sink()
    progress = RunScheduler(executor, SETTINGS, sink).run(shard(tracks(23), 5))
    assert sorted(sink.finished) == [0, 1, 2, 3, 4]
    for index, outcomes in sink.finished.items():
        assert [o.track_id for o in outcomes] == [f"t{i:03d}" for i in range(5 * index, min(23, 5 * index + 5))]
    assert (progress.ok, progress.done, progress.planned, progress.planning_done) == (23, 23, 23, True)
    assert executor.max_in_flight == 3
    assert all(len(b) <= 2 for b in executor.submitted)
    assert sink.reports[-1]["done"] == 23 and sink.reports[-1]["eta_s"] == 0.0


def test_a_poison_track_becomes_a_crash_error_row_and_its_batch_mates_succeed() -> None:
    executor, sink = FakeExecutor(capacity=2, poison={"t003"}), Sink()
    progress = RunScheduler(executor, SETTINGS, sink).run(shard(tracks(8), 4))
    outcomes = {o.track_id: o for s in sink.finished.values() for o in s}
    assert len(outcomes) == 8 and progress.ok == 7 and progress.errors_by_type == {"crash": 1}
    poison = outcomes["t003"]
    assert poison.status == STATUS_ERROR and poison.error_type == "crash"
    assert poison.error.startswith("crashed its worker 3 times") and "SIGKILL" in poison.error
    (row,) = poison.rows
    assert (row["status"], row["error_type"], row["stem"]) == ("error", "crash", None)
    # the crashed pair was split: t002 ran alone after the first crash and t003 ran alone twice more
    assert executor.submitted.count(["t003"]) == 2 and ["t002"] in executor.submitted


def test_refused_entries_are_error_rows_without_a_worker() -> None:
    refused = [TrackRef(url="/etc/passwd", track_id="r1", rejected="outside the catalogue")]
    executor, sink = FakeExecutor(capacity=2), Sink()
    progress = RunScheduler(executor, SETTINGS, sink).run(shard([*tracks(2), *refused], 10))
    (outcomes,) = sink.finished.values()
    bad = [o for o in outcomes if o.track_id == "r1"]
    assert bad[0].error_type == "source" and bad[0].rows[0]["error"] == "outside the catalogue"
    assert all("r1" not in b for b in executor.submitted) and progress.errors_by_type == {"source": 1}


def test_a_stop_lets_running_batches_finish_and_leaves_open_shards_unrecorded() -> None:
    executor, sink, stop = FakeExecutor(capacity=2, delay_s=0.2), Sink(), threading.Event()
    scheduler = RunScheduler(executor, SETTINGS, sink, stop=stop)
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    progress = scheduler.run(shard(tracks(40), 4))
    assert scheduler.stopped and not progress.planning_done
    assert 0 < progress.done < 40
    recorded = sum(len(o) for o in sink.finished.values())
    assert recorded <= progress.done and scheduler.incomplete_shards >= 0
    assert not executor.cancelled  # the running batches finished within the grace period


def test_planning_errors_stop_the_run_with_the_cause() -> None:
    def broken() -> Iterator[Shard]:
        yield Shard(0, tuple(tracks(2)))
        raise OSError("cannot list s3://cat/b/")

    with pytest.raises(StemflowError, match="planning failed: cannot list"):
        RunScheduler(FakeExecutor(capacity=2), SETTINGS, Sink()).run(broken())


def test_a_pool_that_never_works_stops_the_run() -> None:
    with pytest.raises(StemflowError, match="keeps failing.*no worker could start"):
        RunScheduler(FakeExecutor(capacity=2, fail_all=True), SETTINGS, Sink()).run(shard(tracks(100), 10))


def test_planning_overlaps_separation() -> None:
    """The first shard is running while the planner is still producing later ones."""
    executor, sink = FakeExecutor(capacity=2), Sink()
    submitted_when: dict[int, int] = {}

    def slow_plan() -> Iterator[Shard]:
        for s in shard(tracks(6), 2):
            submitted_when[s.index] = len(executor.submitted)
            yield s
            time.sleep(0.2)

    RunScheduler(executor, SETTINGS, sink).run(slow_plan())
    assert submitted_when[2] >= 1  # by the time the last shard was planned, work had been submitted
    assert sorted(sink.finished) == [0, 1, 2]
