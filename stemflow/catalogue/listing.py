"""Listing a catalogue: walk a folder or prefix and yield one :class:`TrackRef` per audio object.

:func:`list_audio` walks any fsspec URL (local folder, ``s3://bucket/prefix``,
``memory://``) folder by folder, in sorted depth-first order, and yields tracks
as it goes: memory stays bounded by one folder's listing plus the look-ahead,
whatever the catalogue's size. The next folders are listed and the local files
hashed (for their track ids, :mod:`stemflow.catalogue.tracks`) concurrently, on
a small thread pool; the order does not depend on the concurrency.

What counts as audio is the one format table, :mod:`stemflow.audio.formats`:
the catalogue lists exactly the files the decoder reads (``x.stem.mp4`` is one
track). Hidden names, excluded subtrees (the output inside the catalogue),
dangling links and symlink loops are skipped.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from fsspec import AbstractFileSystem

from stemflow.audio.formats import DECODABLE_EXTENSIONS, audio_suffix
from stemflow.store.lookahead import ordered_map
from stemflow.catalogue.tracks import Fingerprint, TrackRef, track_from_info
from stemflow.errors import StorageError
from stemflow.store.objects import ObjectInfo, info_to_object
from stemflow.store.paths import StorageOptions, filesystem, normalise_url, url_of

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
    entries = fs.ls(folder, detail=True)
    fs.invalidate_cache(folder)  # keep s3fs' listing cache from growing with the catalogue
    resolved = [_follow_link(e) if e.get("islink") else e for e in entries]
    return sorted((e for e in resolved if e is not None), key=lambda e: e["name"])


def _follow_link(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A local symlink as the file or folder it points to; ``None`` if dangling."""
    try:
        target = os.stat(entry["name"])
    except OSError:
        logger.warning("skipping dangling link %s", entry["name"])
        return None
    kind = "directory" if stat.S_ISDIR(target.st_mode) else "file"
    return {**entry, "type": kind, "size": target.st_size, "mtime": target.st_mtime}


def _is_link_loop(entry: Mapping[str, Any], parent: str) -> bool:
    """A local symlinked folder pointing at one of its own ancestors (would walk forever)."""
    if not entry.get("islink"):
        return False
    target = os.path.realpath(entry["name"])
    here = os.path.realpath(parent)
    if here == target or here.startswith(target.rstrip("/") + "/"):
        logger.warning("not following %s: it links back to %s", entry["name"], target)
        return True
    return False


def _iter_folder_entries(
    fs: AbstractFileSystem, root: str, skip_folder: Callable[[str], bool], pool: ThreadPoolExecutor, ahead: int
) -> Iterator[dict[str, Any]]:
    """File entries under ``root`` in sorted depth-first order, listing one folder at a time.

    The next ``ahead`` folders (in that same order) are listed concurrently on
    ``pool`` while the current one is consumed, so the order does not depend on
    ``ahead`` and at most ``ahead`` listings are held beyond the current one.
    Folders for which ``skip_folder(path)`` is true are not descended into.
    """
    top = root.rstrip("/") or "/"
    pending: deque[str] = deque([top])
    listings: dict[str, Future[list[dict[str, Any]]]] = {}
    while pending:
        for upcoming in itertools.islice(pending, max(1, ahead)):
            if upcoming not in listings:
                listings[upcoming] = pool.submit(_list_folder, fs, upcoming)
        folder = pending.popleft()
        try:
            entries = listings.pop(folder).result()
        except FileNotFoundError as e:
            if folder == top:
                raise StorageError(f"catalogue {url_of(fs, root)!r} does not exist") from e
            continue  # removed while we were listing
        except OSError as e:
            raise StorageError(f"cannot list {url_of(fs, folder)!r}: {e}") from e
        subfolders = []
        for entry in entries:
            name = entry["name"].rstrip("/")
            if name == folder.rstrip("/"):
                continue  # S3 "folder marker" objects
            if entry.get("type") == "directory":
                if not skip_folder(name) and not _is_link_loop(entry, folder):
                    subfolders.append(name)
            else:
                yield entry
        pending.extendleft(reversed(subfolders))


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
        exclude: URLs whose subtrees are skipped (e.g. the output location if it lies inside).
        include_hidden: also list names starting with ``.`` (skipped by default).
        workers: folders listed ahead and files hashed concurrently (threads). The
            output order is the same for any value: sorted, depth first.

    Raises:
        StorageError: a listing failed, or ``url`` does not exist.
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

    def keep(info: ObjectInfo) -> bool:
        base = info.url.rsplit("/", 1)[-1]
        return (include_hidden or not base.startswith(".")) and audio_extension(base, extensions) is not None

    def to_track(info: ObjectInfo) -> TrackRef:
        return track_from_info(info, storage_options=storage_options, fingerprint=fingerprint)

    try:
        single = fs.isfile(root)
    except OSError as e:
        raise StorageError(f"cannot open {url!r}: {e}") from e
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="stemflow-list") as pool:
        entries = [fs.info(root)] if single else _iter_folder_entries(fs, root, skip, pool, workers)
        infos = (info for info in (info_to_object(fs, e) for e in entries) if keep(info))
        yield from ordered_map(to_track, infos, pool, workers)

