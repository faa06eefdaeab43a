"""Object-store access for stemflow: every read and write of the output goes through here.

All functions take an fsspec URL (a local path, ``file://…``, ``s3://bucket/key``,
``memory://…``, ``gs://…``) and an explicit ``storage_options`` argument: either
the keyword arguments of the fsspec filesystem (e.g. ``{"key": …, "secret": …,
"client_kwargs": {"endpoint_url": …}}`` for S3) or an already constructed
:class:`fsspec.AbstractFileSystem`. The library never reads credentials from the
environment itself; fsspec's backends may (boto's credential chain).

Write semantics per backend:

=========  ==========================================  ===========================================
backend    :func:`write_atomic` (overwrite)            :func:`write_create_only` (first writer wins)
=========  ==========================================  ===========================================
local      temp file in the same folder + ``os.replace``  temp file + ``os.link`` (fails if present)
s3         one ``PutObject`` (or a multipart upload,  ``If-None-Match: *`` on the PUT or on
           visible only when completed)               ``CompleteMultipartUpload`` (HTTP 412 → exists)
memory     one assignment in the store                 check + write under a process-wide lock
other      ``fs.pipe_file``                            ``fs.pipe_file(mode="create")`` (the backend's
                                                       guarantee; gcsfs, adlfs: check their docs)
=========  ==========================================  ===========================================

Readers therefore never observe a half-written object on local, S3 or memory.

Remote calls (S3, GCS…) are retried with exponential backoff and full jitter when
they fail transiently (throttling, resets, timeouts; see :mod:`stemflow.store.retry`):
every function takes ``retry=`` (a :class:`~stemflow.store.retry.RetryPolicy`,
default :data:`~stemflow.store.retry.DEFAULT_RETRY`). Retrying a create-only write whose
first attempt did reach the store answers "already exists": callers that must
tell their own earlier attempt from another writer compare the stored bytes
(:func:`stemflow.store.commit.commit_track` does).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.asyn import AsyncFileSystem, sync

from stemflow.errors import StorageError
from stemflow.store.paths import StorageOptions, _is_local, _is_memory, filesystem, url_of
from stemflow.store.retry import DEFAULT_RETRY, RetryPolicy, call_with_retry

logger = logging.getLogger(__name__)

HASH_BLOCK_BYTES = 1 << 20


"""Read size when streaming an object through sha256 (1 MiB)."""


_MEMORY_LOCK = threading.Lock()


@dataclass(frozen=True)
class ObjectInfo:
    """What the store tells about one object without reading it.

    Attributes:
        url: normalised URL (``s3://b/k``, ``file:///abs/path``, ``memory:///p``).
        size: bytes.
        etag: the store's entity tag without quotes (S3, GCS), or ``None`` (local, memory).
        mtime_ns: modification time in integer nanoseconds since the epoch, or ``None``.
    """

    url: str
    size: int
    etag: str | None
    mtime_ns: int | None


def _call(fs: AbstractFileSystem, what: str, operation: Any, retry: RetryPolicy | None) -> Any:
    """Run ``operation()``; on remote filesystems under the retry policy (local, memory: once)."""
    if _is_local(fs) or _is_memory(fs):
        return operation()
    return call_with_retry(operation, what=what, policy=retry or DEFAULT_RETRY)


def _local_temp_path(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")


def write_atomic(url: str, data: bytes, storage_options: StorageOptions = None, *,
                 retry: RetryPolicy | None = None) -> None:
    """Write ``data`` to ``url``, replacing any object there; readers see old or new, never half.

    Raises:
        StorageError: the write failed.
    """
    fs, path = filesystem(url, storage_options)
    try:
        if _is_local(fs):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temp = _local_temp_path(path)
            try:
                with open(temp, "wb") as handle:
                    handle.write(data)
                os.replace(temp, path)
            finally:
                if os.path.exists(temp):
                    os.unlink(temp)
        else:
            _call(fs, f"write {url}", lambda: fs.pipe_file(path, data), retry)
    except OSError as e:
        raise StorageError(f"cannot write {url!r}: {e}") from e


def write_create_only(url: str, data: bytes, storage_options: StorageOptions = None, *,
                      retry: RetryPolicy | None = None) -> bool:
    """Create ``url`` holding ``data`` unless an object already exists there.

    Exactly one of several concurrent callers gets ``True`` (see the module
    docstring for how each backend guarantees it); the others get ``False`` and
    the object keeps the winner's bytes.

    Raises:
        StorageError: the write failed for another reason than "already exists".
    """
    fs, path = filesystem(url, storage_options)
    try:
        if _is_local(fs):
            return _create_local(path, data)
        if _is_memory(fs):
            with _MEMORY_LOCK:
                fs.pipe_file(path, data, mode="create")
            return True
        _call(fs, f"create {url}", lambda: fs.pipe_file(path, data, mode="create"), retry)
        return True
    except FileExistsError:
        logger.debug("create-only write lost: %s already exists", url)
        return False
    except OSError as e:
        raise StorageError(f"cannot create {url!r}: {e}") from e


def _create_local(path: str, data: bytes) -> bool:
    """Write a temp file, then hard-link it to ``path`` (``link`` fails if ``path`` exists)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temp = _local_temp_path(path)
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        except OSError:
            # Filesystems without hard links: O_EXCL create (a reader may briefly see it partial).
            with open(path, "xb") as handle:
                handle.write(data)
        return True
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def read_bytes(url: str, storage_options: StorageOptions = None, *, retry: RetryPolicy | None = None) -> bytes:
    """Read a whole object.

    Raises:
        FileNotFoundError: nothing at ``url``.
        StorageError: the read failed otherwise.
    """
    fs, path = filesystem(url, storage_options)
    try:
        return _call(fs, f"read {url}", lambda: fs.cat_file(path), retry)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StorageError(f"cannot read {url!r}: {e}") from e


def exists(url: str, storage_options: StorageOptions = None, *, retry: RetryPolicy | None = None) -> bool:
    """Whether an object (or folder) exists at ``url``."""
    fs, path = filesystem(url, storage_options)
    try:
        return bool(_call(fs, f"check {url}", lambda: fs.exists(path), retry))
    except OSError as e:
        raise StorageError(f"cannot check {url!r}: {e}") from e


def exists_many(
    urls: Iterable[str], storage_options: StorageOptions = None, *, concurrency: int = 64,
    retry: RetryPolicy | None = None,
) -> list[bool]:
    """:func:`exists` for many URLs of one filesystem, concurrently on async backends (S3).

    On S3 each URL costs one HEAD request; ``concurrency`` of them are in flight at once.

    Raises:
        StorageError: a check failed.
    """
    url_list = list(urls)
    if not url_list:
        return []
    fs, _ = filesystem(url_list[0], storage_options)
    paths = [fs._strip_protocol(url) for url in url_list]
    try:
        if isinstance(fs, AsyncFileSystem) and fs.loop is not None:
            return list(_call(fs, f"check {len(paths)} objects", lambda: sync(fs.loop, _exists_async, fs, paths,
                                                                            concurrency), retry))
        return [bool(fs.exists(path)) for path in paths]
    except OSError as e:
        raise StorageError(f"cannot check {len(paths)} objects under {url_list[0]!r}: {e}") from e


async def _exists_async(fs: AsyncFileSystem, paths: list[str], concurrency: int) -> list[bool]:
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(path: str) -> bool:
        async with gate:
            return bool(await fs._exists(path))

    return list(await asyncio.gather(*(one(path) for path in paths)))


def read_many(
    urls: Sequence[str], storage_options: StorageOptions = None, *, concurrency: int = 64,
    retry: RetryPolicy | None = None,
) -> list[bytes | None]:
    """Read many small objects of one filesystem; ``None`` where an object does not exist.

    One GET per URL, ``concurrency`` in flight on async backends (S3). For
    probing whether small objects such as commit markers exist this is cheaper
    than :func:`exists_many`: s3fs answers a missing key with a HEAD *and* a
    LIST (to rule out a folder), a GET needs one request.

    Raises:
        StorageError: a read failed for another reason than "not found".
    """
    if not urls:
        return []
    fs, _ = filesystem(urls[0], storage_options)
    paths = [fs._strip_protocol(url) for url in urls]
    try:
        if isinstance(fs, AsyncFileSystem) and fs.loop is not None:
            return list(_call(fs, f"read {len(paths)} objects", lambda: sync(fs.loop, _read_many_async, fs, paths,
                                                                           concurrency), retry))
        return [_read_or_none(fs, path) for path in paths]
    except OSError as e:
        raise StorageError(f"cannot read {len(paths)} objects under {urls[0]!r}: {e}") from e


def _read_or_none(fs: AbstractFileSystem, path: str) -> bytes | None:
    try:
        return fs.cat_file(path)
    except (FileNotFoundError, IsADirectoryError):
        return None


async def _read_many_async(fs: AsyncFileSystem, paths: list[str], concurrency: int) -> list[bytes | None]:
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(path: str) -> bytes | None:
        async with gate:
            try:
                return await fs._cat_file(path)
            except (FileNotFoundError, IsADirectoryError):
                return None

    return list(await asyncio.gather(*(one(path) for path in paths)))


def info_to_object(fs: AbstractFileSystem, entry: Mapping[str, Any]) -> ObjectInfo:
    """Turn one fsspec ``info``/``ls`` entry into :class:`ObjectInfo`."""
    etag = entry.get("ETag") or entry.get("etag")
    mtime = entry.get("mtime", entry.get("LastModified", entry.get("created")))
    if hasattr(mtime, "timestamp"):
        mtime_ns: int | None = int(mtime.timestamp() * 1e9)
    elif isinstance(mtime, (int, float)):
        mtime_ns = int(mtime * 1e9)
    else:
        mtime_ns = None
    return ObjectInfo(
        url=url_of(fs, entry["name"]),
        size=int(entry.get("size") or 0),
        etag=str(etag).strip('"') if etag else None,
        mtime_ns=mtime_ns,
    )


def object_info(url: str, storage_options: StorageOptions = None, *,
                retry: RetryPolicy | None = None) -> ObjectInfo:
    """Size, etag and mtime of one object (one HEAD on S3).

    Raises:
        FileNotFoundError: nothing at ``url``.
        StorageError: the request failed otherwise.
    """
    fs, path = filesystem(url, storage_options)
    try:
        entry = _call(fs, f"stat {url}", lambda: fs.info(path), retry)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StorageError(f"cannot stat {url!r}: {e}") from e
    return info_to_object(fs, entry)


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of bytes in memory."""
    return hashlib.sha256(data).hexdigest()


def sha256_object(url: str, storage_options: StorageOptions = None, *, retry: RetryPolicy | None = None) -> str:
    """Hex sha256 of an object, streamed in :data:`HASH_BLOCK_BYTES` reads (memory O(1 MiB)).

    Raises:
        FileNotFoundError: nothing at ``url``.
        StorageError: the read failed otherwise.
    """
    fs, path = filesystem(url, storage_options)

    def digest_once() -> str:  # a retry starts the digest over
        digest = hashlib.sha256()
        with fs.open(path, "rb", block_size=HASH_BLOCK_BYTES) as handle:
            while block := handle.read(HASH_BLOCK_BYTES):
                digest.update(block)
        return digest.hexdigest()

    try:
        return str(_call(fs, f"hash {url}", digest_once, retry))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StorageError(f"cannot read {url!r}: {e}") from e

