"""``stemflow evaluate`` and ``stemflow report`` as a user runs them, on the MUSDB18 excerpt stempeg ships.

The offline model ``spleeter-2stems`` is scored on the first 6 s of "The Easton
Ellises - Falcon 69" (every stream of the file ends in a decoder burst at ~6.04 s).
Numbers measured once (torch 2.13 CPU) and pinned: Spleeter runs as its authors run
it (one STFT over the track), so its scores are the original TensorFlow Spleeter's;
the mixture baseline follows from the references alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PINNED = {  # (model, stem) -> (cSDR median, uSDR mean) in dB, first 6 s
    ("spleeter-2stems", "vocals"): (4.17, 5.47),
    ("spleeter-2stems", "instrumental"): (11.81, 12.14),
    ("mixture", "vocals"): (-6.23, -7.11),
    ("mixture", "instrumental"): (6.12, 6.98),
}


def _stemflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stemflow", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.prefect
def test_cli_evaluate_spleeter_on_the_musdb_excerpt_then_report(tmp_path: Path) -> None:
    stempeg = pytest.importorskip("stempeg")
    try:
        from stemflow.models.spleeter.convert import find_spleeter_checkpoint

        find_spleeter_checkpoint("2stems")
    except Exception as e:  # noqa: BLE001 - any reason the offline model is missing
        pytest.skip(f"the offline spleeter-2stems model is not installed: {e}")
    env = {**os.environ, "STEMFLOW_CACHE": str(tmp_path / "cache"), "COLUMNS": "220",
           "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    out = tmp_path / "out"
    run = _stemflow("evaluate", str(stempeg.example_stem_path()), "--model", "spleeter-2stems", "-o", str(out),
                    "--engine", "local", "--max-seconds", "6", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    printed = {}
    for line in run.stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if len(cells) >= 5 and cells[2] == "1":
            printed[(cells[0], cells[1])] = (float(cells[3]), float(cells[4]))
    assert ("mixture", "drums") in printed and ("mixture", "bass") in printed  # the baseline rows
    for key, values in PINNED.items():
        assert printed[key] == pytest.approx(values, abs=0.02), key
    assert "cSDR median (dB)" in run.stdout and "uSDR mean (dB)" in run.stdout
    (eval_dir,) = (out / "evaluation").iterdir()
    metrics = pq.read_table(eval_dir / "metrics.parquet").to_pylist()
    assert len(metrics) == 2 + 5 and all(r["status"] == "ok" and r["duration_s"] == 6.0 for r in metrics)
    assert (eval_dir / "leaderboard.md").read_text().count("| mixture |") == 5

    report = _stemflow("report", str(out), "--name", "eval", env=env)
    assert report.returncode == 0, report.stderr[-3000:]
    page = (out / "reports" / "eval.html").read_text()
    assert f"Evaluation {eval_dir.name}" in page and page.count("data:image/png;base64,") == 2
