"""The Prefect flows end to end, on real components: local folders, moto S3, a local Ray.

One ``prefect_test_harness`` per session; one local Ray per session (started by
the first flow). The tiny fixture Mel-Band-RoFormer keeps each run short.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="stemflow-prefect-"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from stemflow.store.commit import committed_tracks, read_marker, verify_track  # noqa: E402
from stemflow.store.objects import read_bytes  # noqa: E402
from stemflow.store.paths import filesystem  # noqa: E402
from stemflow.store.records import read_records  # noqa: E402
from stemflow.store.runs import read_run_manifest  # noqa: E402

pytestmark = [pytest.mark.prefect, pytest.mark.ray]

REPO_ROOT = Path(__file__).resolve().parents[2]

MODEL_SETTINGS = {"batch_size": 8}
STAGE = {"local_num_cpus": 2, "tracks_per_call": 1, "torch_threads": 1}


@pytest.fixture
def run_flow(tiny_model: Any) -> Callable[..., dict[str, Any]]:
    """``run_flow(catalogue, out, **overrides)``: the nightly flow with the tiny model, shards of 2."""
    from pipelines.separate_catalogue import separate_catalogue

    def run(catalogue: str, out: str, **kwargs: Any) -> dict[str, Any]:
        options = {"model": tiny_model.config, "checkpoint": tiny_model.checkpoint, "shard_size": 2,
                   "stage": STAGE, "model_settings": MODEL_SETTINGS, **kwargs}
        return separate_catalogue(catalogue, out, **options)

    return run


def _check_records_match_markers(out: str, model_id: str, storage_options: Any = None) -> Any:
    """Parquet ok rows == committed markers, once per (track, stem); every stem verified; the table."""
    table = read_records(out, model_id=model_id, storage_options=storage_options)
    rows = table.to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    keys = Counter((r["model_id"], r["track_id"], r["stem"]) for r in ok)
    assert keys and max(keys.values()) == 1, "duplicate ok rows"
    committed = set(committed_tracks(out, model_id, storage_options=storage_options))
    assert {r["track_id"] for r in ok} == committed
    for track_id in committed:
        marker = read_marker(out, model_id, track_id, storage_options=storage_options)
        assert {r["stem"] for r in ok if r["track_id"] == track_id} == {s.stem for s in marker.stems}
        assert verify_track(out, model_id, track_id, storage_options=storage_options)
    return table


def _check_stems_add_up(kit: Any, table: Any, storage_options: Any = None) -> None:
    """For every committed track: decoded stems sum to the decoded mixture (24-bit rounding)."""
    ok = [r for r in table.to_pylist() if r["status"] == "ok"]
    for track_id in {r["track_id"] for r in ok}:
        mine = [r for r in ok if r["track_id"] == track_id]
        mixture = kit.decode(read_bytes(mine[0]["source_url"], storage_options))
        stems = [kit.decode(read_bytes(r["stem_url"], storage_options)) for r in mine]
        assert np.max(np.abs(np.sum(stems, axis=0) - mixture)) < 1e-5
        measured = kit.residual_db(mixture, stems)
        assert mine[0]["residual_db"] < -100 and measured < -100  # float rounding, then 24-bit FLAC
        assert all(r["duration_s"] == pytest.approx(mixture.shape[1] / 44100) for r in mine)


def test_prefect_yaml_deploys_both_flows_with_a_cancelling_concurrency_limit() -> None:
    import importlib
    import inspect

    from prefect.cli.deploy._models import PrefectYamlModel

    data = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    model = PrefectYamlModel.model_validate(data)
    by_name = {d.name: d for d in model.deployments}
    assert set(by_name) == {"nightly", "reprocess"}
    assert by_name["nightly"].schedules[0].cron == "0 2 * * *"
    for deployment in by_name.values():
        assert deployment.concurrency_limit.limit == 1
        assert deployment.concurrency_limit.collision_strategy == "CANCEL_NEW"
        path, name = deployment.entrypoint.split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        assert set(deployment.parameters) <= set(inspect.signature(flow.fn).parameters)


@pytest.mark.slow
def test_catalogue_flow_is_idempotent_and_a_new_model_reprocesses(
    tmp_path: Path, prefect_api: str, catalogue_kit: Any, tiny_model: Any, run_flow: Callable[..., dict[str, Any]]
) -> None:
    from prefect.artifacts import Artifact

    from pipelines.reprocess import reprocess
    from pipelines.separate_catalogue import catalogue_status, run_catalogue

    catalogue_kit.write(tmp_path / "cat", good=3, bad=False)
    cat, out = str(tmp_path / "cat"), str(tmp_path / "out")
    first = run_flow(cat, out)
    assert (first["planned"], first["ok"], first["errors"], first["shards"]) == (3, 3, 0, 2)
    assert first["status"] == "succeeded"
    table = _check_records_match_markers(out, first["model_id"])
    assert table.num_rows == 6 and set(table.column("stem").to_pylist()) == {"vocals", "instrumental"}
    _check_stems_add_up(catalogue_kit, table)
    manifest = read_run_manifest(out, first["run_id"])
    assert manifest.status == "succeeded" and manifest.counts["ok"] == 3
    assert manifest.inputs["model_id"] == first["model_id"]

    # same model_id, through the CLI backend: nothing to do, and it says so
    again = run_catalogue(cat, out, model=tiny_model.config, checkpoint=tiny_model.checkpoint, stage=STAGE)
    assert (again.planned, again.ok, again.shards, again.model_id) == (0, 0, 0, first["model_id"])
    assert "nothing to do" in Artifact.get("stemflow-run-summary").data
    assert _check_records_match_markers(out, first["model_id"]).num_rows == 6

    # a filter on the previous model's quality that selects nothing, then one that selects everything
    new_settings = {**MODEL_SETTINGS, "num_overlap": 4}  # a settings change is a new model_id
    common = {"checkpoint": tiny_model.checkpoint, "shard_size": 3, "stage": STAGE, "model_settings": new_settings,
              "previous_model_id": first["model_id"], "quality_column": "residual_db"}
    none = reprocess(cat, out, tiny_model.config, above=0.0, **common)
    assert none["model_id"] != first["model_id"] and none["planned"] == 0
    every = reprocess(cat, out, tiny_model.config, above=-1000.0, **common)
    assert (every["planned"], every["ok"], every["model_id"]) == (3, 3, none["model_id"])
    _check_stems_add_up(catalogue_kit, _check_records_match_markers(out, every["model_id"]))

    status = {s["model_id"]: s for s in catalogue_status(out)}
    assert status[first["model_id"]] == {"model_id": first["model_id"], "committed_tracks": 3, "rows": 6,
                                         "ok_tracks": 3, "error_rows": 0}
    assert status[every["model_id"]]["committed_tracks"] == 3


@pytest.mark.slow
@pytest.mark.s3
def test_catalogue_flow_on_s3_records_bad_files_and_completes_the_rest(
    tmp_path: Path, prefect_api: str, s3_bucket: str, s3_options: dict[str, Any], catalogue_kit: Any,
    run_flow: Callable[..., dict[str, Any]],
) -> None:
    catalogue_kit.write(tmp_path / "cat", good=2, bad=True)
    cat, out = f"{s3_bucket}/catalogue", f"{s3_bucket}/out"
    catalogue_kit.upload(tmp_path / "cat", cat, s3_options)
    summary = run_flow(cat, out, storage_options=s3_options, shard_size=3)
    bad = len(catalogue_kit.bad_files)
    assert (summary["planned"], summary["ok"], summary["errors"]) == (2 + bad, 2, bad)
    assert summary["status"] == "partial"
    table = _check_records_match_markers(out, summary["model_id"], s3_options)
    _check_stems_add_up(catalogue_kit, table, s3_options)
    errors = [r for r in table.to_pylist() if r["status"] == "error"]
    assert len(errors) == len(catalogue_kit.bad_files) and all(r["stem"] is None and r["error"] for r in errors)
    for name, words in catalogue_kit.bad_files.items():
        (row,) = [r for r in errors if r["source_url"].endswith(name)]
        assert words.lower() in row["error"].lower()
    assert {f["track_id"] for f in summary["failures"]} == {r["track_id"] for r in errors}
    fs, root = filesystem(out, s3_options)
    assert fs.exists(f"{root}/runs/{summary['run_id']}.json")
    assert all(u.startswith("s3://") for u in summary["parquet_urls"])


_CRASH_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from pipelines.separate_catalogue import separate_catalogue
separate_catalogue({cat!r}, {out!r}, model={config!r}, checkpoint={ckpt!r}, shard_size=3,
                   stage={{"tracks_per_call": 1, "torch_threads": 1}}, model_settings={{"batch_size": 8}})
"""


@pytest.mark.slow
def _settled(read: Callable[[], set[str]], quiet_s: float = 5.0, limit_s: float = 120.0) -> set[str]:
    """``read()`` once it has returned the same value for ``quiet_s`` (at most ``limit_s``)."""
    value, since, deadline = read(), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return value


def test_killed_run_is_completed_exactly_once_by_the_next(
    tmp_path: Path, prefect_api: str, catalogue_kit: Any, tiny_model: Any, run_flow: Callable[..., dict[str, Any]]
) -> None:
    import ray

    from stemflow.stage.ray_adapter import connect_ray
    from stemflow.stage.settings import StageSettings

    catalogue_kit.write(tmp_path / "cat", good=6, bad=False, seconds=2.0)
    cat, out = str(tmp_path / "cat"), str(tmp_path / "out")
    connect_ray(StageSettings(local_num_cpus=2))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PREFECT_API_URL": prefect_api}
    script = _CRASH_SCRIPT.format(root=str(REPO_ROOT), cat=cat, out=out, config=tiny_model.config,
                                  ckpt=tiny_model.checkpoint)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers: list[Path] = []
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            markers = list((tmp_path / "out" / "stems").glob("*/*/_COMMITTED.json"))
            if markers:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert 1 <= len(markers) < 6, f"the run was not killed mid-way ({len(markers)} markers)"
    model_id = markers[0].parent.parent.name
    # the killed driver's actors live in the shared Ray until Ray sees their owner gone: a track they
    # were finishing may still commit. Count what was committed once the output stops changing.
    committed_before = _settled(lambda: set(committed_tracks(out, model_id)))
    recorded_before = {r["track_id"] for r in read_records(out, model_id=model_id).to_pylist()}

    summary = run_flow(cat, out)
    assert summary["model_id"] == model_id
    assert summary["recovered"] == len(committed_before - recorded_before) >= 1
    assert summary["planned"] == 6 - len(committed_before) and summary["ok"] == summary["planned"]
    table = _check_records_match_markers(out, model_id)
    assert len(set(committed_tracks(out, model_id))) == 6 and table.num_rows == 12
    # no stem object outside a committed track's folder is visible through the records
    stems_on_disk = {p.parent.name for p in (tmp_path / "out" / "stems" / model_id).glob("*/*.flac")}
    assert stems_on_disk == set(committed_tracks(out, model_id))
    runs = {json.loads(p.read_text())["status"] for p in (tmp_path / "out" / "runs").glob("*.json")}
    assert runs == {"crashed", "succeeded"}  # the next run's recovery marked the killed one
    assert not list((tmp_path / "out" / "runs" / "journal").glob("*/*.json"))  # nothing left to recover


@pytest.mark.slow
def test_demo_separates_the_musdb_excerpt_with_the_offline_model(
    tmp_path: Path, prefect_api: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.demo import main

    monkeypatch.setenv("STEMFLOW_CACHE", str(tmp_path / "cache"))
    assert main(["--root", str(tmp_path / "demo"), "--generated", "1"]) == 0
    printed = capsys.readouterr().out
    assert "2 ok, 0 errors" in printed and "parquet:" in printed
    table = read_records(str(tmp_path / "demo" / "out"))
    assert table.num_rows == 4 and set(table.column("stem").to_pylist()) == {"vocals", "instrumental"}
    excerpt = [r for r in table.to_pylist() if r["source_url"].endswith(".stem.mp4")]
    assert len(excerpt) == 2 and all(r["status"] == "ok" and r["duration_s"] > 1 for r in excerpt)
    assert main(["--root", str(tmp_path / "demo"), "--generated", "1"]) == 0
    assert "nothing to do" in capsys.readouterr().out
