"""Catalogue runs at scale, end to end on real components (moto S3, a local Ray, Prefect's test API).

- a manifest drives a run: extra columns reach the records, refused and missing rows are typed error rows;
- a no-op re-run over a committed catalogue on S3 costs at most 0.25 requests per track (counted on the wire);
- two flows on one output at once never record a track twice;
- what a run cannot read in its output is quarantined, reported, and the run goes on;
- typed flow parameters: a typo is an error that names the field, before anything starts.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stemflow.store.commit import committed_tracks, marker_url
from stemflow.store.objects import write_atomic
from stemflow.store.records import read_records

pytestmark = [pytest.mark.prefect, pytest.mark.ray]

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="stemflow-prefect-"))
STAGE = {"local_num_cpus": 2, "tracks_per_call": 1, "torch_threads": 1, "cpus_per_worker": 1}


def _run(tiny_model: Any, catalogue: str, out: str, **kwargs: Any) -> dict[str, Any]:
    from pipelines.separate_catalogue import separate_catalogue

    options = {"model": tiny_model.config, "checkpoint": tiny_model.checkpoint, "shard_size": 2, "stage": STAGE,
               "model_settings": {"batch_size": 8}, **kwargs}
    return separate_catalogue(catalogue, out, **options)


def _ok_keys(out: str, model_id: str, options: Any = None) -> Counter:
    rows = read_records(out, model_id, storage_options=options).to_pylist()
    return Counter((r["track_id"], r["stem"]) for r in rows if r["status"] == "ok")


@pytest.mark.slow
def test_a_manifest_drives_the_run_with_extra_columns_and_typed_error_rows(
        tmp_path: Path, prefect_api: None, tiny_model: Any, catalogue_kit: Any) -> None:
    from pipelines.separate_catalogue import dry_run

    catalogue_kit.write(tmp_path / "cat" / "audio", good=3, bad=False, seconds=0.5)
    manifest = tmp_path / "cat" / "nightly.csv"
    manifest.write_text("url,artist,isrc\n"
                        "audio/t00.wav,Ärtist,US1\naudio/t01.wav,Band,US2\naudio/t02.wav,Band,US3\n"
                        "/etc/passwd,Mallory,X\naudio/gone.wav,Nobody,US4\n")
    out = str(tmp_path / "out")
    first = _run(tiny_model, str(manifest), out)
    assert (first["catalogue"], first["planned"], first["ok"], first["errors"]) == (5, 5, 3, 2)
    assert first["errors_by_type"] == {"source": 2} and first["status"] == "partial"
    rows = read_records(out, first["model_id"]).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 6 and all(r["error_type"] is None for r in ok)
    by_url = {r["source_url"].rsplit("/", 1)[-1]: json.loads(r["source_extra"]) for r in ok}
    assert by_url["t00.wav"] == {"artist": "Ärtist", "isrc": "US1"}
    errors = {r["source_url"]: r for r in rows if r["status"] == "error"}
    assert errors["/etc/passwd"]["error_type"] == "source" and "outside the catalogue" in errors["/etc/passwd"]["error"]
    gone = next(r for u, r in errors.items() if u.endswith("gone.wav"))
    assert gone["error_type"] == "source" and "does not exist" in gone["error"]
    assert json.loads(gone["source_extra"]) == {"artist": "Nobody", "isrc": "US4"}

    model_id, counts = dry_run(str(manifest), out, model=tiny_model.config, checkpoint=tiny_model.checkpoint,
                               model_settings={"batch_size": 8})
    assert model_id == first["model_id"]
    assert (counts.catalogue, counts.committed, counts.planned, counts.rejected) == (5, 3, 2, 2)
    again = _run(tiny_model, str(manifest), out)
    assert (again["planned"], again["ok"], again["already_committed"]) == (2, 0, 3)
    assert max(_ok_keys(out, first["model_id"]).values()) == 1


@pytest.mark.slow
@pytest.mark.s3
def test_a_noop_rerun_on_s3_costs_at_most_a_quarter_request_per_track(
        prefect_api: None, fault_proxy: Any, s3_options_for: Any, s3_bucket: str, repo_root: Path) -> None:
    sys.path.insert(0, str(repo_root / "benchmarks"))
    from bench_noop import BUDGET_PER_TRACK, fabricate_committed_catalogue, model_id_of_fixture, noop_run

    options = s3_options_for(fault_proxy.url)
    cat, out = f"{s3_bucket}/catalogue", f"{s3_bucket}/out"
    tracks = fabricate_committed_catalogue(cat, out, 200, options, model_id_of_fixture(tempfile.mkdtemp()))
    first = noop_run(cat, out, options, fault_proxy.log)  # builds the committed index from the Parquet
    steady = noop_run(cat, out, options, fault_proxy.log)
    for run in (first, steady):
        assert run["summary"] == {"planned": 0, "ok": 0, "errors": 0, "catalogue": 200, "already_committed": 200}
        assert run["requests"] / tracks <= BUDGET_PER_TRACK, run
    assert steady["requests"] <= first["requests"]
    assert steady["by_method"].get("GET", 0) + steady["by_method"].get("HEAD", 0) < 40  # no request per track


@pytest.mark.slow
def test_two_flows_on_one_output_at_once_record_each_track_once(
        tmp_path: Path, prefect_api: None, tiny_model: Any, catalogue_kit: Any) -> None:
    catalogue_kit.write(tmp_path / "cat", good=6, bad=False, seconds=0.5)
    out = str(tmp_path / "out")
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)

    def one() -> None:
        barrier.wait()
        results.append(_run(tiny_model, str(tmp_path / "cat"), out))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    model_id = results[0]["model_id"]
    assert sum(r["ok"] for r in results) == 6  # each track committed by exactly one of them
    keys = _ok_keys(out, model_id)
    assert len(keys) == 12 and max(keys.values()) == 1
    assert len(set(committed_tracks(out, model_id))) == 6


@pytest.mark.slow
def test_what_a_run_cannot_read_is_quarantined_reported_and_the_run_goes_on(
        tmp_path: Path, prefect_api: None, tiny_model: Any, catalogue_kit: Any) -> None:
    from pipelines.runtime import status_report
    from stemflow.catalogue.listing import list_audio

    catalogue_kit.write(tmp_path / "cat", good=3, bad=False, seconds=0.5)
    out = str(tmp_path / "out")
    model_id = _run(tiny_model, str(tmp_path / "cat"), out, shard_size=3)["model_id"]
    # damage the output: a foreign file and an unreadable part under metadata/, a folder that is no track id,
    # and a new track whose (pre-existing) marker is garbage
    write_atomic(f"{out}/metadata/model_id={model_id}/notes.txt", b"hello")
    write_atomic(f"{out}/metadata/model_id={model_id}/run_date=2026-01-01/run_id=x/part-00001.parquet", b"junk")
    write_atomic(f"{out}/stems/{model_id}/Not A Track/_COMMITTED.json", b"{}")
    catalogue_kit.write(tmp_path / "cat" / "new", good=1, bad=False, seconds=0.5)
    (new,) = [t for t in list_audio(str(tmp_path / "cat" / "new"))]
    write_atomic(marker_url(out, model_id, new.track_id), b"{not a marker")
    (tmp_path / "out" / "index").rename(tmp_path / "out" / "index-moved")  # rebuild from the damaged Parquet

    summary = _run(tiny_model, str(tmp_path / "cat"), out)
    assert (summary["planned"], summary["ok"], summary["errors"]) == (1, 0, 1)
    assert summary["errors_by_type"] == {"marker": 1}
    assert summary["quarantine"]["counts"] == {"metadata_file": 2}
    (failure,) = summary["failures"]
    assert failure["error_type"] == "marker" and "move it away" in failure["error"]
    report = status_report(out)
    (model,) = report["models"]
    # status counts marker files (the garbage one too: a run met it and recorded a "marker" error row)
    assert model["committed_tracks"] == 4 and model["ok_tracks"] == 3 and model["errors_by_type"] == {"marker": 1}
    assert report["quarantine"]["counts"] == {"metadata_file": 2, "track_folder": 1}
    assert report["runs"]["latest"]["status"] == "partial" and report["runs"]["unfinished"] == []


def test_typed_parameters_refuse_a_typo_naming_the_field(tmp_path: Path, prefect_api: None,
                                                         tiny_model: Any) -> None:
    from pipelines.separate_catalogue import separate_catalogue

    with pytest.raises(Exception, match="tracks_per_cal"):
        separate_catalogue(str(tmp_path), str(tmp_path / "out"), model=tiny_model.config,
                           checkpoint=tiny_model.checkpoint, stage={"tracks_per_cal": 4})
    with pytest.raises(Exception, match="precision"):
        separate_catalogue(str(tmp_path), str(tmp_path / "out"), model=tiny_model.config,
                           checkpoint=tiny_model.checkpoint, model_settings={"precision": "float64"})
    assert not (tmp_path / "out").exists()  # refused before anything started


@pytest.mark.slow
def test_progress_is_in_the_run_manifest_during_the_run_and_reprocess_takes_a_manifest(
        tmp_path: Path, prefect_api: None, tiny_model: Any, catalogue_kit: Any) -> None:
    from pipelines.reprocess import reprocess
    from pipelines.separate_catalogue import run_catalogue
    from stemflow.store.runs import iter_run_ids, read_run_manifest

    catalogue_kit.write(tmp_path / "cat" / "audio", good=4, bad=False, seconds=0.5)
    manifest = tmp_path / "cat" / "tracks.jsonl"
    manifest.write_text("".join(json.dumps({"url": f"audio/t0{i}.wav", "label": f"L{i}"}) + "\n" for i in range(4)))
    out = str(tmp_path / "out")
    seen: list[dict[str, Any]] = []

    def watch(done: int, planned: int) -> None:  # called after each progress write: read what an operator reads
        (run_id,) = list(iter_run_ids(out))
        run = read_run_manifest(out, run_id)
        seen.append({"status": run.status, "callback": (done, planned), **dict(run.progress)})

    summary = run_catalogue(str(manifest), out, model=tiny_model.config, checkpoint=tiny_model.checkpoint,
                            shard_size=1, stage={**STAGE, "progress_interval_s": 0.05}, progress_callback=watch)
    assert (summary.planned, summary.ok, summary.errors) == (4, 4, 0)
    during = [s for s in seen if 0 < s["done"] < 4]
    assert during, seen  # progress was written while tracks were still left
    for s in seen:
        assert s["status"] == "running" and (s["done"], s["planned"]) == s["callback"]
        assert s["ok"] + s["errors"] + s["skipped"] == s["done"] <= s["planned"] <= 4
        assert s["updated_at"] and s["heartbeat_s"] == 0.05 and s["errors_by_type"] == {}
        assert (s["tracks_per_hour"] > 0) == (s["done"] > 0)
        assert (s["eta_s"] is None) == (not s["planning_done"] or s["done"] == 0)
    assert [s["done"] for s in seen] == sorted(s["done"] for s in seen)
    final = read_run_manifest(out, summary.run_id)
    assert final.status == "succeeded" and final.progress["done"] == 4 and final.progress["eta_s"] == 0.0

    # reprocess takes the same manifest: a new model_id over every track, extra columns carried
    again = reprocess(str(manifest), out, tiny_model.config, checkpoint=tiny_model.checkpoint, shard_size=2,
                      stage=STAGE, model_settings={"batch_size": 8, "num_overlap": 4},
                      previous_model_id=summary.model_id, above=-1000.0)
    assert again["model_id"] != summary.model_id and (again["planned"], again["ok"]) == (4, 4)
    rows = [r for r in read_records(out, again["model_id"]).to_pylist() if r["status"] == "ok"]
    labels = {r["source_url"].rsplit("/", 1)[-1]: json.loads(r["source_extra"])["label"] for r in rows}
    assert labels == {f"t0{i}.wav": f"L{i}" for i in range(4)}
    assert max(_ok_keys(out, again["model_id"]).values()) == 1
