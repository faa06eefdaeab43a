"""Crash recovery reads only the journals of runs that did not finish, and records each track once."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from stemflow.stage.recovery import recover_unfinished_runs, run_is_alive
from stemflow.store import index as ix
from stemflow.store.commit import commit_track, marker_url, utc_now_iso, write_stem
from stemflow.store.journal import JournalEntry, iter_journal, runs_with_journals, write_journal
from stemflow.store.objects import write_atomic
from stemflow.store.quarantine import Quarantine
from stemflow.store.records import read_records, write_part
from stemflow.store.runs import RunManifest, read_run_manifest, write_run_manifest

MODEL = "m-rec"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _commit(out: str, track_id: str, run_id: str, *, record: bool = True) -> None:
    stem = write_stem(out, MODEL, track_id, "vocals", "flac", f"audio-{track_id}".encode())
    extra = {"record": {"track": {"track_id": track_id, "source_url": f"s3://cat/{track_id}.wav",
                                  "duration_s": 1.5, "device": "cpu"},
                        "stems": {"vocals": {"stem_url": "u", "stem_bytes": stem.size, "stem_sha256": stem.sha256,
                                             "loudness_lufs": -20.0}}}} if record else {}
    assert commit_track(out, MODEL, track_id, [stem], source_url=f"s3://cat/{track_id}.wav", run_id=run_id,
                        extra=extra)


def _crashed_run(out: str, run_id: str, *, host: str, pid: int, age_s: float = 0.0) -> None:
    started = utc_now_iso()
    write_run_manifest(out, RunManifest(run_id=run_id, status="running", started_at=started,
                                        progress={"updated_at": started, "heartbeat_s": 5.0, "host": host,
                                                  "pid": pid}))


def _journal(out: str, run_id: str, shard: int, ids: list[str]) -> None:
    tracks = tuple({"url": f"s3://cat/{t}.wav", "track_id": t, "extra": {}} for t in ids)
    write_journal(out, JournalEntry(run_id, MODEL, "2026-12-01", shard, shard + 1, tracks))


def test_a_dead_runs_journal_is_recorded_once_and_cleared(tmp_path: Path) -> None:
    import socket

    out = str(tmp_path)
    _crashed_run(out, "run-dead", host=socket.gethostname(), pid=_dead_pid())
    _journal(out, "run-dead", 0, ["a0", "a1", "a2"])
    _journal(out, "run-dead", 1, ["b0", "b1"])
    _commit(out, "a0", "run-dead")
    _commit(out, "a1", "run-other")  # another run won it: indexed, not recorded by this recovery
    _commit(out, "b0", "run-dead", record=False)  # a marker without record columns
    write_atomic(marker_url(out, MODEL, "b1"), b"{not json")  # a corrupt marker
    quarantine = Quarantine()
    report = recover_unfinished_runs(out, MODEL, current_run_id="run-now", quarantine=quarantine)
    assert report.runs == ["run-dead"] and report.recorded_tracks == 2
    assert quarantine.counts == {"marker_record": 1, "marker": 1}
    rows = read_records(out, MODEL).to_pylist()
    assert sorted((r["run_id"], r["track_id"], r["stem"]) for r in rows) == [
        ("run-dead", "a0", "vocals"), ("run-dead", "b0", "vocals")]
    a0 = next(r for r in rows if r["track_id"] == "a0")
    assert a0["loudness_lufs"] == -20.0 and a0["duration_s"] == 1.5 and a0["status"] == "ok"
    b0 = next(r for r in rows if r["track_id"] == "b0")
    assert b0["stem_sha256"] and b0["loudness_lufs"] is None  # rebuilt from the stem list only
    index, _ = ix.load_index(out, MODEL)
    assert index.contains(ix.track_keys(["a0", "a1", "b0", "a2", "b1"])).tolist() == [True, True, True, False, False]
    assert runs_with_journals(out) == [] and read_run_manifest(out, "run-dead").status == "crashed"
    # nothing left: a second recovery records nothing more
    again = recover_unfinished_runs(out, MODEL, current_run_id="run-later")
    assert again.runs == [] and Counter(r["track_id"] for r in read_records(out, MODEL).to_pylist()) == {
        "a0": 1, "b0": 1}


def test_a_live_run_is_left_alone_and_a_written_part_is_not_rewritten(tmp_path: Path) -> None:
    out = str(tmp_path)
    _crashed_run(out, "run-live", host="another-host", pid=1)
    _journal(out, "run-live", 0, ["c0"])
    _commit(out, "c0", "run-live")
    report = recover_unfinished_runs(out, MODEL, current_run_id="run-now")
    assert report.skipped_alive == ["run-live"] and report.runs == []
    assert read_records(out, MODEL).num_rows == 0 and runs_with_journals(out) == ["run-live"]
    assert run_is_alive(read_run_manifest(out, "run-live"))

    # the run wrote its part, then died before deleting its journal: recovery indexes it, writes no rows
    write_part(out, MODEL, "2026-12-01", "run-live", 1, [{"track_id": "c0", "source_url": "s", "stem": "vocals",
                                                          "status": "ok"}])
    manifest = read_run_manifest(out, "run-live")
    write_run_manifest(out, replace(manifest, status="failed"))
    report = recover_unfinished_runs(out, MODEL, current_run_id="run-now")
    assert report.runs == ["run-live"] and report.recorded_tracks == 0 and report.indexed_tracks == 1
    assert read_records(out, MODEL).num_rows == 1 and runs_with_journals(out) == []
    assert read_run_manifest(out, "run-live").status == "failed"  # a finished status is kept


def test_unreadable_journals_and_manifests_are_quarantined(tmp_path: Path) -> None:
    out = str(tmp_path)
    write_atomic(f"{out}/runs/journal/run-x/000000.json", b"[]")
    write_atomic(f"{out}/runs/journal/run-x/notes.txt", b"?")
    write_atomic(f"{out}/runs/run-x.json", b"{broken")
    quarantine = Quarantine()
    report = recover_unfinished_runs(out, MODEL, current_run_id="run-now", quarantine=quarantine)
    assert report.runs == [] and quarantine.counts == {"run_manifest": 1, "journal": 2}
    assert list(iter_journal(out, "run-x")) == []


@pytest.mark.parametrize("status,alive", [("succeeded", False), ("cancelled", False), ("running", True)])
def test_finished_statuses_are_never_alive(tmp_path: Path, status: str, alive: bool) -> None:
    now = utc_now_iso()
    manifest = RunManifest(run_id="r", status=status, started_at=now,
                           progress={"updated_at": now, "heartbeat_s": 5.0, "host": "elsewhere", "pid": 1})
    assert run_is_alive(manifest) is alive
    stale = RunManifest(run_id="r", status="running", started_at="2026-01-01T00:00:00+00:00",
                        progress={"updated_at": "2026-01-01T00:00:00+00:00", "heartbeat_s": 5.0})
    assert not run_is_alive(stale)
