"""Parquet records and run manifests: written by stemflow, read back by pyarrow, pandas and DuckDB."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from stemflow.errors import StorageError
from stemflow.store import records
from stemflow.store import runs

MODEL = "bs-roformer-1297-0123456789ab-cafe"
CREATED = datetime(2026, 11, 24, 10, 30, 0, 123456, tzinfo=timezone.utc)
STEMS = ("vocals", "drums", "bass", "other")


def _measures(k: int) -> dict[str, float]:
    return {
        "peak_dbfs": -1.5 - k, "true_peak_dbtp": -1.2 - k, "loudness_lufs": -14.0 - k, "rms_dbfs": -18.25 - k,
        "clipped_ratio": 0.001 * k, "silence_ratio": 0.1 * k, "stereo_correlation": 0.9 - 0.1 * k,
        "energy_share": 0.25, "bleed_ratio": 0.01 * k,
    }


def _track(i: int) -> dict[str, Any]:
    return {
        "track_id": f"track{i:03d}", "source_url": f"s3://cat/t{i}.wav", "duration_s": 180.5 + i,
        "sample_rate": 44100, "channels_in": 2, "source_sample_rate": 48000, "residual_db": -60.0 - i,
        "processing_s": 12.0, "decode_s": 1.0, "separate_s": 10.0, "encode_s": 1.0,
        "device": "cpu", "stemflow_version": "0.1.0",
    }


def _ok_rows(out: str, i: int) -> list[dict[str, Any]]:
    stems = {
        name: {"stem_url": f"{out}/stems/{MODEL}/track{i:03d}/{name}.flac", "stem_bytes": 1000 + k,
               "stem_sha256": f"{k:064x}", **_measures(k)}
        for k, name in enumerate(STEMS)
    }
    return records.stem_rows(_track(i), stems)


def test_schema_constants() -> None:
    assert records.RECORD_SCHEMA.names[:3] == ["model_id", "run_date", "run_id"]
    assert set(records.FILE_SCHEMA.names) == set(records.RECORD_SCHEMA.names) - set(records.PARTITION_COLUMNS)
    assert records.STEM_MEASURES == {
        "peak_dbfs", "true_peak_dbtp", "loudness_lufs", "rms_dbfs", "clipped_ratio", "silence_ratio",
        "stereo_correlation", "energy_share", "bleed_ratio",
    }
    table = records.schema_markdown().splitlines()
    assert len(table) == 2 + len(records.COLUMNS)
    assert "| `loudness_lufs` | double | LUFS | stem |" in records.schema_markdown()


def test_stored_schema_is_unchanged() -> None:
    # The Parquet columns and types as stemflow 0.1 wrote them (parts written before read back the same),
    # then the columns added since, at the end, nullable: old parts read back with nulls in them.
    assert [(f.name, str(f.type)) for f in records.RECORD_SCHEMA][33:] == [
        ("residual_stem", "string"), ("error_type", "string"), ("source_extra", "string")]
    assert all(f.nullable for f in records.RECORD_SCHEMA)
    assert [(f.name, str(f.type)) for f in records.RECORD_SCHEMA][:33] == [
        ("model_id", "string"), ("run_date", "date32[day]"), ("run_id", "string"), ("track_id", "string"),
        ("source_url", "string"), ("stem", "string"), ("stem_url", "string"), ("stem_bytes", "int64"),
        ("stem_sha256", "string"), ("status", "string"), ("error", "string"), ("duration_s", "double"),
        ("sample_rate", "int32"), ("channels_in", "int16"), ("source_sample_rate", "int32"),
        ("peak_dbfs", "double"), ("true_peak_dbtp", "double"), ("loudness_lufs", "double"), ("rms_dbfs", "double"),
        ("clipped_ratio", "double"), ("silence_ratio", "double"), ("stereo_correlation", "double"),
        ("energy_share", "double"), ("bleed_ratio", "double"), ("residual_db", "double"), ("processing_s", "double"),
        ("decode_s", "double"), ("separate_s", "double"), ("encode_s", "double"), ("quality_s", "double"),
        ("device", "string"), ("stemflow_version", "string"), ("created_at", "timestamp[us, tz=UTC]"),
    ]


# A run manifest exactly as stemflow 0.1 wrote it (before the package was regrouped).
RUN_MANIFEST_V1 = b"""{
 "counts": {
  "committed": 2,
  "errors": 1,
  "planned": 3
 },
 "finished_at": "2026-11-24T10:05:00+00:00",
 "inputs": {
  "catalogue_url": "s3://cat/",
  "model": "bs-roformer",
  "out_url": "s3://out/"
 },
 "run_id": "run-a",
 "settings": {
  "chunk_seconds": 8.0
 },
 "started_at": "2026-11-24T10:00:00+00:00",
 "status": "succeeded",
 "versions": {
  "stemflow": "0.1.0"
 }
}"""


def test_run_manifest_format_is_unchanged() -> None:
    manifest = runs.RunManifest(
        run_id="run-a", status="succeeded", started_at="2026-11-24T10:00:00+00:00",
        finished_at="2026-11-24T10:05:00+00:00",
        inputs={"catalogue_url": "s3://cat/", "out_url": "s3://out/", "model": "bs-roformer"},
        settings={"chunk_seconds": 8.0}, versions={"stemflow": "0.1.0"},
        counts={"planned": 3, "committed": 2, "errors": 1},
    )
    assert runs.RunManifest.from_json(RUN_MANIFEST_V1) == manifest
    assert manifest.to_json() == RUN_MANIFEST_V1


def test_rows_and_validation() -> None:
    rows = _ok_rows("s3://o", 1)
    assert [r["stem"] for r in rows] == list(STEMS)
    assert all(r["status"] == "ok" and r["error"] is None and r["duration_s"] == 181.5 for r in rows)
    err = records.error_row({"track_id": "t9", "source_url": "s3://cat/bad.wav"}, "AudioDecodeError: empty file")
    assert err["stem"] is None and err["status"] == "error" and err["error"] == "AudioDecodeError: empty file"
    with pytest.raises(StorageError, match=r"unknown record column\(s\) \['spectral_flux'\]"):
        records.stem_rows(_track(1), {"vocals": {"spectral_flux": 1.0}})
    with pytest.raises(StorageError, match="per-stem column"):
        records.stem_rows({**_track(1), "peak_dbfs": -1.0}, {"vocals": {}})
    with pytest.raises(StorageError, match="at least one stem"):
        records.stem_rows(_track(1), {})
    with pytest.raises(StorageError, match="status"):
        records.rows_to_table([{"track_id": "t", "status": "maybe"}])
    with pytest.raises(StorageError, match="schema"):
        records.rows_to_table([{"track_id": "t", "status": "ok", "duration_s": "long"}])


def _write_two_runs(out: str, options: Any) -> list[str]:
    urls = [
        records.write_part(out, MODEL, date(2026, 11, 24), "run-a", 0, _ok_rows(out, 0) + _ok_rows(out, 1),
                           storage_options=options, created_at=CREATED),
        records.write_part(out, MODEL, "2026-11-24", "run-a", 1,
                           [records.error_row({"track_id": "track002", "source_url": "s3://cat/t2.wav"}, "bad")],
                           storage_options=options, created_at=CREATED),
        records.write_part(out, "other-model", "2026-11-25", "20261125", 0, _ok_rows(out, 2),
                           storage_options=options, created_at=CREATED),
    ]
    return urls


def test_write_part_paths_and_round_trip(backend: tuple[str, Any]) -> None:
    out, options = backend
    urls = _write_two_runs(out, options)
    assert urls[0] == f"{out}/metadata/model_id={MODEL}/run_date=2026-11-24/run_id=run-a/part-00000.parquet"
    table = records.read_records(out, MODEL, storage_options=options)
    assert table.schema == records.RECORD_SCHEMA
    assert table.num_rows == 9
    rows = sorted(table.to_pylist(), key=lambda r: (r["track_id"], r["stem"] or ""))
    expected_ok = sorted(_ok_rows(out, 0) + _ok_rows(out, 1), key=lambda r: (r["track_id"], r["stem"]))
    for got, want in zip(rows[:8], expected_ok, strict=True):
        assert got == {**{n: None for n in records.RECORD_SCHEMA.names}, **want, "model_id": MODEL,
                       "run_date": date(2026, 11, 24), "run_id": "run-a", "created_at": CREATED}
    assert rows[8]["status"] == "error" and rows[8]["stem"] is None and rows[8]["error"] == "bad"
    everything = records.read_records(out, storage_options=options)
    assert everything.num_rows == 13
    assert sorted(set(everything.column("run_id").to_pylist())) == ["20261125", "run-a"]
    assert records.read_records(out, "no-such-model", storage_options=options).num_rows == 0


def test_read_records_of_empty_output(backend: tuple[str, Any]) -> None:
    out, options = backend
    assert records.read_records(out, storage_options=options) == records.RECORD_SCHEMA.empty_table()


def test_part_rewrite_replaces_not_duplicates(tmp_path: Path) -> None:
    out = str(tmp_path)
    records.write_part(out, MODEL, "2026-11-24", "r", 3, _ok_rows(out, 0), created_at=CREATED)
    records.write_part(out, MODEL, "2026-11-24", "r", 3, _ok_rows(out, 0), created_at=CREATED)
    assert records.read_records(out).num_rows == 4
    files = sorted(p.name for p in (tmp_path / "metadata").rglob("*") if p.is_file())
    assert files == ["part-00003.parquet"]


def test_part_file_is_plain_parquet(tmp_path: Path) -> None:
    url = records.write_part(str(tmp_path), MODEL, "2026-11-24", "r", 0, _ok_rows("o", 0), created_at=CREATED)
    table = pq.read_table(url)
    assert table.schema == records.FILE_SCHEMA
    assert table.column("loudness_lufs").to_pylist() == [-14.0, -15.0, -16.0, -17.0]


def test_pandas_reads_hive_partitions(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    _write_two_runs(str(tmp_path), None)
    frame = pd.read_parquet(tmp_path / "metadata")
    assert len(frame) == 13
    vocals = frame[(frame["track_id"] == "track001") & (frame["stem"] == "vocals")]
    assert len(vocals) == 1
    row = vocals.iloc[0]
    assert str(row["model_id"]) == MODEL and str(row["run_id"]) == "run-a"
    assert row["peak_dbfs"] == -1.5 and row["residual_db"] == -61.0 and row["stem_bytes"] == 1000
    assert row["created_at"] == pd.Timestamp(CREATED)
    assert frame.loc[frame["status"] == "error", "stem"].isna().all()


def test_duckdb_reads_hive_partitions(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    _write_two_runs(str(tmp_path), None)
    query = (
        f"SELECT model_id, run_date, run_id, track_id, stem, status, loudness_lufs, energy_share "
        f"FROM read_parquet('{tmp_path}/metadata/**/*.parquet', hive_partitioning = true, "
        "hive_types = {'model_id': VARCHAR, 'run_date': DATE, 'run_id': VARCHAR}) "
        "ORDER BY model_id, track_id, stem NULLS LAST"
    )
    result = duckdb.sql(query).fetchall()
    assert len(result) == 13
    assert result[0] == (MODEL, date(2026, 11, 24), "run-a", "track000", "bass", "ok", -16.0, 0.25)
    assert result[8] == (MODEL, date(2026, 11, 24), "run-a", "track002", None, "error", None, None)
    assert result[9][:3] == ("other-model", date(2026, 11, 25), "20261125")
    counts = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{tmp_path}/metadata/**/*.parquet', hive_partitioning = true) "
        "WHERE status = 'ok' GROUP BY model_id, track_id, stem HAVING count(*) > 1"
    ).fetchall()
    assert counts == []


def test_invalid_part_names(tmp_path: Path) -> None:
    for model_id, run_id, day, index in [("../x", "r", "2026-11-24", 0), (MODEL, "a/b", "2026-11-24", 0),
                                         (MODEL, "r", "24/11/2026", 0), (MODEL, "r", "2026-11-24", -1)]:
        with pytest.raises(StorageError):
            records.write_part(str(tmp_path), model_id, day, run_id, index, _ok_rows("o", 0))
    assert list(tmp_path.rglob("*.parquet")) == []


def test_run_manifest_round_trip(backend: tuple[str, Any]) -> None:
    out, options = backend
    running = runs.RunManifest(
        run_id="run-a", status="running", started_at="2026-11-24T10:00:00+00:00",
        inputs={"catalogue_url": "s3://cat/", "out_url": out, "model": "bs-roformer-1297"},
        settings={"chunk_size": 352800, "num_overlap": 2, "precision": "fp32", "format": "flac24"},
        versions={"stemflow": "0.1.0", "torch": "2.13.0"}, counts={"planned": 10, "shards": 1},
    )
    url = runs.write_run_manifest(out, running, storage_options=options)
    assert url == f"{out}/runs/run-a.json"
    assert runs.read_run_manifest(out, "run-a", storage_options=options) == running
    assert runs.read_run_manifest(out, "run-a", storage_options=options).inputs == running.inputs
    done = runs.RunManifest(**{**running.__dict__, "status": "succeeded",
                               "finished_at": "2026-11-24T11:00:00+00:00",
                               "counts": {"planned": 10, "committed": 9, "errors": 1}})
    runs.write_run_manifest(out, done, storage_options=options)
    back = runs.read_run_manifest(out, "run-a", storage_options=options)
    assert back.status == "succeeded" and dict(back.counts) == {"planned": 10, "committed": 9, "errors": 1}
    with pytest.raises(FileNotFoundError):
        runs.read_run_manifest(out, "missing", storage_options=options)


def test_run_manifest_validation() -> None:
    with pytest.raises(StorageError, match="status"):
        runs.RunManifest(run_id="r", status="done", started_at="x")
    with pytest.raises(StorageError, match="integers"):
        runs.RunManifest(run_id="r", status="running", started_at="x", counts={"planned": 1.5})
    with pytest.raises(StorageError, match="unsafe"):
        runs.RunManifest(run_id="../r", status="running", started_at="x")
    with pytest.raises(StorageError, match="malformed"):
        runs.RunManifest.from_json(b"[1, 2]")


def test_rows_are_normalised_for_quality_dicts(tmp_path: Path) -> None:
    track = {**_track(5), "model_id": MODEL, "run_date": "2026-11-24", "run_id": "r",
             "bleed_ratio_vocals": 0.125, "bleed_ratio_drums": float("nan")}
    stems = {"vocals": {"sample_rate_hz": 44100.0, "loudness_lufs": float("nan"), "peak_dbfs": -3.0},
             "drums": {"sample_rate_hz": 44100.0, "loudness_lufs": -20.0, "peak_dbfs": -6.0}}
    rows = records.stem_rows(track, stems)
    records.write_part(str(tmp_path), MODEL, "2026-11-24", "r", 0, rows, created_at=CREATED)
    back = {r["stem"]: r for r in records.read_records(str(tmp_path)).to_pylist()}
    assert back["vocals"]["bleed_ratio"] == 0.125 and back["drums"]["bleed_ratio"] is None
    assert back["vocals"]["loudness_lufs"] is None and back["drums"]["loudness_lufs"] == -20.0
    assert back["vocals"]["sample_rate"] == 44100 and back["vocals"]["run_id"] == "r"
    assert back["vocals"]["stemflow_version"] == "0.1.0"  # _track() sets it explicitly
    error_only = records.rows_to_table([records.error_row({"track_id": "e"}, "boom")])
    from stemflow import __version__

    assert error_only.column("stemflow_version").to_pylist() == [__version__]
    with pytest.raises(StorageError, match="run_id='r' but the part is for 'other'"):
        records.write_part(str(tmp_path), MODEL, "2026-11-24", "other", 1, rows)
    with pytest.raises(StorageError, match="disagrees"):
        records.rows_to_table([{**rows[0], "sample_rate_hz": 48000.0}])


def test_quality_module_output_is_recordable(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    quality = pytest.importorskip("stemflow.measures.quality")
    rng = np.random.default_rng(0)
    sample_rate = 8000
    vocals = (0.1 * rng.standard_normal((2, sample_rate))).astype(np.float32)
    drums = (0.2 * rng.standard_normal((2, sample_rate))).astype(np.float32)
    mixture = vocals + drums
    stems = {"vocals": vocals, "drums": drums}
    track = {"track_id": "q1", "source_url": "s3://cat/q.wav", "status": "ok",
             **quality.track_quality(mixture, stems)}
    stem_columns = {name: quality.stem_quality(audio, sample_rate, mixture) for name, audio in stems.items()}
    rows = records.stem_rows(track, stem_columns)
    records.write_part(str(tmp_path), MODEL, "2026-11-24", "q", 0, rows, created_at=CREATED)
    back = {r["stem"]: r for r in records.read_records(str(tmp_path)).to_pylist()}
    for name in stems:
        assert back[name]["sample_rate"] == sample_rate
        assert back[name]["duration_s"] == pytest.approx(1.0)
        assert back[name]["peak_dbfs"] == pytest.approx(stem_columns[name]["peak_dbfs"])
        assert back[name]["bleed_ratio"] == pytest.approx(track[f"bleed_ratio_{name}"])
    assert back["vocals"]["energy_share"] == pytest.approx(
        float((vocals.astype(np.float64) ** 2).sum() / (mixture.astype(np.float64) ** 2).sum()), rel=1e-4
    )
