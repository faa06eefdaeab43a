"""The catalogue: which audio objects exist, their stable track ids, and what is left to do.

* :func:`list_audio` walks any fsspec URL (local folder, ``s3://bucket/prefix``,
  ``memory://``) folder by folder and yields :class:`TrackRef` as it goes.
* :func:`stemflow.manifest.read_manifest` streams a CSV or Parquet manifest
  (a ``url`` column, optional ``track_id``, ``size``, ``etag``, other columns carried along).
* :func:`plan` drops tracks already committed for a ``model_id`` and groups the
  rest into :class:`Shard` s.

Everything is a generator: memory stays bounded by one folder's listing (or one
manifest row batch) plus one shard, whatever the catalogue's size.

Track ids
---------
``track_id`` = first 20 hex digits of ``sha256(url \\0 size \\0 fingerprint)``,
where ``url`` is the normalised URL (``s3://b/k``, ``file:///abs/path``) and the
fingerprint is the object's ETag where the store has one (S3, GCS), otherwise
(local files, memory://) by default the sha256 of the content. So the same
object always gets the same id; a copy under another URL gets another id; new
content under the same URL gets a new id (new size, ETag or hash).

The content hash costs one full read of every local file at listing time
(~40 MB per 4-minute WAV; about 1 TB/hour from a fast SSD). It is stable under
``touch``, backup restores and ``rsync`` without ``-t``. ``fingerprint="mtime"``
uses the modification time in ns instead: free, but any touch gives a new id
and the track is separated again. 80-bit ids make a collision among 100 million
tracks unlikely (probability ≈ n²/2⁸¹ ≈ 4·10⁻⁹).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from fsspec import AbstractFileSystem

from stemflow.commit import committed_tracks, marker_url
from stemflow.errors import StorageError
from stemflow.storage import (
    ObjectInfo,
    StorageOptions,
    check_component,
    filesystem,
    info_to_object,
    normalise_url,
    object_info,
    read_many,
    sha256_object,
    url_of,
)

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS: tuple[str, ...] = ("wav", "flac", "ogg", "mp3", "aiff", "aif", "m4a", "mp4", "aac")
"""Extensions listed by default (matched case-insensitively). ``x.stem.mp4`` is one track."""

TRACK_ID_HEX = 20
Fingerprint = Literal["content", "mtime"]


@dataclass(frozen=True)
class TrackRef:
    """One source track.

    Attributes:
        url: normalised URL of the mixture (``s3://b/k``, ``file:///abs/path``).
        track_id: stable id, filesystem-safe (see the module docstring).
        size: bytes, or ``None`` when a manifest gave a ``track_id`` without a size.
        etag: the store's ETag (S3, GCS), without quotes.
        mtime_ns: modification time in ns since the epoch, when known.
        content_sha256: hex sha256 of the content, when it was computed (local files).
        extra: the manifest's other columns for this row (``group``, ``artist``, …).
    """

    url: str
    track_id: str
    size: int | None = None
    etag: str | None = None
    mtime_ns: int | None = None
    content_sha256: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for shard files, Ray rows); :meth:`from_dict` inverts it."""
        return {
            "url": self.url, "track_id": self.track_id, "size": self.size, "etag": self.etag,
            "mtime_ns": self.mtime_ns, "content_sha256": self.content_sha256, "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrackRef:
        """Rebuild from :meth:`to_dict` output (``url`` and ``track_id`` required).

        Raises:
            StorageError: a required key is missing or ``track_id`` is unsafe.
        """
        try:
            url, track_id = str(data["url"]), check_component(str(data["track_id"]), "track_id")
        except KeyError as e:
            raise StorageError(f"track record without {e.args[0]!r}: {dict(data)}") from e
        size, mtime_ns = data.get("size"), data.get("mtime_ns")
        return cls(
            url=url, track_id=track_id, size=None if size is None else int(size), etag=data.get("etag"),
            mtime_ns=None if mtime_ns is None else int(mtime_ns), content_sha256=data.get("content_sha256"),
            extra=dict(data.get("extra") or {}),
        )


@dataclass(frozen=True)
class Shard:
    """A unit of work: ``index`` counts from 0 within one plan; ``tracks`` are ≤ the shard size."""

    index: int
    tracks: tuple[TrackRef, ...]


def compute_track_id(url: str, size: int | None, fingerprint: str | None) -> str:
    """``sha256(url \\0 size \\0 fingerprint)`` truncated to :data:`TRACK_ID_HEX` hex digits."""
    text = f"{url}\0{'' if size is None else size}\0{fingerprint or ''}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:TRACK_ID_HEX]


def audio_extension(name: str, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> str | None:
    """The audio extension of a file name (``"stem.mp4"`` for NI stems), or ``None``."""
    lower = name.rsplit("/", 1)[-1].lower()
    if lower.endswith(".stem.mp4") and "mp4" in extensions:
        return "stem.mp4"
    suffix = lower.rsplit(".", 1)[-1] if "." in lower else ""
    return suffix if suffix in {e.lower() for e in extensions} else None


def track_from_info(
    info: ObjectInfo,
    *,
    storage_options: StorageOptions = None,
    fingerprint: Fingerprint = "content",
    extra: Mapping[str, Any] | None = None,
) -> TrackRef:
    """Build a :class:`TrackRef` from what the store reported (hashing content if needed)."""
    content_sha = None
    if info.etag:
        mark = f"etag:{info.etag}"
    elif fingerprint == "content":
        content_sha = sha256_object(info.url, storage_options)
        mark = f"sha256:{content_sha}"
    else:
        mark = f"mtime_ns:{info.mtime_ns}"
    return TrackRef(
        url=info.url,
        track_id=compute_track_id(info.url, info.size, mark),
        size=info.size,
        etag=info.etag,
        mtime_ns=info.mtime_ns,
        content_sha256=content_sha,
        extra=dict(extra or {}),
    )


def track_ref(
    url: str, *, storage_options: StorageOptions = None, fingerprint: Fingerprint = "content"
) -> TrackRef:
    """Stat one object and build its :class:`TrackRef`.

    Raises:
        FileNotFoundError: no object at ``url``.
    """
    return track_from_info(object_info(url, storage_options), storage_options=storage_options, fingerprint=fingerprint)


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


def ordered_map(fn: Callable[[Any], TrackRef], items: Iterable[Any], pool: ThreadPoolExecutor, ahead: int) -> Iterator[TrackRef]:
    """``map(fn, items)`` on ``pool`` with at most ``ahead`` calls in flight, results in input order.

    Unlike ``pool.map`` it consumes ``items`` lazily, so it streams.
    """
    in_flight: deque[Future[TrackRef]] = deque()
    for item in items:
        in_flight.append(pool.submit(fn, item))
        if len(in_flight) >= max(1, ahead):
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()


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
        extensions: case-insensitive extensions to keep.
        fingerprint: how local/memory objects (no ETag) are fingerprinted, see the module docstring.
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


def shard(tracks: Iterable[TrackRef], shard_size: int, *, first_index: int = 0) -> Iterator[Shard]:
    """Group tracks into consecutive shards of ``shard_size`` (the last may be smaller).

    Raises:
        StorageError: ``shard_size`` < 1.
    """
    if shard_size < 1:
        raise StorageError(f"shard_size must be >= 1, got {shard_size}")
    buffer: list[TrackRef] = []
    index = first_index
    for track in tracks:
        buffer.append(track)
        if len(buffer) == shard_size:
            yield Shard(index, tuple(buffer))
            index += 1
            buffer = []
    if buffer:
        yield Shard(index, tuple(buffer))


def uncommitted(
    tracks: Iterable[TrackRef],
    out_url: str,
    model_id: str,
    *,
    storage_options: StorageOptions = None,
    lookup: Literal["probe", "list"] = "probe",
    probe_batch: int = 256,
) -> Iterator[TrackRef]:
    """Tracks whose commit marker for ``model_id`` does not exist yet (a generator).

    ``lookup="probe"`` checks each track's marker (one small GET per track on S3,
    ``probe_batch`` tracks at a time, concurrently): memory O(batch), cost
    linear in the catalogue. ``lookup="list"`` lists the model's committed
    markers once into a set: a few LIST requests per thousand stems, memory
    O(committed tracks); best when little is committed or the output is small.
    Repeated track ids within one batch are dropped.
    """
    if lookup == "list":
        done = set(committed_tracks(out_url, model_id, storage_options=storage_options))
        yield from (t for t in tracks if t.track_id not in done)
        return
    if lookup != "probe":
        raise StorageError(f"lookup must be 'probe' or 'list', got {lookup!r}")
    batch: list[TrackRef] = []
    for track in tracks:
        batch.append(track)
        if len(batch) >= probe_batch:
            yield from _probe(batch, out_url, model_id, storage_options)
            batch = []
    if batch:
        yield from _probe(batch, out_url, model_id, storage_options)


def _probe(batch: list[TrackRef], out_url: str, model_id: str, storage_options: StorageOptions) -> Iterator[TrackRef]:
    unique = list({t.track_id: t for t in batch}.values())
    markers = [marker_url(out_url, model_id, t.track_id) for t in unique]
    for track, marker in zip(unique, read_many(markers, storage_options), strict=True):
        if marker is None:
            yield track


def iter_catalogue(
    catalogue_url: str, *, storage_options: StorageOptions = None, exclude: Sequence[str] = ()
) -> Iterator[TrackRef]:
    """:func:`stemflow.manifest.read_manifest` for a ``.csv``/``.parquet``/``.pq`` URL, else :func:`list_audio`."""
    if catalogue_url.lower().endswith((".csv", ".parquet", ".pq")):
        from stemflow.manifest import read_manifest  # manifest builds on this module

        return read_manifest(catalogue_url, storage_options=storage_options)
    return list_audio(catalogue_url, storage_options=storage_options, exclude=exclude)


def plan(
    tracks: Iterable[TrackRef] | str,
    out_url: str,
    model_id: str,
    *,
    shard_size: int = 100,
    storage_options: StorageOptions = None,
    lookup: Literal["probe", "list"] = "probe",
    probe_batch: int = 256,
) -> Iterator[Shard]:
    """Shards of the tracks not yet committed for ``model_id`` under ``out_url``.

    ``tracks`` is an iterable of :class:`TrackRef` (from :func:`list_audio` or
    :func:`stemflow.manifest.read_manifest`) or a catalogue URL, read with :func:`iter_catalogue`
    (then ``storage_options`` serve both, and ``out_url`` is excluded from the
    listing). The whole chain streams. See :func:`uncommitted` for ``lookup``.
    """
    if isinstance(tracks, str):
        tracks = iter_catalogue(tracks, storage_options=storage_options, exclude=[out_url])
    remaining = uncommitted(
        tracks, out_url, model_id, storage_options=storage_options, lookup=lookup, probe_batch=probe_batch
    )
    yield from shard(remaining, shard_size)
