"""Tests of stemflow.storage against local disk, memory:// and a moto S3 server."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from s3_fixtures import backend, moto_server, s3_bucket, s3_options  # noqa: F401

from stemflow import storage
from stemflow.errors import StorageError


def test_normalise_url_forms(tmp_path: Any) -> None:
    assert storage.normalise_url("s3://bucket/a/b.wav") == "s3://bucket/a/b.wav"
    assert storage.normalise_url(str(tmp_path / "x y.wav")) == f"file://{tmp_path}/x y.wav"
    assert storage.normalise_url(f"file://{tmp_path}/x.wav") == f"file://{tmp_path}/x.wav"
    assert storage.normalise_url("memory://root/k.flac") == "memory:///root/k.flac"


@pytest.mark.parametrize(
    "bad", ["..", ".", "", "/etc", "a/b", "a\\b", "../x", "x\x00", " lead", "tab\t", ".hidden", "é", "x" * 201]
)
def test_unsafe_components_are_rejected(bad: str) -> None:
    with pytest.raises(StorageError, match="unsafe"):
        storage.join_url("s3://b/out", "stems", bad)


def test_safe_components_join() -> None:
    url = storage.join_url("s3://b/out/", "metadata", "model_id=bs-1.2_a", "run_date=2026-11-24")
    assert url == "s3://b/out/metadata/model_id=bs-1.2_a/run_date=2026-11-24"


def test_write_atomic_round_trip_and_overwrite(backend: tuple[str, Any]) -> None:
    base, options = backend
    url = f"{base}/a/b/c.bin"
    storage.write_atomic(url, b"first", options)
    storage.write_atomic(url, b"second!", options)
    assert storage.read_bytes(url, options) == b"second!"
    info = storage.object_info(url, options)
    assert info.size == 7
    assert storage.sha256_object(url, options) == storage.sha256_hex(b"second!")
    assert storage.exists(url, options)
    assert storage.exists_many([url, f"{base}/a/b/none.bin"], options) == [True, False]


def test_write_atomic_leaves_no_temp_files(tmp_path: Any) -> None:
    url = str(tmp_path / "d" / "x.json")
    storage.write_atomic(url, b"{}")
    storage.write_atomic(url, b"{ }")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["x.json"]


def test_create_only_second_write_loses(backend: tuple[str, Any]) -> None:
    base, options = backend
    url = f"{base}/k/_COMMITTED.json"
    assert storage.write_create_only(url, b"winner", options) is True
    assert storage.write_create_only(url, b"loser", options) is False
    assert storage.read_bytes(url, options) == b"winner"


def test_create_only_thread_race_has_one_winner(backend: tuple[str, Any]) -> None:
    base, options = backend
    url = f"{base}/race/marker"
    results: list[tuple[int, bool]] = []
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        barrier.wait()
        results.append((i, storage.write_create_only(url, f"writer-{i}".encode(), options)))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in results if won]
    assert len(results) == 8 and len(winners) == 1
    assert storage.read_bytes(url, options) == f"writer-{winners[0]}".encode()


def test_read_missing_raises_file_not_found(backend: tuple[str, Any]) -> None:
    base, options = backend
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"{base}/missing", options)


@pytest.mark.s3
def test_s3_etag_is_reported(s3_bucket: str, s3_options: dict[str, Any]) -> None:
    url = f"{s3_bucket}/x.wav"
    storage.write_atomic(url, b"abc", s3_options)
    info = storage.object_info(url, s3_options)
    assert info.etag == "900150983cd24fb0d6963f7d28e17f72"  # md5("abc"), single-part upload
    assert info.url == url and info.size == 3


def test_filesystem_object_can_be_passed(tmp_path: Any) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    storage.write_atomic("memory://fsobj/x", b"1", fs)
    assert storage.read_bytes("/fsobj/x", fs) == b"1"
    fs.rm("/fsobj", recursive=True)


def test_storage_layer_imports_no_torch_ray_or_prefect() -> None:
    import subprocess
    import sys

    code = (
        "import sys, stemflow.storage, stemflow.commit, stemflow.catalogue, stemflow.records; "
        "print(sorted(m for m in ('torch', 'ray', 'prefect', 'soundfile') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_read_many_returns_none_for_missing(backend: tuple[str, Any]) -> None:
    base, options = backend
    storage.write_atomic(f"{base}/m/a", b"A", options)
    storage.write_atomic(f"{base}/m/sub/b", b"B", options)
    urls = [f"{base}/m/a", f"{base}/m/missing", f"{base}/m/sub/b", f"{base}/m/sub"]
    assert storage.read_many(urls, options, concurrency=2) == [b"A", None, b"B", None]
    assert storage.read_many([], options) == []
