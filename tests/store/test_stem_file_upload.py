"""Stems stored from local files: hashed and uploaded in blocks, with the same write-once rules as bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from stemflow.store.commit import stem_url, track_url, write_stem, write_stem_file
from stemflow.store.objects import read_bytes, write_create_only_file

MODEL, TRACK = "m-1234", "t1"


def _file(tmp_path: Path, name: str, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


def test_a_stem_file_is_stored_as_its_bytes_and_described_by_them(backend: tuple[str, Any], tmp_path: Path) -> None:
    base, options = backend
    path, data = _file(tmp_path, "vocals.flac", 300_000)
    stored = write_stem_file(base, MODEL, TRACK, "vocals", "flac", path, storage_options=options)
    assert (stored.file_name, stored.size, stored.sha256) == ("vocals.flac", len(data), hashlib.sha256(data).hexdigest())
    assert read_bytes(stem_url(base, MODEL, TRACK, "vocals", "flac"), options) == data
    # the same bytes again (a retried attempt) are adopted; other bytes go to a per-attempt name
    assert write_stem_file(base, MODEL, TRACK, "vocals", "flac", path, storage_options=options) == stored
    other, other_data = _file(tmp_path, "other.flac", 1000)
    moved = write_stem_file(base, MODEL, TRACK, "vocals", "flac", other, storage_options=options, attempt="abc123")
    assert moved.file_name == "vocals.abc123.flac"
    assert read_bytes(f"{track_url(base, MODEL, TRACK)}/vocals.abc123.flac", options) == other_data
    assert read_bytes(stem_url(base, MODEL, TRACK, "vocals", "flac"), options) == data  # never overwritten


def test_file_and_bytes_give_the_same_stem_object(backend: tuple[str, Any], tmp_path: Path) -> None:
    base, options = backend
    path, data = _file(tmp_path, "a.flac", 5000)
    from_bytes = write_stem(base, MODEL, "t-bytes", "drums", "flac", data, storage_options=options)
    from_file = write_stem_file(base, MODEL, "t-file", "drums", "flac", path, storage_options=options)
    assert from_bytes == from_file


@pytest.mark.s3
def test_a_multipart_upload_is_create_only_too(s3_options: dict[str, Any], s3_bucket: str, tmp_path: Path) -> None:
    path, data = _file(tmp_path, "big.bin", (11 << 20) + 7)  # three parts of 5 MiB
    url = f"{s3_bucket}/parts/big.bin"
    assert write_create_only_file(url, path, s3_options, chunk_bytes=5 << 20) is True
    assert read_bytes(url, s3_options) == data
    second, _ = _file(tmp_path, "second.bin", (11 << 20) + 7)
    assert write_create_only_file(url, second, s3_options, chunk_bytes=5 << 20) is False
    assert read_bytes(url, s3_options) == data
