"""Crash recovery: record what runs that did not finish committed, looking only at their journals.

A run journals each shard before its tracks go to the workers
(:mod:`stemflow.store.journal`) and removes the entry once the shard's Parquet
part and index delta are stored. After a crash (a killed flow, a lost node, a
failed Parquet write, a stop before a shard completed) entries remain.
:func:`recover_unfinished_runs` lists ``runs/journal/`` (one request), and for
each run that is finished, cancelled, or silent for longer than the lease:

- if the shard's part exists, its ``ok`` track ids go to the index;
- else the shard's markers are read (one GET per track of the shard): tracks
  that run committed get their rows rebuilt from their markers
  (:func:`stemflow.stage.finishing.rows_from_marker`) into *that run's* part for
  the shard, written create-only under that run's id and part index, so rows
  are never recorded twice, even if the run was alive after all and writes the
  part itself (it then replaces the recovered one: same URL);
- the entry is deleted; a run left with no entries and still marked
  ``running`` is marked ``crashed``.

A run that may still be alive is left alone: its manifest's heartbeat
(``progress.updated_at``, rewritten every ``heartbeat_s``) is recent and, when it
ran on this machine, its process still exists. At the end of its own work a
run looks again at those (waiting at most their lease: three heartbeats and
10 s) and recovers the ones that stayed silent. (Recovering a run that was in
fact alive would still record nothing twice: the part is written create-only
under that run's own id and index, and the run's own part replaces it.)

Nothing else of the output is read. What cannot be read (a corrupt marker, a
marker without record columns, a malformed entry) is quarantined and the
recovery goes on.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from stemflow.errors import StorageError
from stemflow.stage.finishing import partition_columns, rows_from_marker
from stemflow.stage.settings import ShardJob
from stemflow.store.commit import CommitMarker, marker_url, track_url, utc_now_iso
from stemflow.store.index import write_delta
from stemflow.store.journal import JournalEntry, delete_journals, iter_journal, runs_with_journals
from stemflow.store.objects import exists, read_many
from stemflow.store.paths import StorageOptions
from stemflow.store.quarantine import Quarantine
from stemflow.store.record_scan import PartRef, read_part
from stemflow.store.records import create_part, part_url, stem_rows
from stemflow.store.runs import FINISHED_STATUSES, RunManifest, read_run_manifest, write_run_manifest
from stemflow.tempfiles import pid_alive

logger = logging.getLogger(__name__)

RECOVERY_DELTA_START = 500_000
"""Index deltas written by recovery are numbered from here (a run's own deltas count from 0)."""

DEFAULT_HEARTBEAT_S = 10.0
"""The heartbeat assumed for a run manifest that does not state its own (``progress.heartbeat_s``)."""


@dataclass
class RecoveryReport:
    """What recovery did: runs looked at, tracks whose rows it wrote, tracks it added to the index."""

    runs: list[str] = field(default_factory=list)
    skipped_alive: list[str] = field(default_factory=list)
    recorded_tracks: int = 0
    indexed_tracks: int = 0
    parts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"runs": list(self.runs), "skipped_alive": list(self.skipped_alive),
                "recorded_tracks": self.recorded_tracks, "indexed_tracks": self.indexed_tracks,
                "parts": list(self.parts)}


def recover_unfinished_runs(output_url: str, model_id: str, *, current_run_id: str,
                            storage_options: StorageOptions = None, quarantine: Quarantine | None = None,
                            only: Sequence[str] | None = None, wait: bool = False) -> RecoveryReport:
    """Recover every unfinished run's journalled shards of ``model_id`` (see the module docstring).

    A run that may still be alive (see :func:`run_is_alive`) is left alone and
    listed in ``skipped_alive``; with ``wait`` (the end of a run, ``only`` those)
    its heartbeat is watched until it beats (alive: left alone) or its lease
    runs out (dead: recovered).
    """
    quarantine = quarantine if quarantine is not None else Quarantine()
    report = RecoveryReport()
    sequence = RECOVERY_DELTA_START + (100_000 if wait else 0)
    candidates = runs_with_journals(output_url, storage_options=storage_options) if only is None else list(only)
    for run_id in candidates:
        if run_id == current_run_id:
            continue
        manifest = _manifest_or_none(output_url, run_id, storage_options, quarantine)
        if manifest is not None and wait:
            manifest = _await_verdict(output_url, manifest, storage_options, quarantine)
        if manifest is not None and run_is_alive(manifest):
            report.skipped_alive.append(run_id)
            continue
        entries = [(url, e) for url, e in iter_journal(output_url, run_id, storage_options=storage_options,
                                                       quarantine=quarantine) if e.model_id == model_id]
        if not entries:
            continue
        report.runs.append(run_id)
        for _, entry in entries:
            committed = _recover_entry(output_url, entry, storage_options, quarantine, report)
            if committed:
                write_delta(output_url, model_id, current_run_id, sequence, committed,
                            storage_options=storage_options)
                sequence += 1
                report.indexed_tracks += len(committed)
            delete_journals(output_url, run_id, [entry.shard_index], storage_options=storage_options)
        _mark_crashed(output_url, run_id, manifest, current_run_id, storage_options)
    if report.runs:
        logger.info("recovered %d tracks of unfinished runs %s", report.recorded_tracks, report.runs)
    return report


def _manifest_or_none(output_url: str, run_id: str, storage_options: StorageOptions,
                      quarantine: Quarantine) -> RunManifest | None:
    try:
        return read_run_manifest(output_url, run_id, storage_options=storage_options)
    except FileNotFoundError:
        return None
    except StorageError as e:
        quarantine.add("run_manifest", f"{output_url}/runs/{run_id}.json", str(e))
        return None


def lease_s(manifest: RunManifest) -> float:
    """How long a run may stay silent before it counts as dead: three heartbeats and 10 s."""
    try:
        beat = float(manifest.progress.get("heartbeat_s") or DEFAULT_HEARTBEAT_S)
    except (TypeError, ValueError):
        beat = DEFAULT_HEARTBEAT_S
    return 3 * beat + 10.0


def run_is_alive(manifest: RunManifest) -> bool:
    """Whether a run may still be writing: not finished, its process not known dead, its heartbeat recent.

    A run on this same machine whose process is gone is dead at once; elsewhere
    a run is dead when its heartbeat (the manifest's ``progress.updated_at``) is
    older than :func:`lease_s`.
    """
    if manifest.status in FINISHED_STATUSES:
        return False
    progress = manifest.progress
    if progress.get("host") == socket.gethostname() and isinstance(progress.get("pid"), int):
        if not pid_alive(int(progress["pid"])):
            return False
    beat = progress.get("updated_at") or manifest.started_at
    try:
        age = (datetime.now(timezone.utc) - datetime.fromisoformat(str(beat))).total_seconds()
    except ValueError:
        return False
    return age < lease_s(manifest)


def _await_verdict(output_url: str, manifest: RunManifest, storage_options: StorageOptions,
                   quarantine: Quarantine) -> RunManifest | None:
    """Re-read a run's manifest until it beats again (alive) or stays silent past its lease (dead)."""
    first_beat = manifest.progress.get("updated_at")
    deadline = time.monotonic() + lease_s(manifest)
    while run_is_alive(manifest) and time.monotonic() < deadline:
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
        fresh = _manifest_or_none(output_url, manifest.run_id, storage_options, quarantine)
        if fresh is None:
            return None
        if fresh.progress.get("updated_at") != first_beat:
            return fresh  # it beat: alive
        manifest = fresh
    return manifest


def _recover_entry(output_url: str, entry: JournalEntry, storage_options: StorageOptions,
                   quarantine: Quarantine, report: RecoveryReport) -> list[str]:
    """Record one journalled shard; the ids of its committed tracks."""
    part = part_url(output_url, entry.model_id, entry.run_date, entry.run_id, entry.part_index)
    if exists(part, storage_options):
        try:
            table = read_part(PartRef(part, entry.model_id, entry.run_date, entry.run_id),
                              ("track_id", "status"), storage_options=storage_options)
            return sorted({r["track_id"] for r in table.to_pylist() if r["status"] == "ok"})
        except StorageError as e:
            quarantine.add("metadata_file", part, str(e))
    job = ShardJob(output_url, entry.model_id, entry.run_id, entry.run_date)  # names the rows' partition
    tracks = list({str(t["track_id"]): t for t in entry.tracks}.values())
    markers = read_many([marker_url(output_url, entry.model_id, str(t["track_id"])) for t in tracks],
                        storage_options)
    rows: list[dict[str, Any]] = []
    committed: list[str] = []
    for track, data in zip(tracks, markers):
        if data is None:
            continue
        url = marker_url(output_url, entry.model_id, str(track["track_id"]))
        try:
            marker = CommitMarker.from_json(data)
        except StorageError as e:
            quarantine.add("marker", url, str(e))
            continue
        committed.append(marker.track_id)
        if marker.run_id == entry.run_id:
            rows.extend(_rows_of(marker, job, output_url, url, quarantine))
    if rows and create_part(output_url, entry.model_id, entry.run_date, entry.run_id, entry.part_index, rows,
                            storage_options=storage_options):
        report.parts.append(part)
        report.recorded_tracks += len({r["track_id"] for r in rows})
    return committed


def _rows_of(marker: CommitMarker, job: ShardJob, output_url: str, url: str,
             quarantine: Quarantine) -> list[dict[str, Any]]:
    """The marker's rows; without record columns, rows of its stem list only (quarantined as such)."""
    try:
        return rows_from_marker(marker, job)
    except StorageError as e:
        quarantine.add("marker_record", url, str(e))
    base = track_url(output_url, marker.model_id, marker.track_id)
    stems = {s.stem: {"stem_url": f"{base}/{s.file_name}", "stem_bytes": s.size, "stem_sha256": s.sha256}
             for s in marker.stems}
    track = {"track_id": marker.track_id, "source_url": marker.source_url}
    return stem_rows({**track, **partition_columns(job)}, stems)


def _mark_crashed(output_url: str, run_id: str, manifest: RunManifest | None, by_run: str,
                  storage_options: StorageOptions) -> None:
    """A run recovered and still marked ``running``: mark it ``crashed`` (its counts stay as they were)."""
    if manifest is None or manifest.status != "running":
        return
    summary = {**manifest.summary, "recovered_by": by_run}
    crashed = replace(manifest, status="crashed", finished_at=utc_now_iso(), summary=summary)
    write_run_manifest(output_url, crashed, storage_options=storage_options)

