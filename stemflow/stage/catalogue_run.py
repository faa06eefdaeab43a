"""A catalogue run, start to finish, without Prefect: recover, plan against the index, separate, record.

The flows (``pipelines/``) and the CLI's ``--dry-run`` call this; it holds no
Prefect and imports Ray only when it separates (:mod:`stemflow.stage.ray_adapter`).

1. **Recover** what runs that did not finish committed (their journals only,
   :mod:`stemflow.stage.recovery`).
2. **Open the committed index** of the model (:mod:`stemflow.store.index`; built
   once from the Parquet ``ok`` rows when the output has none).
3. **Plan** as a stream (:func:`stemflow.catalogue.planning.plan_stream`): the
   listing or manifest in batches, anti-joined with the index, in shards.
4. **Separate** on one long-lived pool (:func:`stemflow.stage.ray_adapter.run_stage`)
   while planning goes on; each shard is journalled, then recorded
   (:class:`~stemflow.stage.output_sink.OutputSink`).
5. **Compact** the index when deltas pile up.

Requests on a no-op nightly run over a committed catalogue: the listing pages
(or the manifest's reads), one LIST and a few GETs for the index, a LIST of
``runs/journal/``, the run manifest writes, and nothing per track.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from stemflow.catalogue.planning import PlanCounts, Shard, plan_stream
from stemflow.errors import StemflowError
from stemflow.hub.spec import ModelSpec
from stemflow.stage.output_sink import OutputSink
from stemflow.stage.progress import RunProgress
from stemflow.stage.recovery import RecoveryReport, recover_unfinished_runs
from stemflow.stage.settings import ShardJob, StageSettings
from stemflow.store.index import CommittedIndex, bootstrap_index, compact_index, load_index
from stemflow.store.paths import StorageOptions
from stemflow.store.quarantine import Quarantine

logger = logging.getLogger(__name__)

COMPACT_AFTER_DELTAS = 8
"""The index is compacted at the end of a run once it has this many delta files."""


@dataclass(frozen=True)
class CatalogueRun:
    """What one run separates and where: the catalogue, the job (output, ids), how it is cut and filtered.

    ``allow_sources``: URL prefixes outside the catalogue's location that manifest
    rows may name; ``only_track_ids``: restrict the run to these tracks.
    """

    catalogue_url: str
    job: ShardJob
    shard_size: int
    allow_sources: tuple[str, ...] = ()
    only_track_ids: frozenset[str] | None = None
    batch_rows: int = 10_000

    @property
    def storage_options(self) -> StorageOptions:
        """The storage options of the catalogue and the output."""
        return self.job.storage_options


@dataclass
class RunResult:
    """What a run did (the flow turns it into the summary and the run manifest)."""

    progress: RunProgress
    plan: PlanCounts
    recovery: RecoveryReport
    quarantine: Quarantine
    sink: OutputSink
    stopped: bool = False
    incomplete_shards: int = 0
    notes: list[str] = field(default_factory=list)


def open_index(output_url: str, model_id: str, *, storage_options: StorageOptions,
               quarantine: Quarantine, write: bool = True) -> CommittedIndex:
    """The committed index of ``model_id``; built from the Parquet records when the output has none yet."""
    index, files = load_index(output_url, model_id, storage_options=storage_options, quarantine=quarantine)
    if files.exists:
        return index
    logger.info("no committed index for %s yet: building it from the Parquet records", model_id)
    return bootstrap_index(output_url, model_id, storage_options=storage_options, quarantine=quarantine,
                           write=write)


def plan_counts(run: CatalogueRun, *, quarantine: Quarantine | None = None) -> PlanCounts:
    """A dry run: read the catalogue and the index, count (catalogue, committed, to do), write nothing."""
    quarantine = quarantine if quarantine is not None else Quarantine()
    index = open_index(run.job.output_url, run.job.model_id, storage_options=run.storage_options,
                       quarantine=quarantine, write=False)
    counts = PlanCounts()
    for _ in _shards(run, index, counts):
        pass
    return counts


def _shards(run: CatalogueRun, index: CommittedIndex, counts: PlanCounts,
            stop: threading.Event | None = None) -> Iterator[Shard]:
    return plan_stream(run.catalogue_url, index=index, shard_size=run.shard_size, counts=counts,
                       storage_options=run.storage_options, exclude=[run.job.output_url],
                       allow_sources=run.allow_sources, batch_rows=run.batch_rows,
                       only_track_ids=run.only_track_ids, should_stop=None if stop is None else stop.is_set)


def execute(run: CatalogueRun, spec: ModelSpec, settings: StageSettings, *,
            stop: threading.Event | None = None, on_progress: Callable[[RunProgress], None] | None = None,
            quarantine: Quarantine | None = None, separator_factory: Callable[[ModelSpec], object] | None = None,
            on_pool: Callable[[object], None] | None = None) -> RunResult:
    """Recover, plan and separate ``run`` on one pool (see the module docstring).

    Raises:
        StemflowError: the catalogue cannot be read, or the pool cannot run at all.
    """
    from stemflow.stage.ray_adapter import run_stage

    job = run.job
    quarantine = quarantine if quarantine is not None else Quarantine()
    recovery = recover_unfinished_runs(job.output_url, job.model_id, current_run_id=job.run_id,
                                       storage_options=job.storage_options, quarantine=quarantine)
    index = open_index(job.output_url, job.model_id, storage_options=job.storage_options, quarantine=quarantine)
    counts = PlanCounts()
    progress = RunProgress()
    sink = OutputSink(job, index_flush_tracks=settings.index_flush_tracks, on_progress=on_progress)
    report = run_stage(_shards(run, index, counts, stop), spec, job, settings, sink, stop=stop, progress=progress,
                       separator_factory=separator_factory, on_pool=on_pool)
    sink.flush()
    if recovery.skipped_alive and not report.stopped:  # runs that looked alive at the start: dead by now?
        late = recover_unfinished_runs(job.output_url, job.model_id, current_run_id=job.run_id,
                                       storage_options=job.storage_options, quarantine=quarantine,
                                       only=recovery.skipped_alive, wait=True)
        recovery = _merged(recovery, late)
    result = RunResult(progress=progress, plan=counts, recovery=recovery, quarantine=quarantine, sink=sink,
                       stopped=report.stopped, incomplete_shards=report.incomplete_shards)
    _compact(job, quarantine, result.notes)
    return result


def _merged(first: RecoveryReport, late: RecoveryReport) -> RecoveryReport:
    """The start-of-run recovery plus the end-of-run one (of the runs that looked alive)."""
    return RecoveryReport(runs=first.runs + late.runs, skipped_alive=late.skipped_alive,
                          recorded_tracks=first.recorded_tracks + late.recorded_tracks,
                          indexed_tracks=first.indexed_tracks + late.indexed_tracks, parts=first.parts + late.parts)


def _compact(job: ShardJob, quarantine: Quarantine, notes: list[str]) -> None:
    try:
        if compact_index(job.output_url, job.model_id, storage_options=job.storage_options,
                         min_deltas=COMPACT_AFTER_DELTAS, quarantine=quarantine):
            notes.append("committed index compacted")
    except StemflowError as e:  # the deltas stay and are read as they are; the next run tries again
        logger.warning("could not compact the committed index of %s: %s", job.model_id, e)


def only_ids(track_ids: Sequence[str] | None) -> frozenset[str] | None:
    """``only_track_ids`` from a flow parameter (``None``: the whole catalogue)."""
    return None if track_ids is None else frozenset(str(t) for t in track_ids)
