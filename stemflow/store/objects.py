"""Object-store access for stemflow: every read and write of the output goes through here.

All functions take an fsspec URL (a local path, ``file://…``, ``s3://bucket/key``,
``memory://…``, ``gs://…``) and an explicit ``storage_options`` argument: either
the keyword arguments of the fsspec filesystem (e.g. ``{"key": …, "secret": …,
"client_kwargs": {"endpoint_url": …}}`` for S3) or an already constructed
:class:`fsspec.AbstractFileSystem`. The library never reads credentials from the
environment itself; fsspec's backends may (boto's credential chain).

Write semantics per backend:

=========  ===============================================  ===========================================
backend    :func:`write_atomic` (overwrite)                 :func:`write_create_only` (first writer wins)
=========  ===============================================  ===========================================
local      temp file in the same folder, fsynced, then      the same temp file, then ``os.link`` (fails
           ``os.replace`` (:mod:`stemflow.files`)           if present; :mod:`stemflow.files`)
s3         one ``PutObject`` (or a multipart upload,        ``If-None-Match: *`` on the PUT or on
           visible only when completed)                     ``CompleteMultipartUpload`` (HTTP 412 → exists)
memory     one assignment in the store                      check + write under a process-wide lock
other      ``fs.pipe_file``                                 ``fs.pipe_file(mode="create")`` (the backend's
                                                            guarantee; gcsfs, adlfs: check their docs)
=========  ===============================================  ===========================================

Readers therefore never observe a half-written object on local, S3 or memory.

Remote calls (S3, GCS…) are retried with exponential backoff and full jitter when
they fail transiently (throttling, resets, timeouts; see :mod:`stemflow.store.retry`),
and each operation ends within the policy's overall deadline, however slowly
the store answers (:mod:`stemflow.store.calls`): every function takes ``retry=``
(a :class:`~stemflow.store.retry.RetryPolicy`, default
:data:`~stemflow.store.retry.DEFAULT_RETRY`). Local reads refuse anything but a
regular file (a FIFO, a device such as ``/dev/zero``, a socket), so a path can
neither block a reader nor feed it for ever. Retrying a create-only write whose
first attempt did reach the store answers "already exists": callers that must
tell their own earlier attempt from another writer compare the stored bytes
(:func:`stemflow.store.commit.commit_track` does).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fsspec import AbstractFileSystem
from fsspec.asyn import AsyncFileSystem, sync

from stemflow.errors import StorageError
from stemflow.files import HASH_BLOCK_BYTES, atomic_open, write_file_atomic
from stemflow.store.calls import call, open_regular_file, run
from stemflow.store.paths import StorageOptions, filesystem, is_local_fs, is_memory_fs, url_of
from stemflow.store.retry import Deadline, RetryPolicy

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MEMORY_LOCK = threading.Lock()
# memory:// checks existence and writes in two steps; this lock makes create-only
# writes atomic between threads of this process (memory:// is process-local anyway).


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


def _write_local(path: str, data: bytes, *, create_only: bool) -> None:
    """Create the folder, then write atomically and durably (:func:`stemflow.files.write_file_atomic`)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_file_atomic(path, data, create_only=create_only)


def write_atomic(url: str, data: bytes, storage_options: StorageOptions = None, *,
                 retry: RetryPolicy | None = None) -> None:
    """Write ``data`` to ``url``, replacing any object there; readers see old or new, never half.

    Raises:
        StorageError: the write failed.
    """
    fs, path = filesystem(url, storage_options)
    try:
        if is_local_fs(fs):
            _write_local(path, data, create_only=False)
        else:
            call(fs, f"write {url}", "pipe_file", path, data, retry=retry)
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
        if is_local_fs(fs):
            _write_local(path, data, create_only=True)
            return True
        if is_memory_fs(fs):
            with _MEMORY_LOCK:
                fs.pipe_file(path, data, mode="create")
            return True
        call(fs, f"create {url}", "pipe_file", path, data, mode="create", retry=retry)
        return True
    except FileExistsError:
        logger.debug("create-only write lost: %s already exists", url)
        return False
    except OSError as e:
        raise StorageError(f"cannot create {url!r}: {e}") from e


UPLOAD_CHUNK_BYTES = 64 << 20
"""Part size of the multipart upload :func:`write_create_only_file` makes of a large local file (64 MiB)."""


def write_create_only_file(url: str, local_path: str | os.PathLike[str], storage_options: StorageOptions = None,
                           *, retry: RetryPolicy | None = None, chunk_bytes: int = UPLOAD_CHUNK_BYTES) -> bool:
    """:func:`write_create_only` for the content of a local file, copied in blocks (memory stays at one part).

    Locally a temporary sibling is filled and linked into place; on S3 one
    ``put_file`` (a multipart upload of ``chunk_bytes`` parts for a large file,
    ``If-None-Match: *`` on its completion); memory:// reads the file (it holds
    every object in memory anyway).

    Raises:
        StorageError: the write failed for another reason than "already exists".
    """
    fs, path = filesystem(url, storage_options)
    try:
        if is_local_fs(fs):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open_regular_file(local_path) as source, atomic_open(path, create_only=True) as target:
                shutil.copyfileobj(source, target, HASH_BLOCK_BYTES)
            return True
        if is_memory_fs(fs):
            with open_regular_file(local_path) as source:
                data = source.read()
            return write_create_only(url, data, fs, retry=retry)
        call(fs, f"create {url}", "put_file", os.fspath(local_path), path, mode="create", chunksize=chunk_bytes,
             retry=retry)
        return True
    except FileExistsError:
        logger.debug("create-only write lost: %s already exists", url)
        return False
    except OSError as e:
        raise StorageError(f"cannot create {url!r} from {os.fspath(local_path)!r}: {e}") from e


def read_bytes(url: str, storage_options: StorageOptions = None, *, retry: RetryPolicy | None = None,
               max_bytes: int | None = None) -> bytes:
    """Read a whole object (one GET on S3), within the retry policy's deadline.

    ``max_bytes`` refuses an object larger than that without holding more than
    ``max_bytes + 1`` bytes of it (a ranged GET on remote stores). Locally only a
    regular file is read (never a FIFO, device or socket).

    Raises:
        FileNotFoundError: nothing at ``url``.
        StorageError: the read failed, the deadline passed, the object is over
            ``max_bytes`` or not a regular file.
    """
    fs, path = filesystem(url, storage_options)
    try:
        if is_local_fs(fs):
            data = _read_local(path, max_bytes)
        elif max_bytes is None:
            data = call(fs, f"read {url}", "cat_file", path, retry=retry)
        else:
            data = call(fs, f"read {url}", "cat_file", path, start=0, end=max_bytes + 1, retry=retry)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StorageError(f"cannot read {url!r}: {e}") from e
    if max_bytes is not None and len(data) > max_bytes:
        raise StorageError(f"{url!r} is larger than the {max_bytes} bytes allowed; not read")
    return data


def _read_local(path: str, max_bytes: int | None) -> bytes:
    """A local regular file's bytes; with ``max_bytes``, never more than ``max_bytes + 1`` of them.

    Raises:
        StorageError: the file is larger than ``max_bytes`` (said by its size, before reading).
    """
    with open_regular_file(path) as handle:
        if max_bytes is None:
            return handle.read()
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise StorageError(f"{path!r} is larger than the {max_bytes} bytes allowed ({size}); not read")
        parts, total = [], 0
        while total <= max_bytes and (block := handle.read(min(HASH_BLOCK_BYTES, max_bytes + 1 - total))):
            parts.append(block)
            total += len(block)
        return b"".join(parts)


def exists(url: str, storage_options: StorageOptions = None, *, retry: RetryPolicy | None = None) -> bool:
    """Whether an object (or folder) exists at ``url``."""
    fs, path = filesystem(url, storage_options)
    try:
        return bool(call(fs, f"check {url}", "exists", path, retry=retry))
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
    return _each_object(
        list(urls), storage_options, verb="check", concurrency=concurrency, retry=retry,
        one=lambda fs, path: bool(fs.exists(path)), one_async=_exists_async,
    )


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
    return _each_object(
        urls, storage_options, verb="read", concurrency=concurrency, retry=retry,
        one=_read_or_none, one_async=_read_or_none_async,
    )


def _each_object(
    urls: Sequence[str],
    storage_options: StorageOptions,
    *,
    verb: str,
    concurrency: int,
    retry: RetryPolicy | None,
    one: Callable[[AbstractFileSystem, str], T],
    one_async: Callable[[AsyncFileSystem, str], Awaitable[T]],
) -> list[T]:
    """``one(fs, path)`` for every URL (all on the filesystem of the first), in order.

    On async backends (S3) ``one_async`` runs instead, ``concurrency`` calls at
    once, the whole batch under the retry policy; elsewhere ``one`` runs in turn.
    """
    if not urls:
        return []
    fs, _ = filesystem(urls[0], storage_options)
    paths = [fs._strip_protocol(url) for url in urls]
    try:
        if isinstance(fs, AsyncFileSystem) and fs.loop is not None:
            def gather(deadline: Deadline) -> list[T]:
                left = deadline.remaining()
                timeout = None if left is None else max(left, 0.001)
                return list(sync(fs.loop, _gather, one_async, fs, paths, concurrency, timeout=timeout))
            return run(fs, f"{verb} {len(paths)} objects", gather, retry)
        return [one(fs, path) for path in paths]
    except OSError as e:
        raise StorageError(f"cannot {verb} {len(paths)} objects under {urls[0]!r}: {e}") from e


async def _gather(
    one_async: Callable[[AsyncFileSystem, str], Awaitable[T]], fs: AsyncFileSystem, paths: list[str],
    concurrency: int,
) -> list[T]:
    """``one_async(fs, path)`` for every path, at most ``concurrency`` at once; results in order."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def gated(path: str) -> T:
        async with gate:
            return await one_async(fs, path)

    return list(await asyncio.gather(*(gated(path) for path in paths)))


async def _exists_async(fs: AsyncFileSystem, path: str) -> bool:
    return bool(await fs._exists(path))


def _read_or_none(fs: AbstractFileSystem, path: str) -> bytes | None:
    try:
        if is_local_fs(fs):
            with open_regular_file(path) as handle:
                return handle.read()
        return fs.cat_file(path)
    except (FileNotFoundError, IsADirectoryError):
        return None


async def _read_or_none_async(fs: AsyncFileSystem, path: str) -> bytes | None:
    try:
        return await fs._cat_file(path)
    except (FileNotFoundError, IsADirectoryError):
        return None


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
        entry = call(fs, f"stat {url}", "info", path, retry=retry)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StorageError(f"cannot stat {url!r}: {e}") from e
    return info_to_object(fs, entry)


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of bytes in memory."""
    return hashlib.sha256(data).hexdigest()


def remove(url: str, storage_options: StorageOptions = None, *, retry: RetryPolicy | None = None) -> bool:
    """Delete one object; ``True`` if it was there (a folder is never removed: ``False``).

    Raises:
        StorageError: the delete failed.
    """
    fs, path = filesystem(url, storage_options)
    try:
        if is_local_fs(fs):
            os.unlink(path)
        else:
            call(fs, f"delete {url}", "rm_file", path, retry=retry)
        return True
    except (FileNotFoundError, IsADirectoryError):
        return False
    except OSError as e:
        raise StorageError(f"cannot delete {url!r}: {e}") from e


def sha256_object(url: str, storage_options: StorageOptions = None, *, retry: RetryPolicy | None = None) -> str:
    """Hex sha256 of an object, streamed in blocks (:func:`stemflow.store.streams.read_blocks`).

    Raises:
        FileNotFoundError: nothing at ``url``.
        StorageError: the read failed, its deadline passed, or a local path is not a regular file.
    """
    return size_and_sha256(url, storage_options, retry=retry)[1]


def size_and_sha256(url: str, storage_options: StorageOptions = None, *,
                    retry: RetryPolicy | None = None) -> tuple[int, str]:
    """``(bytes, hex sha256)`` of an object, from one streamed read; raises as :func:`sha256_object`."""
    from stemflow.store.streams import read_blocks  # streams builds on this module

    digest, size = hashlib.sha256(), 0
    for block in read_blocks(url, storage_options, retry=retry):
        digest.update(block)
        size += len(block)
    return size, digest.hexdigest()

