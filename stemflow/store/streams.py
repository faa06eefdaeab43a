"""Streamed reads and writes of objects, in bounded memory and bounded time.

:func:`read_blocks` yields an object's bytes block by block: a local regular
file in 1 MiB reads, a remote object (S3, GCS) in ranged GETs of
:data:`REMOTE_BLOCK_BYTES`, each retried on its own, all of them within one
deadline (the retry policy's ``deadline_s``: a store that trickles cannot hold
the reader longer). :class:`BlockReader` wraps it as a read-only file object
for writers that copy from one (``tarfile``).

:func:`local_copy` gives a decoder that needs a seekable file a local copy of
an object: a local regular file as it is (no copy), anything else streamed
into a temporary file of this process (:mod:`stemflow.tempfiles`, so a killed
process's copies are swept), at most ``max_bytes`` long, removed afterwards.

:func:`open_atomic_writer` is the streamed counterpart of
:func:`stemflow.store.objects.write_atomic`: whatever is written to the handle
appears under the URL only when the block ends without an error, and never in
part. Locally the bytes go to a temporary sibling renamed into place
(:func:`stemflow.files.atomic_open`); elsewhere they are spooled to a local
temporary file, then uploaded in one ``put_file`` (on S3 a multipart upload,
visible only once completed), and the temporary file is removed whatever
happens. Memory stays at one block whatever the object's size.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO, BinaryIO

from stemflow.errors import StorageError
from stemflow.files import HASH_BLOCK_BYTES, atomic_open
from stemflow.store.calls import call, is_remote, open_regular_file
from stemflow.store.paths import StorageOptions, filesystem, is_local_fs
from stemflow.store.retry import DEFAULT_RETRY, Deadline, RetryPolicy
from stemflow.tempfiles import temp_file

REMOTE_BLOCK_BYTES = 8 << 20
"""Bytes per ranged GET when streaming a remote object (8 MiB)."""


def read_blocks(
    url: str, storage_options: StorageOptions = None, *, retry: RetryPolicy | None = None,
    block_bytes: int | None = None,
) -> Iterator[bytes]:
    """The bytes of the object at ``url``, in blocks of at most ``block_bytes``.

    Raises (when iterated):
        FileNotFoundError: nothing at ``url``.
        StorageError: a read failed, the deadline passed, the object changed size
            while read, or a local path is not a regular file.
    """
    fs, path = filesystem(url, storage_options)
    try:
        if is_local_fs(fs):
            with open_regular_file(path) as handle:
                while block := handle.read(block_bytes or HASH_BLOCK_BYTES):
                    yield block
            return
        policy = retry or DEFAULT_RETRY
        deadline = Deadline(policy.deadline_s)
        if not is_remote(fs):
            with fs.open(path, "rb") as handle:
                while block := handle.read(block_bytes or HASH_BLOCK_BYTES):
                    yield block
            return
        size = int(call(fs, f"stat {url}", "info", path, retry=policy, deadline=deadline).get("size") or 0)
        step = block_bytes or REMOTE_BLOCK_BYTES
        for start in range(0, size, step):
            end = min(size, start + step)
            block = call(fs, f"read {url} [{start}:{end}]", "cat_file", path, start=start, end=end,
                         retry=policy, deadline=deadline)
            if len(block) != end - start:
                raise StorageError(f"{url!r} changed while it was read ({len(block)} bytes at {start}, "
                                   f"expected {end - start})")
            yield block
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StorageError(f"cannot read {url!r}: {e}") from e


class BlockReader:
    """A read-only binary file object over :func:`read_blocks` (``read`` only; no seeking)."""

    def __init__(self, url: str, storage_options: StorageOptions = None, *, retry: RetryPolicy | None = None) -> None:
        self._blocks = read_blocks(url, storage_options, retry=retry)
        self._block = b""
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when ``size`` < 0); ``b""`` at the end."""
        if size is None or size < 0:
            rest = self._block[self._offset:] + b"".join(self._blocks)
            self._block, self._offset = b"", 0
            return rest
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            if self._offset >= len(self._block):
                self._block, self._offset = next(self._blocks, b""), 0
                if not self._block:
                    break
            part = self._block[self._offset:self._offset + wanted]
            self._offset += len(part)
            wanted -= len(part)
            parts.append(part)
        return b"".join(parts)


@contextlib.contextmanager
def local_copy(
    url: str, storage_options: StorageOptions = None, *, retry: RetryPolicy | None = None,
    max_bytes: int | None = None, suffix: str = "",
) -> Iterator[str]:
    """A local path holding the bytes of ``url`` for the duration of the block (see the module docstring).

    ``suffix`` ends the temporary file's name (decoders that go by the
    extension). Memory stays at one block whatever the object's size.

    Raises:
        FileNotFoundError: nothing at ``url``.
        StorageError: the read failed or its deadline passed, the object is over
            ``max_bytes`` (nothing more than ``max_bytes`` + one block is written),
            or a local path is not a regular file.
    """
    fs, path = filesystem(url, storage_options)
    if is_local_fs(fs):
        try:
            with open_regular_file(path) as handle:  # refuses FIFOs, devices, sockets
                size = os.fstat(handle.fileno()).st_size
        except FileNotFoundError:
            raise
        except OSError as e:
            raise StorageError(f"cannot read {url!r}: {e}") from e
        if max_bytes is not None and size > max_bytes:
            raise StorageError(f"{url!r} is larger than the {max_bytes} bytes allowed ({size}); not read")
        yield path
        return
    with temp_file("source", suffix) as (descriptor, local_path), os.fdopen(descriptor, "wb") as handle:
        total = 0
        for block in read_blocks(url, storage_options, retry=retry):
            total += len(block)
            if max_bytes is not None and total > max_bytes:
                raise StorageError(f"{url!r} is larger than the {max_bytes} bytes allowed; not read")
            handle.write(block)
        handle.flush()
        yield str(local_path)


@contextlib.contextmanager
def open_atomic_writer(
    url: str, storage_options: StorageOptions = None, *, retry: RetryPolicy | None = None,
) -> Iterator[BinaryIO]:
    """A handle whose bytes appear at ``url``, replacing any object there, only when the block ends cleanly.

    Raises:
        StorageError: the object could not be written (nothing is then visible at ``url``).
    """
    fs, path = filesystem(url, storage_options)
    try:
        if is_local_fs(fs):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with atomic_open(path) as handle:
                yield handle
            return
        with _spooled() as (handle, local_path):
            yield handle
            handle.flush()
            call(fs, f"upload {url}", "put_file", local_path, path, retry=retry)
    except OSError as e:
        raise StorageError(f"cannot write {url!r}: {e}") from e


@contextlib.contextmanager
def _spooled() -> Iterator[tuple[IO[bytes], str]]:
    """A local temporary file, open for writing, and its path; removed when the block ends."""
    with temp_file("upload", ".tmp") as (descriptor, local_path), os.fdopen(descriptor, "wb") as handle:
        yield handle, str(local_path)
