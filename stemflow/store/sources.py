"""Reading a URL that stored data names (a marker's ``source_url``) only where the caller expects it.

A commit marker, a Parquet row or a run manifest is data anyone with write
access to the output can change, or that a crash or a bug can corrupt. Readers
that follow such a URL (the report plays a track's mixture) would otherwise
read whatever it names with the run's credentials: ``/dev/zero`` (never ends),
a FIFO (blocks for ever), ``/etc/shadow``, another bucket, ``http://`` anything.

:func:`check_source_url` lets a URL through only when it lies under one of the
*allowed roots* the caller names (the catalogue a run was given, or a
manifest's folder: :func:`catalogue_roots`):

* it parses as an fsspec URL of the same protocol (and bucket) as a root, with
  no ``.``/``..``/empty component, no control character, no query or fragment;
* its normalised form is the root itself or lies under ``<root>/``;
* locally, its *real* path (links resolved) lies under the root's real path,
  and it is a regular file (never a FIFO, socket or device).

:func:`read_source` then reads it with a size cap and the storage deadline.
A refusal is a :class:`~stemflow.errors.StorageError` saying why; callers turn
it into a note or an error row, never a read.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Sequence

from fsspec.core import split_protocol

from stemflow.errors import StorageError
from stemflow.files import describe_mode
from stemflow.store.objects import read_bytes
from stemflow.store.paths import StorageOptions, filesystem, is_local_fs, normalise_url
from stemflow.store.retry import RetryPolicy

_UNSAFE = re.compile(r"[\x00-\x1f\x7f?#\\]")


def catalogue_roots(catalogue_urls: Iterable[str], manifest_suffixes: Sequence[str]) -> list[str]:
    """The roots under which tracks of these catalogues may be read: a folder itself, a manifest's folder."""
    roots = []
    for url in catalogue_urls:
        text = str(url).rstrip("/")
        if text.lower().endswith(tuple(manifest_suffixes)) and "/" in text:
            text = text.rsplit("/", 1)[0]
        roots.append(text)
    return roots


def _components_safe(url: str) -> bool:
    """No control characters, query or fragment, and no ``.``, ``..`` or empty path component."""
    if _UNSAFE.search(url):
        return False
    _, path = split_protocol(url)
    parts = path.split("/")
    inner = parts[1:-1] if path.startswith("/") else parts[:-1]
    return all(p not in (".", "..") for p in parts) and all(inner) and bool(parts[-1])


def check_source_url(source_url: str, allowed_roots: Sequence[str], storage_options: StorageOptions = None) -> str:
    """``source_url`` normalised, if it may be read: under an allowed root, safe, (locally) a regular file.

    Raises:
        StorageError: it may not be read, and why.
    """
    if not isinstance(source_url, str) or not source_url or not _components_safe(source_url):
        raise StorageError(f"source URL {source_url!r} is malformed or has unsafe components; not read")
    protocol = split_protocol(source_url)[0] or "file"
    for root in allowed_roots:
        root_protocol = split_protocol(root)[0] or "file"
        if protocol != root_protocol:
            continue
        try:
            normalised, root_url = normalise_url(source_url, storage_options), normalise_url(root, storage_options)
        except StorageError:
            continue
        if normalised != root_url and not normalised.startswith(root_url.rstrip("/") + "/"):
            continue
        fs, path = filesystem(normalised, storage_options)
        if is_local_fs(fs):
            _check_local(path, filesystem(root_url, storage_options)[1], source_url)
        return normalised
    raise StorageError(f"source URL {source_url!r} lies outside {list(allowed_roots) or 'every allowed root'}; "
                       "not read")


def _check_local(path: str, root_path: str, source_url: str) -> None:
    """A local source must really lie under the root (links resolved) and be a regular file."""
    real, real_root = os.path.realpath(path), os.path.realpath(root_path)
    if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
        raise StorageError(f"source URL {source_url!r} leads to {real}, outside {real_root}; not read")
    try:
        mode = os.stat(real).st_mode
    except OSError as e:
        raise StorageError(f"source URL {source_url!r}: {e}") from e
    if not stat.S_ISREG(mode):
        raise StorageError(f"source URL {source_url!r} is {describe_mode(mode)}, not a regular file; not read")


def read_source(
    source_url: str, allowed_roots: Sequence[str], *, max_bytes: int, storage_options: StorageOptions = None,
    retry: RetryPolicy | None = None,
) -> bytes:
    """Read a source URL that stored data named, after :func:`check_source_url`, at most ``max_bytes``.

    Raises:
        StorageError: refused (outside the roots, unsafe, not a regular file), over ``max_bytes``, or unreadable.
        FileNotFoundError: it does not exist.
    """
    url = check_source_url(source_url, allowed_roots, storage_options)
    return read_bytes(url, storage_options, retry=retry, max_bytes=max_bytes)
