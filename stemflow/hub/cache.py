"""The weights cache: where published checkpoints live, and getting a verified copy there.

Layout under a cache folder (the CLI passes ``$STEMFLOW_CACHE``, by default
``~/.cache/stemflow``; see :func:`default_cache_dir`)::

    <cache>/weights/<registry name>/<filename>          the checkpoint
    <cache>/weights/<registry name>/<filename>.sha256   sidecar: {sha256, size, mtime_ns}
    <cache>/pins.json                                   hashes pinned on first download

Guarantees:

* Nothing half-written is ever visible under the final name: downloads are
  hashed while they stream, verified, and only then renamed into place
  (:mod:`stemflow.hub.download`). Temporary files of a download whose process
  died are removed by the next download of that file.
* The expected hash is the registry's published sha256, or for entries with
  ``pin_on_first_download`` the hash recorded in ``pins.json`` by the first
  download (:mod:`stemflow.hub.pins`); a mismatch is a fatal
  :class:`ChecksumError` naming both hashes and the URL. Nothing is ever
  silently re-downloaded: a corrupted cached file is reported with the
  instruction to delete it.
* :func:`fetch_weights` re-hashes a cached file (full sha256, 1 MiB reads) only
  when its size or modification time differ from its sidecar. That is a
  cheap presence check, not the verification: every *load* reads the file
  once, hashes those bytes and parses the same bytes
  (:func:`stemflow.models.checkpoint.load_verified_state`), so a same-size
  tampered file with its mtime restored passes here and is refused there.
* Downloads are capped: never more bytes than the registry's ``size_bytes``,
  else ``max_bytes`` (8 GiB by default).
* Mirrors are tried in order on network errors; offline (``offline=True``, or
  no URL works) raises :class:`ModelNotAvailableError` saying which file to put
  where, where to download it from, and its sha256.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
from collections.abc import Mapping
from pathlib import Path

from stemflow.errors import ChecksumError, ConfigError, ModelNotAvailableError, StorageError
from stemflow.files import sha256_file, write_file_atomic
from stemflow.hub.download import (
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_TIMEOUT_S,
    ProgressCallback,
    TransferError,
    download_first,
)
from stemflow.hub.locks import file_lock
from stemflow.hub.pins import PINS_FILENAME, expected_sha256, record_pin
from stemflow.hub.registry import ModelEntry

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".sha256"

# Temporary files of interrupted downloads: ``.tmp`` (stemflow.files.atomic_open); ``.part``, as older
# stemflow versions named them.
_TEMPORARY_SUFFIXES = (".tmp", ".part")


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


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _write_sidecar(path: Path, sha256: str) -> None:
    stat = path.stat()
    record = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    write_file_atomic(_sidecar(path), json.dumps(record, sort_keys=True) + "\n")


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
    return f"Place the file\n    {final}\ndownloaded from (any one of)\n{sources}\n{check}"


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
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
) -> Path:
    """Path of ``entry``'s checkpoint in the cache, downloading (and verifying) it if needed.

    A cached, verified file is returned without network access. Otherwise the
    entry's URLs are tried in order (mirrors) on network errors; ``offline``
    skips the network. Raises :class:`ChecksumError` on a hash mismatch (fatal,
    nothing kept), :class:`ModelNotAvailableError` when no copy can be had, with
    the instructions of :func:`offline_instructions`, and :class:`StorageError`
    when the cache folder cannot be written. A download never writes more than
    the entry's ``size_bytes``, else ``max_bytes``.

    A cached file is checked against its sidecar (size and mtime) only: the
    load itself hashes the bytes it loads (:mod:`stemflow.hub.loading`), so this
    path must not be taken for verified weights by anything that reads them.
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
        with file_lock(final.parent / ".download.lock"):
            if final.is_file():  # another process finished it while we waited
                return _verify_cached(entry, final, cache)
            _remove_stale_temporaries(final)
            return _download(entry, final, cache, progress, timeout_s, max_bytes)
    except OSError as e:
        raise StorageError(f"{entry.name}: cannot write to the weights cache {final.parent}: {e}") from e


def _remove_stale_temporaries(final: Path) -> None:
    """Delete temporary files of downloads whose process died (we hold the download lock)."""
    for suffix in _TEMPORARY_SUFFIXES:
        for stale in final.parent.glob(f".{final.name}.*{suffix}"):
            logger.info("removing %s, left by an interrupted download", stale)
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def _download(
    entry: ModelEntry, final: Path, cache: Path, progress: ProgressCallback | None, timeout_s: float,
    max_bytes: int,
) -> Path:
    """Download ``entry`` from its first working mirror, then record its sidecar (and pin)."""
    expected = expected_sha256(entry, cache)
    try:
        url, actual = download_first(
            entry.urls, final, name=entry.name, expected_sha256=expected, size_bytes=entry.size_bytes,
            progress=progress, timeout_s=timeout_s, max_bytes=max_bytes,
        )
    except TransferError as e:
        raise ModelNotAvailableError(
            f"model {entry.name!r} is not in the cache and could not be downloaded:\n    {e}\n"
            + offline_instructions(entry, cache)
        ) from e
    _write_sidecar(final, actual)
    if expected is None:
        record_pin(entry, cache, actual, url=url)
    return final


def weights_sha256(entry: ModelEntry, cache_dir: str | Path, *, offline: bool = True) -> str:
    """The sha256 of ``entry``'s cached checkpoint, as checked by :func:`fetch_weights` (for listings and display).

    Cheap after the first call (sidecar, re-hashed when size or mtime change).
    With ``offline=False`` the file is downloaded first if missing. A run's
    ``model_id`` comes from the weights it actually loads
    (:attr:`stemflow.hub.loading.LoadedModel.weights_sha256`, hashed from the bytes loaded).
    """
    return cached_sha256(fetch_weights(entry, cache_dir, offline=offline))


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
