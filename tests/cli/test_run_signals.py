"""A real SIGTERM to a real ``stemflow run``: it stops within 30 s, says ``cancelled``, half-commits nothing.

Then the same command runs again and finishes the catalogue, every track
committed once and recorded once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stemflow.store.commit import committed_tracks, verify_track
from stemflow.store.records import read_records

pytestmark = [pytest.mark.slow, pytest.mark.prefect, pytest.mark.ray]

TRACKS = 16


def _command(cat: Path, out: Path, tiny_model: Any) -> list[str]:
    return [sys.executable, "-m", "stemflow", "run", str(cat), str(out), "--model", tiny_model.config,
            "--checkpoint", tiny_model.checkpoint, "--shard-size", "2"]


def test_sigterm_stops_a_run_gracefully_and_the_next_run_finishes_it(
        tmp_path: Path, tiny_model: Any, catalogue_kit: Any, repo_root: Path) -> None:
    # more tracks than the run holds in flight (3 calls x 2 tracks per actor), so the stop always leaves some
    catalogue_kit.write(tmp_path / "cat", good=TRACKS, bad=False, seconds=1.5)
    cat, out = tmp_path / "cat", tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(repo_root), "STEMFLOW_CACHE": str(tmp_path / "cache"),
           "PREFECT_HOME": str(tmp_path / "prefect"), "COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(_command(cat, out, tiny_model), env=env, cwd=repo_root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            if list(out.glob("stems/*/*/_COMMITTED.json")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        stdout, stderr = proc.communicate(timeout=60)
        stopped_after = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert stopped_after < 30, f"took {stopped_after:.1f} s to stop"
    assert proc.returncode == 130, (stdout, stderr)
    assert "cancelled" in stdout and "re-run the same command" in stdout
    (manifest_path,) = out.glob("runs/*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["status"] == "cancelled" and manifest["finished_at"]
    model_id = manifest["inputs"]["model_id"]
    committed = set(committed_tracks(str(out), model_id))
    assert 1 <= len(committed) < TRACKS
    # nothing half-committed: every track folder holding stems has its marker, and every marker verifies
    folders = {p.parent.name for p in out.glob(f"stems/{model_id}/*/*.flac")}
    assert folders == committed
    assert all(verify_track(str(out), model_id, t) for t in committed)

    again = subprocess.run(_command(cat, out, tiny_model), env=env, cwd=repo_root, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    assert sorted(committed_tracks(str(out), model_id)) and len(set(committed_tracks(str(out), model_id))) == TRACKS
    rows = read_records(str(out), model_id).to_pylist()
    ok = Counter((r["track_id"], r["stem"]) for r in rows if r["status"] == "ok")
    assert len(ok) == 2 * TRACKS and max(ok.values()) == 1  # every track recorded once, the stopped run's included
    assert not list(out.glob("runs/journal/*/*.json"))
