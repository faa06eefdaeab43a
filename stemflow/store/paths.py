"""Where objects live: fsspec URLs, the filesystem behind a URL, and safe key components.

Every URL the store handles (a local path, ``file://…``, ``s3://bucket/key``,
``memory://…``, ``gs://…``) is resolved here with :func:`filesystem` to an fsspec
filesystem and a path inside it, given explicit ``storage_options``
(:data:`StorageOptions`). :func:`normalise_url` gives the one canonical spelling
(``s3://b/k``, ``file:///abs/path``, ``memory:///p``) that track ids and records
are built from.

Keys are built only with :func:`join_url`, whose components pass
:func:`check_component`: a model id, track id, run id or stem name can never
climb out of the prefix it is joined under.

Reads and writes themselves are in :mod:`stemflow.store.objects`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from stemflow.errors import StorageError

StorageOptions = Mapping[str, Any] | AbstractFileSystem | None
"""fsspec filesystem keyword arguments, a ready filesystem, or ``None`` (defaults)."""

_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}$")


def filesystem(url: str, storage_options: StorageOptions = None) -> tuple[AbstractFileSystem, str]:
    """Resolve ``url`` to ``(filesystem, path inside it)``.

    Raises:
        StorageError: the protocol is unknown or its backend is not installed.
    """
    if isinstance(storage_options, AbstractFileSystem):
        fs = storage_options
        return fs, fs._strip_protocol(url)
    try:
        fs, path = url_to_fs(url, **dict(storage_options or {}))
    except (ValueError, ImportError, TypeError) as e:
        raise StorageError(f"cannot open a filesystem for {url!r}: {e}") from e
    return fs, path


def url_of(fs: AbstractFileSystem, path: str) -> str:
    """The normalised URL of ``path`` on ``fs``: ``s3://b/k``, ``file:///abs``, ``memory:///p``."""
    return fs.unstrip_protocol(fs._strip_protocol(path))


def normalise_url(url: str, storage_options: StorageOptions = None) -> str:
    """Canonical form of ``url``: relative local paths made absolute, protocol always explicit.

    >>> normalise_url("s3://bucket/a/b.wav")
    's3://bucket/a/b.wav'
    """
    fs, path = filesystem(url, storage_options)
    return url_of(fs, path)


def check_component(name: str, what: str = "path component") -> str:
    """Return ``name`` if it is safe as one component of an object key, else raise.

    Safe means: 1–200 characters from ``[A-Za-z0-9._=+-]``, starting with a letter
    or digit. That excludes ``..``, ``.``, ``/``, ``\\``, empty strings, absolute
    paths, whitespace and control characters, so a joined key can never leave the
    prefix it is joined under. Model ids, track ids, run ids and stem names all
    pass through this check.

    Raises:
        StorageError: ``name`` is not a safe component.
    """
    if not isinstance(name, str) or _SAFE_COMPONENT.fullmatch(name) is None:
        raise StorageError(
            f"unsafe {what} {name!r}: use 1-200 characters of [A-Za-z0-9._=+-], "
            "starting with a letter or digit"
        )
    return name


def join_url(base_url: str, *components: str) -> str:
    """Join safe components under ``base_url`` with ``/`` (each one checked).

    >>> join_url("s3://b/out", "stems", "m1", "abc", "vocals.flac")
    's3://b/out/stems/m1/abc/vocals.flac'

    Raises:
        StorageError: a component is unsafe (see :func:`check_component`).
    """
    for component in components:
        check_component(component)
    return "/".join([base_url.rstrip("/"), *components])


def is_local_fs(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` is the local disk (``file://``)."""
    return "file" in _protocols(fs)


def is_memory_fs(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` is fsspec's in-process ``memory://`` store."""
    return "memory" in _protocols(fs)


def _protocols(fs: AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
