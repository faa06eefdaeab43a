"""A run on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``): a worker node dies mid-run.

Three one-CPU worker nodes and a head that runs nothing; the pool has two
actors. Once tracks are committing, the node of one actor is removed (its
raylet and worker processes are killed). Ray restarts the actor on the spare
node, the scheduler retries the batches that died with it, and the run
finishes: every track committed exactly once, recorded once, none lost.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stemflow.hub.spec import ModelSpec
from stemflow.stage.catalogue_run import CatalogueRun, execute
from stemflow.stage.settings import ShardJob, StageSettings
from stemflow.store.commit import committed_tracks, verify_track
from stemflow.store.records import read_records

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture
def cluster() -> Any:
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # other tests' local Ray
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [made.add_node(num_cpus=1) for _ in range(3)]
    made.wait_for_nodes()
    yield made, workers
    ray.shutdown()
    made.shutdown()


def test_a_worker_node_killed_mid_run_loses_nothing_and_commits_each_track_once(
        cluster: Any, tmp_path: Path, tiny_model: Any, catalogue_kit: Any, caplog: pytest.LogCaptureFixture) -> None:
    import ray

    made, workers = cluster
    catalogue_kit.write(tmp_path / "cat", good=10, bad=False, seconds=1.0)
    out = str(tmp_path / "out")
    job = ShardJob(out, "m-multinode", "run-multinode", "2026-12-02")
    run = CatalogueRun(str(tmp_path / "cat"), job, shard_size=3)
    settings = StageSettings(ray_address=made.address, workers=2, cpus_per_worker=1, tracks_per_call=1,
                             batches_in_flight=2, torch_threads=1, progress_interval_s=0.5)
    spec = ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint, batch_size=8)
    killed: dict[str, Any] = {}

    def kill_a_busy_node(pool: Any) -> None:
        def kill() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not list((tmp_path / "out").glob("stems/*/*/_COMMITTED.json")):
                time.sleep(0.05)
            node_id = ray.get(pool.actors[0].stats.remote())["node_id"]
            (victim,) = [w for w in workers if w.node_id == node_id]
            killed["committed_before"] = len(list((tmp_path / "out").glob("stems/*/*/_COMMITTED.json")))
            made.remove_node(victim, allow_graceful=False)
            killed["node"] = node_id

        threading.Thread(target=kill, daemon=True).start()

    result = execute(run, spec, settings, on_pool=kill_a_busy_node)
    assert killed.get("node"), "no node was killed"
    assert 1 <= killed["committed_before"] < 10
    assert result.progress.ok + result.progress.skipped == 10 and result.progress.errors == 0
    assert not result.stopped and result.incomplete_shards == 0
    committed = sorted(committed_tracks(out, "m-multinode"))
    assert len(committed) == 10
    assert all(verify_track(out, "m-multinode", t) for t in committed)
    rows = read_records(out, "m-multinode").to_pylist()
    ok = Counter((r["track_id"], r["stem"]) for r in rows if r["status"] == "ok")
    assert len(ok) == 20 and max(ok.values()) == 1 and {t for t, _ in ok} == set(committed)
    # the batches running on the killed node came back as crashes and were retried
    assert any("a worker died" in r.getMessage() for r in caplog.records)
