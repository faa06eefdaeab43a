"""Listing a catalogue: walk a folder or prefix and yield one :class:`TrackRef` per audio object.

:func:`list_audio` walks any fsspec URL (local folder, ``s3://bucket/prefix``,
``memory://``) folder by folder, in sorted depth-first order, and yields tracks
as it goes: memory stays bounded by one folder's listing plus the look-ahead,
whatever the catalogue's size. The next folders are listed and the local files
hashed (for their track ids, :mod:`stemflow.catalogue.tracks`) concurrently, on
a small thread pool; the order does not depend on the concurrency.

What counts as audio is the one format table, :mod:`stemflow.audio.formats`:
the catalogue lists exactly the files the decoder reads (``x.stem.mp4`` is one
track). Hidden names and excluded subtrees (the output inside the catalogue)
are skipped. Local folders follow the rules of :mod:`stemflow.catalogue.local_walk`:
only regular files are entries (never a FIFO, socket or device), links are
followed at most once per real path and never into an excluded folder, so a
local catalogue can neither hang nor loop a run.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from fsspec import AbstractFileSystem

from stemflow.audio.formats import DECODABLE_EXTENSIONS, audio_suffix
from stemflow.catalogue.local_walk import LocalWalk, list_local_folder
from stemflow.store.lookahead import ordered_map
from stemflow.catalogue.tracks import Fingerprint, TrackRef, track_from_info
from stemflow.errors import StorageError
from stemflow.store.calls import describe_mode
from stemflow.store.objects import ObjectInfo, info_to_object
from stemflow.store.paths import StorageOptions, filesystem, is_local_fs, normalise_url, url_of

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS: tuple[str, ...] = tuple(sorted(e.lstrip(".") for e in DECODABLE_EXTENSIONS))
"""Extensions listed by default, without the dot: every one the decoder reads. ``x.stem.mp4`` is one track."""


def audio_extension(name: str, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> str | None:
    """The audio extension of a file name without the dot (``"stem.mp4"`` for stems files), or ``None``.

    A name is audio when :func:`stemflow.audio.formats.audio_suffix` says so and
    its extension is among ``extensions`` (case-insensitive, with or without the
    dot); a ``.stem.mp4`` file counts when ``"mp4"`` or ``"stem.mp4"`` is.
    """
    suffix = audio_suffix(name)
    if suffix is None:
        return None
    wanted = {e.lower().lstrip(".") for e in extensions}
    extension = suffix.lstrip(".")
    return extension if extension in wanted or extension.rsplit(".", 1)[-1] in wanted else None


def _list_folder(fs: AbstractFileSystem, folder: str) -> list[dict[str, Any]]:
    """One folder's entries, sorted by name (local folders: :func:`stemflow.catalogue.local_walk.list_local_folder`)."""
    if is_local_fs(fs):
        return list_local_folder(folder)
    entries = fs.ls(folder, detail=True)
    fs.invalidate_cache(folder)  # keep s3fs' listing cache from growing with the catalogue
    return sorted(entries, key=lambda e: e["name"])


Accept = Callable[[dict[str, Any], "str | None"], "str | None | bool"]
"""``accept(entry, parent_real)``: the entry's real path (local), ``True`` (keep), or ``None``/``False`` (skip)."""


def _iter_folder_entries(
    fs: AbstractFileSystem, root: str, skip_folder: Callable[[str], bool], pool: ThreadPoolExecutor, ahead: int,
    accept: Accept, root_real: str | None = None,
) -> Iterator[dict[str, Any]]:
    """File entries under ``root`` in sorted depth-first order, listing one folder at a time.

    The next ``ahead`` folders (in that same order) are listed concurrently on
    ``pool`` while the current one is consumed, so the order does not depend on
    ``ahead`` and at most ``ahead`` listings are held beyond the current one.
    Folders for which ``skip_folder(path)`` is true are not descended into;
    every entry passes ``accept`` (in listing order, on the consuming thread).
    """
    top = root.rstrip("/") or "/"
    pending: deque[tuple[str, str | None]] = deque([(top, root_real)])
    listings: dict[str, Future[list[dict[str, Any]]]] = {}
    while pending:
        for upcoming, _ in itertools.islice(pending, max(1, ahead)):
            if upcoming not in listings:
                listings[upcoming] = pool.submit(_list_folder, fs, upcoming)
        folder, folder_real = pending.popleft()
        try:
            entries = listings.pop(folder).result()
        except FileNotFoundError as e:
            if folder == top:
                raise StorageError(f"catalogue {url_of(fs, root)!r} does not exist") from e
            continue  # removed while we were listing
        except OSError as e:
            raise StorageError(f"cannot list {url_of(fs, folder)!r}: {e}") from e
        subfolders: list[tuple[str, str | None]] = []
        for entry in entries:
            name = entry["name"].rstrip("/")
            if name == folder.rstrip("/"):
                continue  # S3 "folder marker" objects
            is_folder = entry.get("type") == "directory"
            if is_folder and skip_folder(name):
                continue
            verdict = accept(entry, folder_real)
            if verdict is None or verdict is False:
                continue
            real = verdict if isinstance(verdict, str) else None
            if is_folder:
                subfolders.append((name, real))
            else:
                yield entry
        pending.extendleft(reversed(subfolders))


def _accept_stored(entry: dict[str, Any], parent_real: str | None) -> bool:
    """Object stores: every object and prefix is an entry (there are no links or special files)."""
    return True


def _local_root(root: str, exclude: Sequence[str], storage_options: StorageOptions) -> LocalWalk:
    """The walk state of a local catalogue folder; the local ones among ``exclude`` compared by real path."""
    local_excluded = []
    for url in exclude:
        fs, path = filesystem(url, storage_options)
        if is_local_fs(fs):
            local_excluded.append(path)
    return LocalWalk.for_root(root, local_excluded)


def _single_object(fs: AbstractFileSystem, root: str, url: str) -> bool:
    """Whether ``root`` is one object (``True``) or a folder (``False``).

    Raises:
        StorageError: it cannot be read, or it is a local FIFO, socket or device.
    """
    try:
        if not is_local_fs(fs):
            return bool(fs.isfile(root))
        mode = os.stat(root).st_mode
    except FileNotFoundError as e:
        raise StorageError(f"catalogue {url!r} does not exist") from e
    except OSError as e:
        raise StorageError(f"cannot open {url!r}: {e}") from e
    if stat.S_ISDIR(mode):
        return False
    if not stat.S_ISREG(mode):
        raise StorageError(f"catalogue {url!r} is {describe_mode(mode)}, neither a folder nor a regular file")
    return True


def list_audio(
    url: str,
    *,
    storage_options: StorageOptions = None,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    fingerprint: Fingerprint = "content",
    exclude: Sequence[str] = (),
    include_hidden: bool = False,
    workers: int = 8,
) -> Iterator[TrackRef]:
    """Yield every audio object under ``url``, recursively, folder by folder (a generator).

    Args:
        url: a folder/prefix, or a single object.
        extensions: the extensions to keep, case-insensitive (see :func:`audio_extension`);
            by default every extension the decoder reads.
        fingerprint: how local/memory objects (no ETag) are fingerprinted, see :mod:`stemflow.catalogue.tracks`.
        exclude: URLs whose subtrees are skipped (e.g. the output location if it lies inside);
            local ones by real path, so no link leads into them.
        include_hidden: also list names starting with ``.`` (skipped by default).
        workers: folders listed ahead and files hashed concurrently (threads). The
            output order is the same for any value: sorted, depth first.

    Raises:
        StorageError: a listing failed, or ``url`` does not exist or is a FIFO, socket or device.
    """
    fs, root = filesystem(url, storage_options)
    excluded = tuple(normalise_url(u, storage_options).rstrip("/") + "/" for u in exclude)

    def skip(path: str) -> bool:
        folder_url = url_of(fs, path) + "/"
        name = path.rsplit("/", 1)[-1]
        if name in (".", ".."):
            # an object-store key with a literal "." or ".." component cannot be read safely
            # (HTTP clients normalise it to another key): never listed, but never silently
            logger.warning("skipping %s: a %r path component cannot be addressed safely", folder_url, name)
            return True
        hidden = not include_hidden and name.startswith(".")
        return hidden or any(folder_url.startswith(prefix) for prefix in excluded)

    def wanted(base: str) -> bool:
        return (include_hidden or not base.startswith(".")) and audio_extension(base, extensions) is not None

    def keep(info: ObjectInfo) -> bool:
        return wanted(info.url.rsplit("/", 1)[-1])

    def to_track(info: ObjectInfo) -> TrackRef:
        return track_from_info(info, storage_options=storage_options, fingerprint=fingerprint)

    single = _single_object(fs, root, url)
    accept: Accept = _accept_stored
    root_real = None
    if is_local_fs(fs) and not single:
        walk = _local_root(root, exclude, storage_options)
        root_real = walk.root_real

        def accept_local(entry: dict[str, Any], parent_real: str | None) -> str | None:
            if entry["type"] != "directory" and not wanted(os.path.basename(entry["name"])):
                return None  # not a catalogue entry by its name: not even looked at
            return walk.accept(entry, parent_real or walk.root_real)

        accept = accept_local
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="stemflow-list") as pool:
        entries = [fs.info(root)] if single else _iter_folder_entries(fs, root, skip, pool, workers, accept,
                                                                      root_real)
        infos = (info for info in (info_to_object(fs, e) for e in entries) if keep(info))
        yield from ordered_map(to_track, infos, pool, workers)

