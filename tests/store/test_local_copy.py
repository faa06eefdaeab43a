"""``local_copy``: a decoder's local file for any object, capped in size, never left behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from stemflow.errors import StorageError
from stemflow.store.objects import write_atomic
from stemflow.store.streams import local_copy
from stemflow.tempfiles import PREFIX, temp_root

BODY = os.urandom(3 << 20) + b"end"  # over one remote block of 1 MiB below


def _our_temp_files() -> set[str]:
    return {p.name for p in temp_root().iterdir() if p.name.startswith(f"{PREFIX}source-{os.getpid()}-")}


def test_every_backend_gives_a_local_file_with_the_bytes_and_removes_its_copy(backend: tuple[str, Any]) -> None:
    base, options = backend
    url = f"{base}/in/track.flac"
    write_atomic(url, BODY, options)
    before = _our_temp_files()
    with local_copy(url, options, suffix=".flac") as path:
        assert Path(path).read_bytes() == BODY
        assert Path(path).suffix == ".flac"
        copied = _our_temp_files() - before
    assert _our_temp_files() == before  # nothing left, whether it was copied or not
    assert bool(copied) == (not os.path.isabs(base))  # a local file is read in place


def test_an_object_over_the_cap_is_refused_and_its_partial_copy_removed(backend: tuple[str, Any]) -> None:
    base, options = backend
    url = f"{base}/in/big.bin"
    write_atomic(url, BODY, options)
    before = _our_temp_files()
    with pytest.raises(StorageError, match="larger than the 1048576 bytes"), local_copy(url, options,
                                                                                       max_bytes=1 << 20):
        pass
    assert _our_temp_files() == before


def test_a_fifo_is_refused_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(StorageError), local_copy(str(fifo)):
        pass


def test_a_missing_object_is_file_not_found(backend: tuple[str, Any]) -> None:
    base, options = backend
    with pytest.raises(FileNotFoundError), local_copy(f"{base}/nothing.wav", options):
        pass
