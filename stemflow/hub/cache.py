"""The weights cache: download, verify and find published checkpoints.

Layout under a cache folder (the CLI passes ``$STEMFLOW_CACHE``, by default
``~/.cache/stemflow``; see :func:`default_cache_dir`)::

    <cache>/weights/<registry name>/<filename>          the checkpoint
    <cache>/weights/<registry name>/<filename>.sha256   sidecar: {sha256, size, mtime_ns}
    <cache>/pins.json                                   hashes pinned on first download

Guarantees:

* Nothing half-written is ever visible under the final name: a download goes
  to a temporary file in the same folder, is hashed while it streams, checked
  against the expected sha256 and only then renamed with ``os.replace``. Any
  failure (network, checksum, an exception from the progress callback, Ctrl-C)
  deletes the temporary file.
* The expected hash is the registry's published sha256, or for entries with
  ``pin_on_first_download`` the hash recorded in ``pins.json`` by the first
  download; a mismatch is a fatal :class:`ChecksumError` naming both hashes and
  the URL. Nothing is ever silently re-downloaded: a corrupted cached file is
  reported with the instruction to delete it.
* A cached file is re-hashed (full sha256, 1 MiB reads) only when its size or
  modification time differ from its sidecar, so a run does not re-read
  gigabytes each time it starts.
* Mirrors are tried in order on network errors; offline (``offline=True``, or
  no URL works) raises :class:`ModelNotAvailableError` saying which file to put
  where, where to download it from, and its sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.metadata
import json
import logging
import os
import tempfile
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from stemflow import __version__
from stemflow.errors import ChecksumError, ConfigError, ModelNotAvailableError, StorageError
from stemflow.hub.registry import ModelEntry

try:  # POSIX advisory locks; without them two processes may download the same file twice.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
logger = logging.getLogger(__name__)


READ_BLOCK_BYTES = 1 << 20


PINS_FILENAME = "pins.json"


SIDECAR_SUFFIX = ".sha256"


DEFAULT_TIMEOUT_S = 60.0


_USER_AGENT = f"stemflow/{__version__} (+https://github.com/stemflow)"


ProgressCallback = Callable[[int, "int | None"], None]


"""Called as ``progress(bytes_done, bytes_total)``; ``bytes_total`` is None when unknown."""


# Raised by urlopen/read for network trouble: URLError (incl. HTTPError), refused or reset
# connections, timeouts, TLS errors (all OSError) and http.client protocol errors.
_NETWORK_ERRORS = (OSError, http.client.HTTPException)


class _TransferError(Exception):
    """A download attempt failed for a reason worth trying the next mirror for."""


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """``$STEMFLOW_CACHE`` if set, else ``~/.cache/stemflow`` (``env`` is e.g. ``os.environ``)."""
    configured = env.get("STEMFLOW_CACHE", "").strip()
    if configured:
        return Path(configured).expanduser()
    home = env.get("HOME", "").strip()
    return (Path(home) if home else Path.home()) / ".cache" / "stemflow"


def weights_path(entry: ModelEntry, cache_dir: str | Path) -> Path:
    """Where ``entry``'s checkpoint lives in the cache (whether or not it is there)."""
    if not entry.downloadable or entry.filename is None:
        raise ConfigError(f"model {entry.name!r} has no weights file (source: {entry.source})")
    return Path(cache_dir) / "weights" / entry.name / entry.filename


def sha256_file(path: str | Path) -> str:
    """Full sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(READ_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _atomic_write_text(path: Path, text: str) -> None:
    handle = tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False, encoding="utf-8"
    )
    try:
        with handle:
            handle.write(text)
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


def _write_sidecar(path: Path, sha256: str) -> None:
    stat = path.stat()
    record = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    _atomic_write_text(_sidecar(path), json.dumps(record, sort_keys=True) + "\n")


def cached_sha256(path: str | Path) -> str:
    """sha256 of a cached file, trusting its sidecar while size and mtime are unchanged."""
    path = Path(path)
    stat = path.stat()
    try:
        record = json.loads(_sidecar(path).read_text(encoding="utf-8"))
        if record["size"] == stat.st_size and record["mtime_ns"] == stat.st_mtime_ns:
            return str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    logger.info("hashing %s (%.1f MB)", path, stat.st_size / 1e6)
    sha256 = sha256_file(path)
    _write_sidecar(path, sha256)
    return sha256


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) while in the block."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def load_pins(cache_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The pinned hashes, by registry name: ``{name: {sha256, filename, url, pinned_at}}``."""
    path = Path(cache_dir) / PINS_FILENAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise StorageError(f"{path}: unreadable pins file ({e}); fix or delete it") from e
    pins = data.get("pins") if isinstance(data, dict) else None
    if not isinstance(pins, dict):
        raise StorageError(f"{path}: not a stemflow pins file (no 'pins' mapping)")
    return pins


def pinned_sha256(entry: ModelEntry, cache_dir: str | Path) -> str | None:
    """The hash pinned for ``entry`` (same file name) or None."""
    pin = load_pins(cache_dir).get(entry.name)
    if isinstance(pin, dict) and pin.get("filename") == entry.filename:
        return str(pin["sha256"])
    return None


def record_pin(entry: ModelEntry, cache_dir: str | Path, sha256: str, url: str | None) -> None:
    """Record ``sha256`` as the pinned hash of ``entry`` in ``<cache>/pins.json``."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / (PINS_FILENAME + ".lock")):
        pins = load_pins(cache)
        pins[entry.name] = {
            "sha256": sha256,
            "filename": entry.filename,
            "url": url,
            "pinned_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        _atomic_write_text(cache / PINS_FILENAME, json.dumps({"version": 1, "pins": pins}, indent=2) + "\n")
    logger.info("pinned %s sha256 %s in %s", entry.name, sha256, cache / PINS_FILENAME)


def expected_sha256(entry: ModelEntry, cache_dir: str | Path) -> str | None:
    """The published sha256, else the pinned one, else None (not pinned yet)."""
    return entry.sha256 or pinned_sha256(entry, cache_dir)


def _content_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _stream(url: str, sink: IO[bytes], progress: ProgressCallback | None, timeout_s: float) -> str:
    """Stream ``url`` into ``sink``; return the sha256 of the bytes written.

    Errors while connecting or reading (refused, DNS, TLS, timeouts, HTTP
    status, truncated body) become :class:`_TransferError`; errors writing
    ``sink`` (disk full) propagate as ``OSError``.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = hashlib.sha256()
    done = 0
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 - http(s) only
    except _NETWORK_ERRORS as e:
        raise _TransferError(f"{url}: {e!r}") from e
    with response:
        total = _content_length(response)
        if progress is not None:
            progress(0, total)
        while True:
            try:
                block = response.read(READ_BLOCK_BYTES)
            except _NETWORK_ERRORS as e:
                raise _TransferError(f"{url}: {e!r} after {done} bytes") from e
            if not block:
                break
            sink.write(block)
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
    if total is not None and done != total:
        raise _TransferError(f"{url}: connection closed after {done} of {total} bytes")
    return digest.hexdigest()


def _download_one(
    entry: ModelEntry,
    url: str,
    final: Path,
    expected: str | None,
    progress: ProgressCallback | None,
    timeout_s: float,
) -> str:
    """Download ``url`` next to ``final``, verify, rename into place; return its sha256."""
    handle = tempfile.NamedTemporaryFile(dir=final.parent, prefix=f".{final.name}.", suffix=".part", delete=False)
    temp = Path(handle.name)
    moved = False
    try:
        with handle:
            actual = _stream(url, handle, progress, timeout_s)
            handle.flush()
            os.fsync(handle.fileno())
        size = temp.stat().st_size
        if entry.size_bytes is not None and size != entry.size_bytes:
            raise ChecksumError(
                f"{entry.name}: {url} gave {size} bytes, the registry says {entry.size_bytes}; "
                "the file was discarded"
            )
        if expected is not None and actual != expected:
            raise ChecksumError(
                f"{entry.name}: sha256 mismatch for {url}: expected {expected}, got {actual}. "
                "The download was discarded; the source may have changed the file or the "
                "transfer was tampered with. Not retrying."
            )
        os.replace(temp, final)
        moved = True
    finally:
        if not moved:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
    _write_sidecar(final, actual)
    return actual


def offline_instructions(entry: ModelEntry, cache_dir: str | Path) -> str:
    """What to download from where, and where to put it, for a machine without network."""
    final = weights_path(entry, cache_dir)
    sources = "\n".join(f"    {url}" for url in entry.urls)
    sha = expected_sha256(entry, cache_dir)
    if sha is not None:
        check = f"Its sha256 must be {sha}."
    else:
        check = (
            "No sha256 is published for it; the first file placed there is hashed and pinned in "
            f"{Path(cache_dir) / PINS_FILENAME}, and enforced from then on."
        )
    return (
        f"Place the file\n    {final}\ndownloaded from (any one of)\n{sources}\n{check}"
    )


def _verify_cached(entry: ModelEntry, final: Path, cache_dir: Path) -> Path:
    actual = cached_sha256(final)
    expected = expected_sha256(entry, cache_dir)
    if expected is None:
        record_pin(entry, cache_dir, actual, url=None)
        return final
    if actual != expected:
        raise ChecksumError(
            f"{entry.name}: the cached file {final} has sha256 {actual}, expected {expected}. "
            f"It is corrupted or not the published file: delete it (rm '{final}') and run again "
            "to download it anew."
        )
    return final


def fetch_weights(
    entry: ModelEntry,
    cache_dir: str | Path,
    *,
    offline: bool = False,
    progress: ProgressCallback | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Path of ``entry``'s verified checkpoint in the cache, downloading it if needed.

    A cached, verified file is returned without network access. Otherwise the
    entry's URLs are tried in order (mirrors) on network errors; ``offline``
    skips the network. Raises :class:`ChecksumError` on a hash mismatch (fatal,
    nothing kept), :class:`ModelNotAvailableError` when no copy can be had, with
    the instructions of :func:`offline_instructions`, and :class:`StorageError`
    when the cache folder cannot be written.
    """
    cache = Path(cache_dir)
    final = weights_path(entry, cache)
    if final.is_file():
        return _verify_cached(entry, final, cache)
    if offline:
        raise ModelNotAvailableError(
            f"model {entry.name!r} is not in the cache and offline mode is on.\n"
            + offline_instructions(entry, cache)
        )
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(final.parent / ".download.lock"):
            if final.is_file():  # another process finished it while we waited
                return _verify_cached(entry, final, cache)
            _remove_stale_parts(final)
            return _download_with_mirrors(entry, final, cache, progress, timeout_s)
    except OSError as e:
        raise StorageError(f"{entry.name}: cannot write to the weights cache {final.parent}: {e}") from e


def _remove_stale_parts(final: Path) -> None:
    """Delete temporary files of downloads whose process died (we hold the download lock)."""
    for stale in final.parent.glob(f".{final.name}.*.part"):
        logger.info("removing %s, left by an interrupted download", stale)
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def weights_sha256(entry: ModelEntry, cache_dir: str | Path, *, offline: bool = True) -> str:
    """The verified sha256 of ``entry``'s cached checkpoint: the input :func:`stemflow.hub.model_id.model_id` needs.

    Cheap after the first call (sidecar). With ``offline=False`` the file is
    downloaded first if missing.
    """
    return cached_sha256(fetch_weights(entry, cache_dir, offline=offline))


def _download_with_mirrors(
    entry: ModelEntry, final: Path, cache: Path, progress: ProgressCallback | None, timeout_s: float
) -> Path:
    expected = expected_sha256(entry, cache)
    failures: list[str] = []
    for url in entry.urls:
        logger.info("downloading %s from %s", entry.name, url)
        try:
            actual = _download_one(entry, url, final, expected, progress, timeout_s)
        except _TransferError as e:
            logger.warning("download of %s failed, trying the next source: %s", entry.name, e)
            failures.append(str(e))
            continue
        if expected is None:
            record_pin(entry, cache, actual, url=url)
        return final
    raise ModelNotAvailableError(
        f"model {entry.name!r} is not in the cache and could not be downloaded:\n    "
        + "\n    ".join(failures)
        + "\n"
        + offline_instructions(entry, cache)
    )


def package_version(package: str) -> str | None:
    """Installed version of a distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def is_cached(entry: ModelEntry, cache_dir: str | Path) -> bool:
    """True when the weights are available locally (file present, or package installed).

    Cheap: it does not hash; :func:`fetch_weights` verifies before use.
    """
    if entry.source == "package":
        return entry.package is not None and package_version(entry.package) is not None
    return weights_path(entry, cache_dir).is_file()

