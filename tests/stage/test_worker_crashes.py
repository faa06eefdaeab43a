"""A poison track that kills its worker every time: an error row after N crashes, and the run goes on.

The kill is real: the source filesystem SIGKILLs the process that reads the
poison file. The pool restarts the actor (reloading the model) each time; the
scheduler retries the track alone, and after ``max_worker_crashes`` it becomes
the error row "crashed its worker N times" while every other track commits.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from stemflow.store.commit import committed_tracks

pytestmark = pytest.mark.ray


def killing_filesystem(poison_suffix: str) -> Any:
    """Local files; reading one whose path ends with ``poison_suffix`` SIGKILLs the reader."""
    import os
    import signal

    from fsspec.implementations.local import LocalFileSystem

    class PoisonFileSystem(LocalFileSystem):
        protocol = ("poisonfile",)

        def cat_file(self, path: str, start: Any = None, end: Any = None, **kwargs: Any) -> bytes:
            if str(path).endswith(poison_suffix):
                os.kill(os.getpid(), signal.SIGKILL)
            return super().cat_file(path, start=start, end=end, **kwargs)

        def __reduce__(self) -> Any:
            return killing_filesystem, (poison_suffix,)

    return PoisonFileSystem(auto_mkdir=True, skip_instance_cache=True)


@pytest.mark.slow
def test_a_track_that_kills_its_worker_three_times_is_an_error_row(tmp_path: Path, tiny_model: Any,
                                                                   catalogue_kit: Any) -> None:
    import ray

    from stemflow.hub.spec import ModelSpec
    from stemflow.stage.ray_adapter import connect_ray, run_shard
    from stemflow.stage.settings import ShardJob, StageSettings

    settings = StageSettings(local_num_cpus=2, workers=1, tracks_per_call=2, torch_threads=1, max_worker_crashes=3)
    connect_ray(settings)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    paths = catalogue_kit.write(tmp_path / "cat", good=4, bad=False, seconds=0.5)
    poison = paths[1].with_name("poison.wav")
    paths[1].rename(poison)
    paths[1] = poison
    tracks = [{"url": str(p), "track_id": f"track{i}"} for i, p in enumerate(paths)]
    job = ShardJob(output_url=str(tmp_path / "out"), model_id="m-poison", run_id="r1", run_date="2026-12-02",
                   storage_options=killing_filesystem("poison.wav"))
    spec = ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint, batch_size=8)
    result = run_shard(tracks, spec, job, settings)
    outcomes = {o.track_id: o for o in result.outcomes}
    assert sorted(outcomes) == ["track0", "track1", "track2", "track3"]
    bad = outcomes["track1"]
    assert bad.status == "error" and bad.error_type == "crash"
    assert bad.error.startswith("crashed its worker 3 times")
    (row,) = bad.rows
    assert (row["status"], row["error_type"], row["source_url"]) == ("error", "crash", str(poison))
    assert all(outcomes[t].status == "ok" for t in ("track0", "track2", "track3"))
    assert sorted(committed_tracks(str(tmp_path / "out"), "m-poison")) == ["track0", "track2", "track3"]
    assert result.errors_by_type() == {"crash": 1}
