"""The catalogue commands of the README, run exactly as written (those that need no network).

``stemflow run catalogue.parquet ./out``, its ``--dry-run`` and ``stemflow status ./out --json``
in a folder holding a Parquet manifest, with the default (offline) model; then the karaoke
command with the dataset on local disk instead of ``s3://datasets/karaoke`` and no
``--output-url`` (its default, ``<dataset>/separation``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.prefect, pytest.mark.ray]


def _readme_commands(repo_root: Path) -> list[str]:
    text = (repo_root / "README.md").read_text()
    section = text[text.index("## The catalogue pipeline"):text.index("## Evaluation against reference stems")]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def _stemflow(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    words = shlex.split(command)
    assert words[0] == "stemflow"
    return subprocess.run([sys.executable, "-m", "stemflow", *words[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_the_readme_catalogue_commands_work_as_written(tmp_path: Path, repo_root: Path,
                                                       catalogue_kit: Any) -> None:
    commands = _readme_commands(repo_root)
    local = [c for c in commands if "s3://" not in c]
    assert local == ["stemflow run catalogue.parquet ./out", "stemflow run catalogue.parquet ./out --dry-run",
                     "stemflow status ./out --json"]
    catalogue_kit.write(tmp_path / "audio", good=2, bad=False, seconds=1.0)
    pq.write_table(pa.table({"url": ["audio/t00.wav", "audio/t01.wav"], "artist": ["A", "B"]}),
                   tmp_path / "catalogue.parquet")
    env = {**os.environ, "PYTHONPATH": str(repo_root), "STEMFLOW_CACHE": str(tmp_path / "cache"),
           "PREFECT_HOME": str(tmp_path / "prefect"), "COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    run = _stemflow(local[0], tmp_path, env)
    assert run.returncode == 0, run.stderr
    assert re.search(r"2 committed, 0 errors", run.stdout.replace("\n", " "))
    dry = _stemflow(local[1], tmp_path, env)
    assert dry.returncode == 0, dry.stderr
    assert "catalogue 2 tracks, 2 already committed, 0 to do" in dry.stdout.replace("\n", " ")
    status = _stemflow(local[2], tmp_path, env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    (model,) = report["models"]
    assert (model["committed_tracks"], model["ok_tracks"], model["indexed_tracks"]) == (2, 2, 2)
    assert report["runs"]["latest"]["status"] == "succeeded" and report["quarantine"]["counts"] == {}

    text = (repo_root / "README.md").read_text()
    karaoke = next(line.strip() for line in text.splitlines()  # the example, not the usage synopsis
                   if line.strip().startswith("stemflow karaoke catalogue.csv "))
    assert "s3://datasets/karaoke" in karaoke and "--output-url" not in karaoke
    (tmp_path / "catalogue.csv").write_text("url,artist\naudio/t00.wav,A\naudio/t01.wav,B\n")
    made = _stemflow(karaoke.replace("s3://datasets/karaoke", "./datasets/karaoke"), tmp_path, env)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "datasets" / "karaoke" / "separation" / "stems").is_dir()
    (version,) = [p for p in (tmp_path / "datasets" / "karaoke").iterdir() if p.name.startswith("v")]
    assert (version / "_COMPLETE.json").exists() and (version / "manifest.parquet").exists()
