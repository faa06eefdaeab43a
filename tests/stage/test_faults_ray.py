"""A Ray worker killed mid-track: the task is retried on a restarted actor, the track committed once.

The kill is real: the output filesystem given to the stage is a local filesystem
that SIGKILLs its own process the first time it is asked to write one chosen
stem (a flag file on disk makes it happen exactly once, across processes). At
that moment the track's first stem is stored and its marker is not, the worst
place to die. Ray Data restarts the actor (``max_restarts=-1``) and retries its
task (``max_task_retries=-1``, Ray Data's defaults for actor pools), the new
attempt adopts the stem left behind, and the track ends with one marker and one
set of ``ok`` rows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from stemflow.store.commit import committed_tracks, read_marker, verify_track

pytestmark = pytest.mark.ray


def kill_once_filesystem(kill_suffix: str, flag_path: str) -> Any:
    """Local files that SIGKILL the writing process once, on the first write of ``kill_suffix``.

    Its protocol is not ``file``, so stemflow's storage layer drives it through
    the generic fsspec calls (``pipe_file(mode="create")``), where the hook sits.
    The class is built here and rebuilt in the worker on unpickling (fsspec
    classes hold a lock and cannot travel by value; this function can).
    """
    import os
    import signal

    from fsspec.implementations.local import LocalFileSystem

    class KillOnceFileSystem(LocalFileSystem):
        protocol = ("killfile",)

        def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
            if path.endswith(kill_suffix):
                try:
                    fd = os.open(flag_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.write(fd, str(os.getpid()).encode())
                    os.close(fd)
                    os.kill(os.getpid(), signal.SIGKILL)
            super().pipe_file(path, value, mode=mode, **kwargs)

        def __reduce__(self) -> Any:
            return kill_once_filesystem, (kill_suffix, flag_path)

    return KillOnceFileSystem(auto_mkdir=True, skip_instance_cache=True)


def test_a_worker_killed_between_stems_is_retried_and_the_track_committed_once(
    tmp_path: Path, tiny_model: Any, catalogue_kit: Any
) -> None:
    import ray

    from stemflow.hub.spec import ModelSpec
    from stemflow.stage.ray_adapter import connect_ray, run_shard
    from stemflow.stage.settings import ShardJob, StageSettings

    connect_ray(StageSettings(local_num_cpus=2))
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # kill_once_filesystem travels by value
    cat, out = tmp_path / "cat", tmp_path / "out"
    cat.mkdir()
    tracks = []
    for i in range(3):
        sf.write(cat / f"t{i}.wav", catalogue_kit.tone(i, 0.5).T, 44100, subtype="PCM_16")
        tracks.append({"url": str(cat / f"t{i}.wav"), "track_id": f"track{i}"})
    flag = tmp_path / "killed.pid"
    fs = kill_once_filesystem("/track1/instrumental.flac", str(flag))
    job = ShardJob(output_url=str(out), model_id="m-kill", run_id="r1", run_date="2026-11-24", storage_options=fs)
    spec = ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint, batch_size=8)
    result = run_shard(tracks, spec, job, StageSettings(local_num_cpus=2, workers=1, tracks_per_call=1,
                                                        torch_threads=1, max_pending_uploads=1))
    assert flag.exists(), "the worker was never killed"
    killed_pid = int(flag.read_text())
    assert killed_pid != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(killed_pid, 0)  # that process is gone
    outcomes = {o.track_id: o for o in result.outcomes}
    assert sorted(outcomes) == ["track0", "track1", "track2"] and len(result.outcomes) == 3
    assert {o.status for o in outcomes.values()} == {"ok"}, [o.error for o in outcomes.values()]
    rows = [r for o in result.outcomes for r in o.rows]
    assert sorted((r["track_id"], r["stem"]) for r in rows) == sorted(
        (f"track{i}", s) for i in range(3) for s in ("instrumental", "vocals"))
    assert sorted(committed_tracks(str(out), "m-kill")) == ["track0", "track1", "track2"]
    for track_id in outcomes:
        assert verify_track(str(out), "m-kill", track_id)
        assert len(list((out / "stems" / "m-kill" / track_id).glob("_COMMITTED*"))) == 1
    assert read_marker(str(out), "m-kill", "track1").run_id == "r1"
