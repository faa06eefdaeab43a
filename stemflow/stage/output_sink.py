"""Where a run's shards go: the intent journal before, the Parquet part and the index after.

:class:`OutputSink` is the :class:`~stemflow.stage.scheduler.RunSink` of a
catalogue run (:mod:`stemflow.stage.catalogue_run`):

- ``shard_started``: the shard's journal entry (:mod:`stemflow.store.journal`),
  before any of its tracks reaches a worker;
- ``shard_finished``: the shard's Parquet part (``part-<shard + 1>``: committed
  tracks' rows and error rows; a retried shard replaces its part), then its
  committed track ids (``ok`` and found committed) join the buffered index
  delta; every ``index_flush_tracks`` ids the delta is written and the journal
  entries it covers are deleted. A part that cannot be written (after the
  storage retries) leaves the entry for the next run's recovery, and the run
  goes on;
- ``progress``: handed to the caller (the flow writes the run manifest's
  ``progress`` and a Prefect artifact).

Memory: one shard's rows at a time, plus the buffered ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from stemflow.catalogue.planning import Shard
from stemflow.errors import StemflowError
from stemflow.stage.progress import RunProgress
from stemflow.stage.settings import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, ShardJob, TrackOutcome
from stemflow.store.index import write_delta
from stemflow.store.journal import JournalEntry, delete_journals, write_journal
from stemflow.store.records import write_part

logger = logging.getLogger(__name__)

FAILURES_KEPT = 200
"""Failed tracks listed in full in the run summary (the Parquet error rows hold all of them)."""

PARTS_KEPT = 100
"""Part URLs listed in the run summary (the count is exact)."""


class OutputSink:
    """Journals, records and indexes a run's shards (see the module docstring)."""

    def __init__(self, job: ShardJob, *, index_flush_tracks: int,
                 on_progress: Callable[[RunProgress], None] | None = None) -> None:
        self.job = job
        self.flush_tracks = index_flush_tracks
        self.on_progress = on_progress
        self.parts: list[str] = []
        self.parts_written = 0
        self.unrecorded_shards = 0
        self.failures: list[dict[str, str]] = []
        self._ids: list[str] = []
        self._covered: list[int] = []
        self._delta = 0

    def shard_started(self, shard: Shard) -> None:
        """Journal the shard (raises :class:`StemflowError` if that is impossible: nothing runs unjournalled)."""
        job = self.job
        entry = JournalEntry(run_id=job.run_id, model_id=job.model_id, run_date=job.run_date,
                             shard_index=shard.index, part_index=shard.index + 1,
                             tracks=tuple(t.to_dict() for t in shard.tracks))
        try:
            write_journal(job.output_url, entry, storage_options=job.storage_options)
        except StemflowError as e:
            raise StemflowError(f"cannot journal shard {shard.index} of run {job.run_id}: {e}") from e

    def shard_finished(self, shard: Shard, outcomes: Sequence[TrackOutcome]) -> None:
        """Write the shard's part, then buffer its committed ids for the index."""
        job = self.job
        rows = [row for o in outcomes if o.status != STATUS_SKIPPED for row in o.rows]
        for outcome in outcomes:
            if outcome.status == STATUS_ERROR and len(self.failures) < FAILURES_KEPT:
                self.failures.append({"track_id": outcome.track_id, "source_url": outcome.source_url,
                                      "error_type": outcome.error_type or "internal", "error": outcome.error or ""})
        if rows:
            try:
                url = write_part(job.output_url, job.model_id, job.run_date, job.run_id, shard.index + 1, rows,
                                 storage_options=job.storage_options)
            except StemflowError as e:
                logger.error("shard %d: cannot write its Parquet part (%s); the next run's recovery records it",
                             shard.index, e)
                self.unrecorded_shards += 1
                return
            self.parts_written += 1
            if len(self.parts) < PARTS_KEPT:
                self.parts.append(url)
        self._ids.extend(o.track_id for o in outcomes if o.status in (STATUS_OK, STATUS_SKIPPED))
        self._covered.append(shard.index)
        if len(self._ids) >= self.flush_tracks:
            self.flush()

    def progress(self, progress: RunProgress) -> None:
        """Pass the progress on."""
        if self.on_progress is not None:
            self.on_progress(progress)

    def flush(self) -> None:
        """Write the buffered index delta, then delete the journal entries it covers."""
        job = self.job
        try:
            if self._ids:
                write_delta(job.output_url, job.model_id, job.run_id, self._delta, self._ids,
                            storage_options=job.storage_options)
                self._delta += 1
            delete_journals(job.output_url, job.run_id, self._covered, storage_options=job.storage_options)
        except StemflowError as e:  # the entries stay: the next run's recovery indexes those shards
            logger.warning("cannot update the committed index of %s: %s", job.model_id, e)
        self._ids, self._covered = [], []
