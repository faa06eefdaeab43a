"""Local file primitives shared by every layer: atomic writes and streamed sha256.

*Atomic* means a reader of ``path`` sees either the old content or the complete
new content, never a part of it: the bytes go to a temporary sibling (same
folder, hence same filesystem), are flushed and fsynced, and the sibling is then
renamed over ``path`` with :func:`os.replace` (or hard-linked to it, for a
create-only write). The folder is fsynced after the rename so the new name
survives a power cut. Whatever goes wrong, the temporary file is removed.

Temporary siblings are named ``.<name>.<random>.tmp``: hidden, and recognisable
as leftovers of a crash.

Reads of local files that may be hostile go through :func:`open_regular_file`:
opened without blocking and checked on the open descriptor, so a FIFO, a socket
or a device (``/dev/zero``) is refused instead of blocking or feeding a reader
for ever.

Object stores have their own atomic writes (:mod:`stemflow.store.objects`); this
module is for local paths only (the weights cache, stems written by the CLI, the
local backend of the store).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

HASH_BLOCK_BYTES = 1 << 20
"""Read size when streaming a file through sha256 (1 MiB)."""

FILE_MODE = 0o644
"""Permissions of files written here (``mkstemp`` would leave them 0600)."""


def temp_sibling(path: str | os.PathLike[str]) -> Path:
    """A new, empty temporary file next to ``path`` (created with ``mkstemp``); the caller removes it."""
    target = Path(path)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(descriptor)
    os.chmod(name, FILE_MODE)
    return Path(name)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, create_only: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; publish it under ``path`` when the block ends.

    For writers that need a path rather than a handle (libsndfile). On a clean
    exit the temporary file is fsynced and renamed over ``path``; with
    ``create_only`` it is hard-linked instead, and :class:`FileExistsError` is
    raised if ``path`` already exists (the existing file is left untouched). On
    any exception the temporary file is deleted and the exception propagates.
    """
    target = Path(path)
    temp = temp_sibling(target)
    try:
        yield temp
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        _publish(temp, target, create_only=create_only)
    finally:
        temp.unlink(missing_ok=True)


def _publish(temp: Path, target: Path, *, create_only: bool) -> None:
    if not create_only:
        os.replace(temp, target)
    else:
        try:
            os.link(temp, target)
        except FileExistsError:
            raise
        except OSError:
            # Filesystems without hard links: an exclusive create (a reader may briefly see it partial).
            with open(target, "xb") as handle, open(temp, "rb") as source:
                while block := source.read(HASH_BLOCK_BYTES):
                    handle.write(block)
                handle.flush()
                os.fsync(handle.fileno())
    _fsync_folder(target.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], *, create_only: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary handle on a temporary sibling of ``path``; publish it when the block ends.

    Same guarantees as :func:`atomic_path`; for writers that stream (downloads).
    """
    with atomic_path(path, create_only=create_only) as temp, open(temp, "wb") as handle:
        yield handle
        handle.flush()


def write_file_atomic(path: str | os.PathLike[str], data: bytes | str, *, create_only: bool = False) -> None:
    """Write ``data`` (``str`` is UTF-8 encoded) to ``path`` atomically; see :func:`atomic_path`.

    Raises:
        FileExistsError: ``create_only`` and ``path`` exists.
        OSError: the folder is missing or not writable, the disk is full, …
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_open(path, create_only=create_only) as handle:
        handle.write(payload)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a local regular file, read in :data:`HASH_BLOCK_BYTES` blocks (see :func:`open_regular_file`)."""
    with open_regular_file(path) as handle:
        return sha256_stream(handle)


class NotARegularFileError(OSError):
    """A path names a FIFO, socket, device or other special file: it is never read."""


def open_regular_file(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a local path for reading, refusing whatever is not a regular file (never blocking).

    The path is opened with ``O_NONBLOCK`` (a FIFO without a writer then opens
    at once instead of waiting for one) and checked with ``fstat`` on the open
    descriptor, so the check and the read concern the same file.

    Raises:
        FileNotFoundError: nothing at ``path``.
        IsADirectoryError: a folder.
        NotARegularFileError: a FIFO, socket, device or anything else that is not a regular file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(path, flags)
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"{path} is a folder")
        if not stat.S_ISREG(mode):
            raise NotARegularFileError(f"{path} is not a regular file ({describe_mode(mode)}); not read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def describe_mode(mode: int) -> str:
    """``"a FIFO"``, ``"a socket"``, ``"a character device"``… for a ``st_mode``."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a link")):
        if test(mode):
            return name
    return "not a regular file"



def sha256_stream(handle: BinaryIO) -> str:
    """Hex sha256 of what remains to be read from a binary handle (1 MiB reads)."""
    digest = hashlib.sha256()
    while block := handle.read(HASH_BLOCK_BYTES):
        digest.update(block)
    return digest.hexdigest()
