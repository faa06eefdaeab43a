"""The Ray stage: per-track work (commit protocol, error rows) in-process, then on a local Ray."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stemflow.catalogue.listing import list_audio
from stemflow.errors import ConfigError
from stemflow.hub.spec import ModelSpec
from stemflow.stage.finishing import rows_from_marker
from stemflow.stage.settings import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, ShardJob, StageSettings
from stemflow.stage.worker import TrackWorker
from stemflow.store.commit import committed_tracks, read_marker, verify_track
from stemflow.store.objects import read_bytes

MODEL_ID = "fixture-mel-000000000000-s00000000"


@pytest.fixture
def spec(tiny_model: Any) -> ModelSpec:
    """The tiny fixture model, eight chunks per batch."""
    return ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint, batch_size=8)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread (2 oversubscribe a shared 2-core machine badly); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _job(out: Path, run_id: str) -> ShardJob:
    return ShardJob(output_url=str(out), model_id=MODEL_ID, run_id=run_id, run_date="2026-11-24")


def _tracks(folder: Path) -> list[dict[str, str]]:
    return [{"url": t.url, "track_id": t.track_id} for t in list_audio(str(folder))]


def _process(worker: TrackWorker, track: dict[str, str]):
    fetched = worker.fetch(track["url"])
    return worker.finish(worker.separate(track["track_id"], track["url"], fetched))


def _no_nan(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}


def test_settings_and_spec_are_validated(tiny_model: Any) -> None:
    with pytest.raises(ConfigError, match="workers"):
        StageSettings(workers=0)
    with pytest.raises(ConfigError, match="min_workers"):
        StageSettings(workers=2, min_workers=3)
    with pytest.raises(ConfigError, match="exactly one"):
        ModelSpec()
    with pytest.raises(ConfigError, match="exactly one"):
        ModelSpec(name="spleeter-2stems", config_path=tiny_model.config)


def test_track_worker_commits_stems_that_add_up_to_the_mixture(
    tmp_path: Path, spec: ModelSpec, catalogue_kit: Any
) -> None:
    catalogue_kit.write(tmp_path / "cat", good=1, bad=False)
    out = tmp_path / "out"
    worker = TrackWorker(spec, job=_job(out, "run-a"))
    track = _tracks(tmp_path / "cat")[0]
    outcome = _process(worker, track)
    assert outcome.status == STATUS_OK and outcome.error is None
    assert sorted(r["stem"] for r in outcome.rows) == ["instrumental", "vocals"]
    marker = read_marker(str(out), MODEL_ID, track["track_id"])
    assert marker is not None and marker.run_id == "run-a"
    assert verify_track(str(out), MODEL_ID, track["track_id"])
    stems = {r["stem"]: catalogue_kit.decode(read_bytes(r["stem_url"])) for r in outcome.rows}
    mixture = catalogue_kit.decode(read_bytes(track["url"]))  # the 16-bit source as the pipeline decoded it
    assert np.max(np.abs(mixture - catalogue_kit.tone(0))) < 1e-4
    assert all(s.shape == mixture.shape for s in stems.values())
    # vocals + instrumental = mixture, up to 24-bit FLAC rounding; the recorded residual is float rounding
    assert np.max(np.abs(stems["vocals"] + stems["instrumental"] - mixture)) < 1e-5
    assert catalogue_kit.residual_db(mixture, list(stems.values())) < -100
    recorded = outcome.rows[0]["residual_db"]
    assert recorded < -100 and outcome.rows[1]["residual_db"] == recorded
    by_stem = {r["stem"]: r for r in outcome.rows}
    assert by_stem["vocals"]["stem_sha256"] == {s.stem: s.sha256 for s in marker.stems}["vocals"]
    assert by_stem["instrumental"]["energy_share"] > by_stem["vocals"]["energy_share"]
    assert by_stem["vocals"]["duration_s"] == pytest.approx(1.0)
    # rows rebuilt from the marker (crash recovery) equal the rows of the run, timestamps aside
    rebuilt = rows_from_marker(marker, _job(out, "run-a"))
    def by_name(rows):
        return sorted((_no_nan(r) for r in rows), key=lambda r: r["stem"])

    assert by_name(rebuilt) == by_name(outcome.rows)


def test_bad_inputs_become_error_rows_and_a_committed_track_is_skipped(
    tmp_path: Path, spec: ModelSpec, catalogue_kit: Any
) -> None:
    catalogue_kit.write(tmp_path / "cat", good=1, bad=True)
    out = tmp_path / "out"
    worker = TrackWorker(spec, job=_job(out, "run-a"))
    outcomes = {Path(t["url"]).name: _process(worker, t) for t in _tracks(tmp_path / "cat")}
    assert outcomes["t00.wav"].status == STATUS_OK
    for name, words in catalogue_kit.bad_files.items():
        outcome = outcomes[Path(name).name]
        assert outcome.status == STATUS_ERROR, name
        assert words.lower() in outcome.error.lower(), outcome.error
        (row,) = outcome.rows
        assert row["status"] == "error" and row["stem"] is None and row["track_id"] == outcome.track_id
    assert list(committed_tracks(str(out), MODEL_ID)) == [outcomes["t00.wav"].track_id]

    # another run finds the track committed: no work, no rows; a retry of the same run gets its rows back
    other = TrackWorker(spec, job=_job(out, "run-b"))
    good = [t for t in _tracks(tmp_path / "cat") if t["url"].endswith("t00.wav")][0]
    skipped = _process(other, good)
    assert skipped.status == STATUS_SKIPPED and skipped.rows == ()
    retried = _process(worker, good)
    assert retried.status == STATUS_OK
    assert [r["stem_sha256"] for r in retried.rows] == [r["stem_sha256"] for r in outcomes["t00.wav"].rows]


def test_racing_workers_commit_each_track_once(tmp_path: Path, spec: ModelSpec, catalogue_kit: Any) -> None:
    catalogue_kit.write(tmp_path / "cat", good=2, bad=False)
    out = tmp_path / "out"
    tracks = _tracks(tmp_path / "cat")
    workers = [TrackWorker(spec, job=_job(out, f"run-{i}")) for i in range(2)]
    results: dict[int, list] = {0: [], 1: []}
    barrier = threading.Barrier(2)

    def go(i: int) -> None:
        barrier.wait()
        results[i] = [_process(workers[i], t) for t in tracks]

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for index, track in enumerate(tracks):
        statuses = sorted(results[i][index].status for i in range(2))
        assert statuses == [STATUS_OK, STATUS_SKIPPED]
        winner = next(i for i in range(2) if results[i][index].status == STATUS_OK)
        assert read_marker(str(out), MODEL_ID, track["track_id"]).run_id == f"run-{winner}"
        assert verify_track(str(out), MODEL_ID, track["track_id"])


@pytest.mark.ray
def test_run_shard_on_local_ray(tmp_path: Path, spec: ModelSpec, catalogue_kit: Any) -> None:
    from stemflow.stage.ray_adapter import run_shard

    catalogue_kit.write(tmp_path / "cat", good=3, bad=True)
    out = tmp_path / "out"
    tracks = _tracks(tmp_path / "cat")
    settings = StageSettings(local_num_cpus=2, workers=1, tracks_per_call=2, torch_threads=1)
    result = run_shard(tracks, spec, _job(out, "run-ray"), settings)
    assert sorted(o.track_id for o in result.outcomes) == sorted(t["track_id"] for t in tracks)
    assert result.count(STATUS_OK) == 3 and result.count(STATUS_ERROR) == len(catalogue_kit.bad_files)
    assert len(result.rows) == 3 * 2 + len(catalogue_kit.bad_files)
    assert sorted(committed_tracks(str(out), MODEL_ID)) == sorted(
        o.track_id for o in result.outcomes if o.status == STATUS_OK
    )
    for row in result.rows:
        if row["status"] == "ok":
            assert row["device"] == "cpu" and row["separate_s"] > 0 and row["residual_db"] < -100
    again = run_shard(tracks, spec, _job(out, "run-ray-2"), settings)
    assert again.count(STATUS_SKIPPED) == 3 and again.count(STATUS_OK) == 0
    assert {r["status"] for r in again.rows} == {"error"}


@pytest.mark.ray
def test_packed_tracks_give_the_same_stems_as_one_at_a_time(
    tmp_path: Path, spec: ModelSpec, catalogue_kit: Any
) -> None:
    """Cross-track batching (pack_tracks) changes which chunks share a batch, never the stems."""
    from stemflow.stage.ray_adapter import run_shard
    from stemflow.store.commit import read_marker

    catalogue_kit.write(tmp_path / "cat", good=3, bad=True)
    tracks = _tracks(tmp_path / "cat")
    markers = {}
    for pack in (True, False):
        out = tmp_path / f"out-{pack}"
        settings = StageSettings(local_num_cpus=2, workers=1, tracks_per_call=4, torch_threads=1, pack_tracks=pack)
        result = run_shard(tracks, spec, _job(out, f"run-{pack}"), settings)
        assert result.count(STATUS_OK) == 3 and result.count(STATUS_ERROR) == len(catalogue_kit.bad_files)
        markers[pack] = {
            t["track_id"]: {s.stem: s.sha256 for s in read_marker(str(out), MODEL_ID, t["track_id"]).stems}
            for t in tracks if read_marker(str(out), MODEL_ID, t["track_id"]) is not None
        }
    assert len(markers[True]) == 3 and markers[True] == markers[False]
