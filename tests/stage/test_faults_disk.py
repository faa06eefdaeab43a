"""Disk full and permission denied on the output: a clear error per track, nothing marked done.

Real filesystems where the machine allows it (tests run as root in CI's container,
where ``chmod`` does not stop writes): a tmpfs of 160 KiB that fills up (ENOSPC),
and a read-only tmpfs (EROFS). Where mounting is not possible those two skip,
and the same error paths are exercised through an fsspec filesystem that runs
out of space after N bytes, and through an output "folder" that is a file.
"""

from __future__ import annotations

import errno
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import fsspec
import pytest
import soundfile as sf
from fsspec.implementations.memory import MemoryFileSystem

from stemflow.errors import StorageError
from stemflow.store.commit import MARKER_NAME, committed_tracks
from stemflow.store.objects import write_atomic, write_create_only

pytestmark = pytest.mark.ray  # the TrackWorker lives in the Ray stage module (no cluster is started)


def _mount(target: Path, options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                          capture_output=True, check=False)
    return done.returncode == 0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Any]:
    """``mount(options) -> Path``: a fresh tmpfs under tmp_path (skips where mounting is not allowed)."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        target = tmp_path / f"mnt-{len(mounted)}"
        if not _mount(target, options):
            pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, catalogue_kit: Any) -> str:
    """A 2 s stereo 16-bit WAV (its 24-bit FLAC stems are ~2 x 250 KB)."""
    path = tmp_path_factory.mktemp("src") / "mix.wav"
    sf.write(path, catalogue_kit.tone(3, 2.0).T, 44100, subtype="PCM_16")
    return str(path)


@pytest.fixture
def make_worker(tiny_model: Any) -> Callable[..., Any]:
    """``make_worker(output_url, storage_options=None)``: a TrackWorker of the tiny model writing there."""
    from stemflow.hub.spec import ModelSpec
    from stemflow.stage.settings import ShardJob
    from stemflow.stage.worker import TrackWorker

    def make(out: str, storage_options: Any = None) -> Any:
        job = ShardJob(output_url=out, model_id="m-disk", run_id="r1", run_date="2026-11-24",
                       storage_options=storage_options if storage_options is not None else {})
        spec = ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint, batch_size=8)
        return TrackWorker(spec, job=job, torch_threads=1)

    return make


def _process(worker: Any, source: str, track_id: str = "t1") -> Any:
    return worker.finish(worker.separate(track_id, source, worker.fetch(source)))


def _assert_failed_cleanly(outcome: Any, words: str) -> None:
    assert outcome.status == "error", outcome
    assert words.lower() in (outcome.error or "").lower(), outcome.error
    (row,) = outcome.rows
    assert row["status"] == "error" and row["stem"] is None and row["track_id"] == "t1"


def test_disk_full_output_is_an_error_row_and_no_marker(
    tmpfs: Any, source: str, make_worker: Callable[..., Any]
) -> None:
    out = tmpfs("size=160k")
    worker = make_worker(str(out))
    _assert_failed_cleanly(_process(worker, source), "No space left on device")
    assert not list(out.rglob(MARKER_NAME)) and list(committed_tracks(str(out), "m-disk")) == []
    assert not list(out.rglob("*.tmp")), "temporary files were left behind"
    # once there is room, the same worker commits the track
    subprocess.run(["mount", "-o", "remount,size=4m", str(out)], check=True)
    assert _process(worker, source).status == "ok"
    assert list(committed_tracks(str(out), "m-disk")) == ["t1"]


def test_read_only_output_is_an_error_row_and_nothing_written(
    tmpfs: Any, source: str, make_worker: Callable[..., Any]
) -> None:
    out = tmpfs("ro,size=1m")
    _assert_failed_cleanly(_process(make_worker(str(out / "out")), source), "Read-only file system")
    assert list(out.iterdir()) == []


def test_an_output_folder_that_is_a_file_is_an_error_row(
    tmp_path: Path, source: str, make_worker: Callable[..., Any]
) -> None:
    blocker = tmp_path / "out"
    blocker.write_bytes(b"not a folder")
    outcome = _process(make_worker(str(blocker)), source)
    _assert_failed_cleanly(outcome, "cannot")
    assert "Not a directory" in (outcome.error or "") or "File exists" in (outcome.error or "")
    assert blocker.read_bytes() == b"not a folder"


class FullMemoryFileSystem(MemoryFileSystem):
    """``memory://`` that raises ENOSPC once more than :attr:`capacity` bytes were written."""

    protocol = ("fullmem",)
    capacity = 0
    written = 0

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        if type(self).written + len(value) > type(self).capacity:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        type(self).written += len(value)
        super().pipe_file(path, value, mode=mode, **kwargs)


def test_enospc_from_a_filesystem_backend_is_final_and_leaves_no_marker(
    source: str, make_worker: Callable[..., Any]
) -> None:
    fsspec.register_implementation("fullmem", FullMemoryFileSystem, clobber=True)
    fs = FullMemoryFileSystem(skip_instance_cache=True)
    root = f"fullmem://test-{uuid.uuid4().hex[:8]}"
    out, mix = f"{root}/out", f"{root}/cat/mix.wav"
    FullMemoryFileSystem.capacity = 10**9
    fs.pipe_file(mix, Path(source).read_bytes())
    FullMemoryFileSystem.written = 0
    worker = make_worker(f"{root}/roomy", fs)
    assert _process(worker, mix).status == "ok"
    needed = FullMemoryFileSystem.written  # stems + marker of one track
    FullMemoryFileSystem.capacity, FullMemoryFileSystem.written = int(needed * 0.75), 0
    # not retried: ENOSPC is an answer, not a hiccup (one attempt, then a StorageError)
    with pytest.raises(StorageError, match="No space left"):
        write_atomic(f"{out}/big.bin", b"x" * (FullMemoryFileSystem.capacity + 1), fs)
    with pytest.raises(StorageError, match="No space left"):
        write_create_only(f"{out}/big.bin", b"x" * (FullMemoryFileSystem.capacity + 1), fs)
    worker.job = replace(worker.job, output_url=out)
    _assert_failed_cleanly(_process(worker, mix), "No space left on device")
    assert FullMemoryFileSystem.written > 0, "a stem was written before the space ran out"
    assert [p.rsplit("/", 1)[1] for p in fs.find(out)] == ["vocals.flac"]
    assert not [p for p in fs.find(out) if p.endswith(MARKER_NAME)]
