"""Downloading a weights file: stream it, hash it while it streams, verify, then publish it.

The bytes go to a temporary sibling of the final path (:func:`stemflow.files.atomic_open`),
are hashed as they are written, and are checked against the expected size and
sha256 before the file is renamed into place; any failure (network, checksum,
an exception from the progress callback, Ctrl-C) deletes the temporary file, so
nothing half-written ever appears under the final name. Network trouble is a
:class:`TransferError`, worth trying the next mirror for; a checksum mismatch is
a :class:`~stemflow.errors.ChecksumError`, never retried.

**Size cap.** A download never writes more than it may: the registry's
``size_bytes`` when known, else ``max_bytes`` (:data:`DEFAULT_MAX_DOWNLOAD_BYTES`).
A ``Content-Length`` over the cap is refused before the body is read; a body
that runs past it (no ``Content-Length``, or a lying one) is cut off there.
Both are :class:`~stemflow.errors.ChecksumError` (not the published file; the
temporary file is deleted), so a hostile or broken mirror cannot fill the disk.

Only http(s) through ``urllib`` (redirects followed); no credentials.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from stemflow import __version__
from stemflow.errors import ChecksumError
from stemflow.files import HASH_BLOCK_BYTES, atomic_open

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0

DEFAULT_MAX_DOWNLOAD_BYTES = 8 << 30
"""Largest weights file downloaded when the registry gives no size (8 GiB; published Roformers are < 2 GiB)."""

ProgressCallback = Callable[[int, "int | None"], None]
"""Called as ``progress(bytes_done, bytes_total)``; ``bytes_total`` is None when unknown."""

_USER_AGENT = f"stemflow/{__version__} (+https://github.com/stemflow)"

# Raised by urlopen/read for network trouble: URLError (incl. HTTPError), refused or reset
# connections, timeouts, TLS errors (all OSError) and http.client protocol errors.
_NETWORK_ERRORS = (OSError, http.client.HTTPException)


class TransferError(Exception):
    """A download attempt failed for a reason worth trying the next mirror for."""


def _content_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _over_cap(name: str, url: str, size: int, cap: int) -> ChecksumError:
    return ChecksumError(f"{name}: {url} sends {size} bytes, more than the {cap} allowed; the file was discarded")


def _stream(url: str, sink: IO[bytes], progress: ProgressCallback | None, timeout_s: float,
            max_bytes: int, name: str = "weights") -> str:
    """Stream ``url`` into ``sink``, at most ``max_bytes``; return the sha256 of the bytes written.

    Errors while connecting or reading (refused, DNS, TLS, timeouts, HTTP
    status, truncated body) become :class:`TransferError`; errors writing
    ``sink`` (disk full) propagate as ``OSError``; more than ``max_bytes``
    (announced or sent) is a :class:`ChecksumError`.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = hashlib.sha256()
    done = 0
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 - http(s) only
    except _NETWORK_ERRORS as e:
        raise TransferError(f"{url}: {e!r}") from e
    with response:
        total = _content_length(response)
        if total is not None and total > max_bytes:
            raise _over_cap(name, url, total, max_bytes)
        if progress is not None:
            progress(0, total)
        while True:
            try:
                block = response.read(min(HASH_BLOCK_BYTES, max_bytes - done + 1))
            except _NETWORK_ERRORS as e:
                raise TransferError(f"{url}: {e!r} after {done} bytes") from e
            if not block:
                break
            if done + len(block) > max_bytes:
                raise _over_cap(name, url, done + len(block), max_bytes)
            sink.write(block)
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
    if total is not None and done != total:
        raise TransferError(f"{url}: connection closed after {done} of {total} bytes")
    return digest.hexdigest()


def _check(name: str, url: str, size: int, actual: str, expected_sha256: str | None, size_bytes: int | None) -> None:
    """Raise :class:`ChecksumError` when the downloaded size or sha256 is not the expected one."""
    if size_bytes is not None and size != size_bytes:
        raise ChecksumError(
            f"{name}: {url} gave {size} bytes, the registry says {size_bytes}; the file was discarded"
        )
    if expected_sha256 is not None and actual != expected_sha256:
        raise ChecksumError(
            f"{name}: sha256 mismatch for {url}: expected {expected_sha256}, got {actual}. "
            "The download was discarded; the source may have changed the file or the "
            "transfer was tampered with. Not retrying."
        )


def _download_one(
    url: str, final: Path, name: str, expected_sha256: str | None, size_bytes: int | None,
    progress: ProgressCallback | None, timeout_s: float, max_bytes: int,
) -> str:
    """Download ``url`` to ``final`` (verified, then renamed into place); return its sha256."""
    with atomic_open(final) as handle:
        actual = _stream(url, handle, progress, timeout_s, size_bytes if size_bytes is not None else max_bytes, name)
        _check(name, url, handle.tell(), actual, expected_sha256, size_bytes)
    return actual


def download_first(
    urls: Sequence[str],
    final: Path,
    *,
    name: str,
    expected_sha256: str | None,
    size_bytes: int | None = None,
    progress: ProgressCallback | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
) -> tuple[str, str]:
    """Download to ``final`` from the first of the mirrors ``urls`` that works; return ``(url, sha256)``.

    ``name`` labels the messages; ``expected_sha256`` None accepts any content
    (the caller pins it). A network error moves on to the next URL; a size or
    hash mismatch, or more bytes than ``size_bytes`` (else ``max_bytes``), is a
    :class:`ChecksumError` at once, ``final`` untouched. When every URL fails,
    :class:`TransferError` lists each failure, one per line.
    """
    failures: list[str] = []
    for url in urls:
        logger.info("downloading %s from %s", name, url)
        try:
            sha256 = _download_one(url, final, name, expected_sha256, size_bytes, progress, timeout_s, max_bytes)
        except TransferError as e:
            logger.warning("download of %s failed, trying the next source: %s", name, e)
            failures.append(str(e))
            continue
        return url, sha256
    raise TransferError("\n    ".join(failures))
