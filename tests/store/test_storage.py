"""Tests of stemflow.storage against local disk, memory:// and a moto S3 server."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stemflow.errors import StorageError
from stemflow.store import objects, paths


def test_normalise_url_forms(tmp_path: Any) -> None:
    assert paths.normalise_url("s3://bucket/a/b.wav") == "s3://bucket/a/b.wav"
    assert paths.normalise_url(str(tmp_path / "x y.wav")) == f"file://{tmp_path}/x y.wav"
    assert paths.normalise_url(f"file://{tmp_path}/x.wav") == f"file://{tmp_path}/x.wav"
    assert paths.normalise_url("memory://root/k.flac") == "memory:///root/k.flac"


@pytest.mark.parametrize(
    "bad", ["..", ".", "", "/etc", "a/b", "a\\b", "../x", "x\x00", " lead", "tab\t", ".hidden", "é", "x" * 201]
)
def test_unsafe_components_are_rejected(bad: str) -> None:
    with pytest.raises(StorageError, match="unsafe"):
        paths.join_url("s3://b/out", "stems", bad)


def test_safe_components_join() -> None:
    url = paths.join_url("s3://b/out/", "metadata", "model_id=bs-1.2_a", "run_date=2026-11-24")
    assert url == "s3://b/out/metadata/model_id=bs-1.2_a/run_date=2026-11-24"


def test_write_atomic_round_trip_and_overwrite(backend: tuple[str, Any]) -> None:
    base, options = backend
    url = f"{base}/a/b/c.bin"
    objects.write_atomic(url, b"first", options)
    objects.write_atomic(url, b"second!", options)
    assert objects.read_bytes(url, options) == b"second!"
    info = objects.object_info(url, options)
    assert info.size == 7
    assert objects.sha256_object(url, options) == objects.sha256_hex(b"second!")
    assert objects.exists(url, options)
    assert objects.exists_many([url, f"{base}/a/b/none.bin"], options) == [True, False]


def test_write_atomic_leaves_no_temp_files(tmp_path: Any) -> None:
    url = str(tmp_path / "d" / "x.json")
    objects.write_atomic(url, b"{}")
    objects.write_atomic(url, b"{ }")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["x.json"]


def test_create_only_second_write_loses(backend: tuple[str, Any]) -> None:
    base, options = backend
    url = f"{base}/k/_COMMITTED.json"
    assert objects.write_create_only(url, b"winner", options) is True
    assert objects.write_create_only(url, b"loser", options) is False
    assert objects.read_bytes(url, options) == b"winner"


def test_create_only_thread_race_has_one_winner(backend: tuple[str, Any]) -> None:
    base, options = backend
    url = f"{base}/race/marker"
    results: list[tuple[int, bool]] = []
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        barrier.wait()
        results.append((i, objects.write_create_only(url, f"writer-{i}".encode(), options)))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in results if won]
    assert len(results) == 8 and len(winners) == 1
    assert objects.read_bytes(url, options) == f"writer-{winners[0]}".encode()


def test_read_missing_raises_file_not_found(backend: tuple[str, Any]) -> None:
    base, options = backend
    with pytest.raises(FileNotFoundError):
        objects.read_bytes(f"{base}/missing", options)


@pytest.mark.s3
def test_s3_etag_is_reported(s3_bucket: str, s3_options: dict[str, Any]) -> None:
    url = f"{s3_bucket}/x.wav"
    objects.write_atomic(url, b"abc", s3_options)
    info = objects.object_info(url, s3_options)
    assert info.etag == "900150983cd24fb0d6963f7d28e17f72"  # md5("abc"), single-part upload
    assert info.url == url and info.size == 3


def test_filesystem_object_can_be_passed(tmp_path: Any) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    objects.write_atomic("memory://fsobj/x", b"1", fs)
    assert objects.read_bytes("/fsobj/x", fs) == b"1"
    fs.rm("/fsobj", recursive=True)


def test_storage_layer_imports_no_torch_ray_or_prefect() -> None:
    import subprocess
    import sys

    code = (
        "import sys, stemflow.store.paths, stemflow.store.objects, stemflow.store.commit, stemflow.catalogue.listing, "
        "stemflow.catalogue.planning, stemflow.catalogue.manifests, stemflow.store.records, stemflow.store.runs; "
        "print(sorted(m for m in ('torch', 'ray', 'prefect', 'soundfile') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_read_many_returns_none_for_missing(backend: tuple[str, Any]) -> None:
    base, options = backend
    objects.write_atomic(f"{base}/m/a", b"A", options)
    objects.write_atomic(f"{base}/m/sub/b", b"B", options)
    urls = [f"{base}/m/a", f"{base}/m/missing", f"{base}/m/sub/b", f"{base}/m/sub"]
    assert objects.read_many(urls, options, concurrency=2) == [b"A", None, b"B", None]
    assert objects.read_many([], options) == []
