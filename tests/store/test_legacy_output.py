"""An output written by stemflow 0.1.0 before the regrouping is read by today's code.

``data/legacy-output-0.1.0/`` was made by the pre-regroup code (commit a2f8f76):
``stemflow run`` over two 0.5 s tone tracks and one undecodable file with the
tiny Mel-RoFormer fixture, two shards. It holds two committed tracks (stems and
markers), two Parquet parts (4 ok rows, 1 error row) and the run manifest.
Everything here is read from a copy, so the fixture is never modified.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stemflow.stage.finishing import rows_from_marker
from stemflow.stage.settings import ShardJob
from stemflow.store.commit import committed_tracks, read_marker, track_url, verify_track
from stemflow.store.marker import MARKER_FORMAT
from stemflow.store.records import FILE_SCHEMA, RECORD_SCHEMA, read_records, rows_to_table
from stemflow.store.runs import read_run_manifest

DATA = Path(__file__).parent / "data" / "legacy-output-0.1.0"
MODEL_ID = "custom-model-bfec40ca5532-sc11cb81b"
RUN_ID = "20261202T094539-a8a811cc"
TRACKS = ("80b1c953866970fc6203", "ea7fb498c3c738812a22")


@pytest.fixture
def output(tmp_path: Path) -> str:
    """A copy of the legacy output folder."""
    target = tmp_path / "out"
    shutil.copytree(DATA, target)
    return str(target)


def test_markers_are_read_and_verified(output: str) -> None:
    assert sorted(committed_tracks(output, MODEL_ID)) == list(TRACKS)
    for track_id in TRACKS:
        raw = json.loads((Path(track_url(output, MODEL_ID, track_id)) / "_COMMITTED.json").read_text())
        assert raw["format"] == MARKER_FORMAT == "stemflow.commit/1"
        marker = read_marker(output, MODEL_ID, track_id)
        assert marker is not None
        assert (marker.model_id, marker.track_id, marker.run_id) == (MODEL_ID, track_id, RUN_ID)
        assert [s.stem for s in marker.stems] == ["vocals", "instrumental"]
        for stem in marker.stems:
            assert (Path(track_url(output, MODEL_ID, track_id)) / stem.file_name).stat().st_size == stem.size
        assert marker.source_url.startswith("file:///tmp/legacy/cat/song-")
        assert verify_track(output, MODEL_ID, track_id)


def test_parquet_records_are_read_with_todays_schema(output: str) -> None:
    table = read_records(output, MODEL_ID)
    assert table.schema.equals(RECORD_SCHEMA)
    rows = table.to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    errors = [r for r in rows if r["status"] == "error"]
    assert len(rows) == 5 and len(ok) == 4 and len(errors) == 1
    assert errors[0]["stem"] is None and "AudioDecodeError" in errors[0]["error"]
    assert errors[0]["source_url"] == "file:///tmp/legacy/cat/broken.wav"
    assert {(r["track_id"], r["stem"]) for r in ok} == {(t, s) for t in TRACKS for s in ("vocals", "instrumental")}
    assert {r["run_id"] for r in rows} == {RUN_ID} and {r["model_id"] for r in rows} == {MODEL_ID}
    assert {str(r["run_date"]) for r in rows} == {"2026-12-02"}
    for row in ok:
        marker = read_marker(output, MODEL_ID, row["track_id"])
        (stored,) = [s for s in marker.stems if s.stem == row["stem"]]
        assert (row["stem_sha256"], row["stem_bytes"]) == (stored.sha256, stored.size)
        assert row["duration_s"] == pytest.approx(0.5) and row["sample_rate"] == 44100


def test_rows_are_rebuilt_from_legacy_markers(output: str) -> None:
    """Crash recovery rebuilds a track's Parquet rows from its marker: the legacy rows come back equal."""
    table = read_records(output, MODEL_ID).to_pylist()
    job = ShardJob(output_url=output, model_id=MODEL_ID, run_id=RUN_ID, run_date="2026-12-02")
    compared = [c for c in FILE_SCHEMA.names if c != "created_at"]
    for track_id in TRACKS:
        rebuilt = rows_to_table(rows_from_marker(read_marker(output, MODEL_ID, track_id), job)).to_pylist()
        stored = [r for r in table if r["track_id"] == track_id and r["status"] == "ok"]
        assert [r["stem"] for r in rebuilt] == ["vocals", "instrumental"]
        by_stem = {r["stem"]: r for r in stored}
        for row in rebuilt:
            assert {c: row[c] for c in compared} == {c: by_stem[row["stem"]][c] for c in compared}
            assert 0.0 <= row["bleed_ratio"] <= 1.0


def test_the_run_manifest_is_read(output: str) -> None:
    manifest = read_run_manifest(output, RUN_ID)
    assert manifest.status == "partial"
    assert dict(manifest.counts) == {"errors": 1, "ok": 2, "planned": 3, "recovered": 0, "shards": 2, "skipped": 0}
    assert manifest.inputs["out_url"] == "/tmp/legacy/out" and manifest.inputs["model_id"] == MODEL_ID
    assert manifest.versions["stemflow"] == "0.1.0"


def test_status_of_a_legacy_output(output: str) -> None:
    pytest.importorskip("prefect")
    from pipelines.runtime import catalogue_status

    assert catalogue_status(output) == [
        {"model_id": MODEL_ID, "committed_tracks": 2, "rows": 5, "ok_tracks": 2, "error_rows": 1}
    ]


def test_the_fixture_is_what_the_old_code_wrote() -> None:
    """Guard against the fixture being regenerated with new code: its Parquet parts are the old bytes."""
    parts = sorted(DATA.glob("metadata/**/*.parquet"))
    assert [p.name for p in parts] == ["part-00001.parquet", "part-00002.parquet"]
    versions = {pq.read_table(p).column("stemflow_version").to_pylist()[0] for p in parts}
    assert versions == {"0.1.0"}
