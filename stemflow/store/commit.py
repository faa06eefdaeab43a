"""Exactly-once stems: write-once stem objects and a create-only ``_COMMITTED.json`` per track.

Layout (the storage contract)::

    <out>/stems/<model_id>/<track_id>/<stem>.<ext>
    <out>/stems/<model_id>/<track_id>/_COMMITTED.json    written last, create-only

A track is done for a ``model_id`` only when its marker exists; readers trust
nothing else. The protocol, and why it holds under crashes and races:

1. **Stems are write-once, and only our own bytes are adopted.** :func:`write_stem`
   creates each stem object with a create-only write (S3 ``If-None-Match: *``,
   local ``link``). If ``<stem>.<ext>`` is already there (a crashed attempt, a
   racing run, or junk someone left in the folder), it is *adopted* only when it
   holds exactly the bytes this attempt encoded (same sha256 and size): then it
   provably is this model's complete output for this track. Anything else is
   never trusted and never overwritten (an overwrite could not be made safe
   against a racing writer): this attempt's bytes go, create-only, to a
   per-attempt name ``<stem>.<attempt>.<ext>`` (``attempt``: 12 random hex
   digits), which the marker records as the stem's ``file_name``. Adopting
   costs one extra read, only after a crash or during a race.
2. **The marker is created last, create-only**, listing each stem's size and
   sha256. :func:`commit_track` first checks that every stem exists with the
   recorded size. Of several racing runs exactly one marker write succeeds
   (``True``); the others get ``False`` and must count the track as done by
   someone else.
   A racer that finds a stem gone (the winner removed a superseded object, rule
   5) while the marker exists has simply lost: ``False``, not an error.
3. Because no stem object is ever overwritten, the hashes in the marker always
   equal the stored objects, whoever won, even when the racing runs produced
   different bytes (e.g. different GPU kernels). Overwriting instead would
   rely on the output being bit-identical across runs, which holds only on the
   same device class and library versions.

4. **Retried writes.** The storage layer retries transient failures
   (:mod:`stemflow.store.retry`). A create-only write whose reply was lost but which
   did reach the store answers "exists" on retry: for a stem that is adoption
   (rule 1); for the marker, :func:`commit_track` reads it back and, if it holds
   exactly this attempt's bytes, reports the commit as its own.

   :func:`write_stem`, :func:`commit_track` and :func:`read_marker` take the
   policy as ``retry=`` (default :data:`stemflow.store.retry.DEFAULT_RETRY`).

5. **Superseded objects are removed.** When the winner stored a stem under a
   per-attempt name, the object at ``<stem>.<ext>`` (junk, or a leftover that is
   not its bytes) is deleted right after the marker is created: no marker lists
   it, so nothing can depend on it.

A crash before the marker leaves stems without a marker: the track is planned
again and the next attempt adopts those stems when its output is byte-identical
(the same weights and settings on the same kind of device), and otherwise
stores its own. Readers follow the marker's ``file_name`` (never a name they
build): :func:`committed_stem_urls` gives the URLs, after checking that the
marker names its own track and only plain file names inside the track folder.
Markers are read by :meth:`CommitMarker.from_json`, which refuses anything but
a well-formed ``stemflow.commit/1`` marker (``..``, ``/``, another folder, an
absent or malformed hash).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from stemflow.errors import StorageError
from stemflow.files import sha256_file
from stemflow.store.objects import (
    exists,
    object_info,
    read_bytes,
    remove,
    sha256_hex,
    sha256_object,
    size_and_sha256,
    write_create_only,
    write_create_only_file,
)
from stemflow.store.marker import MARKER_NAME, MAX_MARKER_BYTES, CommitMarker, StemObject
from stemflow.store.paths import StorageOptions, check_component, filesystem, join_url
from stemflow.store.retry import RetryPolicy

logger = logging.getLogger(__name__)

__all__ = [  # the marker types are part of this module's interface (they were defined here)
    "MARKER_NAME", "CommitMarker", "StemObject", "commit_track", "committed_stem_urls", "committed_tracks",
    "is_committed", "marker_url", "read_marker", "stem_url", "stored_stem_url", "track_url", "verify_track",
    "write_stem", "write_stem_file",
]


def utc_now_iso() -> str:
    """Current UTC time as ISO 8601 with offset, e.g. ``2026-11-24T10:15:00.123456+00:00``."""
    return datetime.now(timezone.utc).isoformat()


def track_url(output_url: str, model_id: str, track_id: str) -> str:
    """``<out>/stems/<model_id>/<track_id>`` (ids checked to be safe path components)."""
    return join_url(output_url, "stems", check_component(model_id, "model_id"), check_component(track_id, "track_id"))


def stem_file_name(stem: str, ext: str) -> str:
    """``<stem>.<ext>``, both parts checked (no ``/``, no ``..``)."""
    check_component(stem, "stem name")
    check_component(ext, "file extension")
    return f"{stem}.{ext}"


def stem_url(output_url: str, model_id: str, track_id: str, stem: str, ext: str) -> str:
    """``<out>/stems/<model_id>/<track_id>/<stem>.<ext>``."""
    return f"{track_url(output_url, model_id, track_id)}/{stem_file_name(stem, ext)}"


def marker_url(output_url: str, model_id: str, track_id: str) -> str:
    """``<out>/stems/<model_id>/<track_id>/_COMMITTED.json``."""
    return f"{track_url(output_url, model_id, track_id)}/{MARKER_NAME}"


def stored_stem_url(output_url: str, model_id: str, track_id: str, stem: StemObject) -> str:
    """Where ``stem`` is stored: ``<out>/stems/<model_id>/<track_id>/<file_name>`` (the name checked)."""
    return f"{track_url(output_url, model_id, track_id)}/{check_component(stem.file_name, 'stem file name')}"


def committed_stem_urls(output_url: str, model_id: str, track_id: str, marker: CommitMarker) -> dict[str, str]:
    """``{stem: URL}`` of the stems a marker lists: the only way readers should find committed stems.

    Raises:
        StorageError: the marker names another model or track than the folder it was read from.
    """
    if (marker.model_id, marker.track_id) != (model_id, track_id):
        raise StorageError(
            f"the marker of {model_id}/{track_id} names {marker.model_id}/{marker.track_id}: "
            "not this track's marker; its stems are not read")
    return {s.stem: stored_stem_url(output_url, model_id, track_id, s) for s in marker.stems}


def new_attempt_id() -> str:
    """12 random hex digits naming one attempt's stem objects when ``<stem>.<ext>`` is taken."""
    return secrets.token_hex(6)


def attempt_file_name(stem: str, ext: str, attempt: str) -> str:
    """``<stem>.<attempt>.<ext>``: where an attempt stores a stem whose usual name holds other bytes."""
    return check_component(f"{stem_file_name(stem, ext).rsplit('.', 1)[0]}.{check_component(attempt, 'attempt')}"
                           f".{ext}", "stem file name")


def write_stem(
    output_url: str,
    model_id: str,
    track_id: str,
    stem: str,
    ext: str,
    data: bytes,
    *,
    storage_options: StorageOptions = None,
    retry: RetryPolicy | None = None,
    attempt: str | None = None,
) -> StemObject:
    """Store one encoded stem write-once and describe what is stored.

    If ``<stem>.<ext>`` already exists and holds exactly ``data`` (a crashed or
    racing attempt of the same ``model_id`` that produced the same bytes), it is
    adopted. Anything else there is not trusted: ``data`` is stored,
    create-only, as ``<stem>.<attempt>.<ext>`` (``attempt``: pass one id per
    track attempt; random by default) and the returned ``file_name`` says so.

    Raises:
        StorageError: unsafe names, or the write or read-back failed.
    """
    ours = StemObject(stem, stem_file_name(stem, ext), len(data), sha256_hex(data))
    return _store_stem(output_url, model_id, track_id, ours, ext, attempt,
                       lambda url: write_create_only(url, data, storage_options, retry=retry),
                       storage_options=storage_options, retry=retry)


def write_stem_file(
    output_url: str,
    model_id: str,
    track_id: str,
    stem: str,
    ext: str,
    local_path: str | os.PathLike[str],
    *,
    storage_options: StorageOptions = None,
    retry: RetryPolicy | None = None,
    attempt: str | None = None,
) -> StemObject:
    """:func:`write_stem` for an encoded stem in a local file, hashed and uploaded in blocks (bounded memory).

    Raises:
        StorageError: unsafe names, an unreadable local file, or the write or read-back failed.
    """
    try:
        size, digest = os.path.getsize(local_path), sha256_file(local_path)
    except OSError as e:
        raise StorageError(f"cannot read the encoded stem {os.fspath(local_path)!r}: {e}") from e
    ours = StemObject(stem, stem_file_name(stem, ext), size, digest)
    return _store_stem(output_url, model_id, track_id, ours, ext, attempt,
                       lambda url: write_create_only_file(url, local_path, storage_options, retry=retry),
                       storage_options=storage_options, retry=retry)


def _store_stem(output_url: str, model_id: str, track_id: str, ours: StemObject, ext: str, attempt: str | None,
                create: Callable[[str], bool], *, storage_options: StorageOptions,
                retry: RetryPolicy | None) -> StemObject:
    """Create ``<stem>.<ext>``, adopt it when it holds ``ours``' bytes, else create a per-attempt name."""
    url = stem_url(output_url, model_id, track_id, ours.stem, ext)
    if create(url):
        return ours
    if _stored_digest(url, storage_options, retry) == (ours.size, ours.sha256):
        logger.info("adopting %s: a crashed or racing attempt stored exactly these bytes", url)
        return ours
    name = attempt_file_name(ours.stem, ext, attempt or new_attempt_id())
    logger.warning("%s holds bytes this attempt did not produce; storing %s instead", url, name)
    if not create(f"{track_url(output_url, model_id, track_id)}/{name}"):
        raise StorageError(f"cannot store stem {ours.stem!r} of {track_id!r}: {name} exists already "
                           "(reused attempt id)")
    return StemObject(ours.stem, name, ours.size, ours.sha256)


def _stored_digest(url: str, storage_options: StorageOptions, retry: RetryPolicy | None) -> tuple[int, str] | None:
    """``(size, sha256)`` of the object at ``url``; ``None`` when it is gone or unreadable (a folder, a FIFO)."""
    try:
        return size_and_sha256(url, storage_options, retry=retry)
    except (FileNotFoundError, IsADirectoryError, StorageError) as e:
        logger.info("%s cannot be read as a stem (%s)", url, e)
        return None


def commit_track(
    output_url: str,
    model_id: str,
    track_id: str,
    stems: Sequence[StemObject],
    *,
    source_url: str,
    run_id: str,
    started_at: str | None = None,
    committed_at: str | None = None,
    extra: Mapping[str, Any] | None = None,
    storage_options: StorageOptions = None,
    retry: RetryPolicy | None = None,
) -> bool:
    """Create the track's commit marker; ``True`` if we committed, ``False`` if another run had.

    Every stem must already be stored (see :func:`write_stem`) with the listed
    size; that is checked (one HEAD per stem on S3) before the marker is written.

    Raises:
        StorageError: no stems, duplicate or unsafe names, a stem missing or of another size.
    """
    if not stems:
        raise StorageError(f"refusing to commit track {track_id!r} with no stems")
    names = [s.file_name for s in stems]
    if len(set(names)) != len(names) or len({s.stem for s in stems}) != len(stems):
        raise StorageError(f"duplicate stems in commit of track {track_id!r}: {names}")
    base = track_url(output_url, model_id, track_id)
    check_component(run_id, "run_id")
    for stem in stems:
        check_component(stem.stem, "stem name")
        url = stored_stem_url(output_url, model_id, track_id, stem)
        try:
            size = object_info(url, storage_options, retry=retry).size
        except FileNotFoundError as e:
            if exists(f"{base}/{MARKER_NAME}", storage_options, retry=retry):
                logger.info("track %s of model %s was committed by another run meanwhile", track_id, model_id)
                return False  # the winner removed what it superseded
            raise StorageError(f"cannot commit {track_id!r}: stem {url!r} is missing") from e
        if size != stem.size:
            raise StorageError(f"cannot commit {track_id!r}: {url!r} has {size} bytes, expected {stem.size}")
    marker = CommitMarker(
        model_id=model_id,
        track_id=track_id,
        source_url=source_url,
        run_id=run_id,
        stems=tuple(stems),
        committed_at=committed_at or utc_now_iso(),
        started_at=started_at,
        extra=dict(extra or {}),
    )
    body = marker.to_json()
    url = f"{base}/{MARKER_NAME}"
    won = write_create_only(url, body, storage_options, retry=retry)
    if not won and _stored_marker_is(url, body, storage_options, retry):
        # A retried create whose first attempt reached the store (the reply was lost):
        # the marker holds our bytes (its committed_at is ours to the microsecond), so we won.
        logger.info("track %s: the marker found is this attempt's own (a retried write); committed", track_id)
        won = True
    elif not won:
        logger.info("track %s of model %s was already committed by another run", track_id, model_id)
    if won:
        _remove_superseded(base, stems, storage_options, retry)
    return won


def _remove_superseded(base: str, stems: Sequence[StemObject], storage_options: StorageOptions,
                       retry: RetryPolicy | None) -> None:
    """Delete ``<stem>.<ext>`` where the committed stem is stored under a per-attempt name (best effort)."""
    for stem in stems:
        usual = stem_file_name(stem.stem, stem.file_name.rsplit(".", 1)[-1])
        if stem.file_name == usual:
            continue
        try:
            if remove(f"{base}/{usual}", storage_options, retry=retry):
                logger.info("removed %s/%s: superseded by %s", base, usual, stem.file_name)
        except StorageError as e:
            logger.warning("could not remove the superseded %s/%s (no marker lists it): %s", base, usual, e)


def _stored_marker_is(url: str, body: bytes, storage_options: StorageOptions, retry: RetryPolicy | None) -> bool:
    """Whether the object at ``url`` holds exactly ``body``."""
    try:
        return read_bytes(url, storage_options, retry=retry) == body
    except FileNotFoundError:
        return False


def read_marker(
    output_url: str, model_id: str, track_id: str, *, storage_options: StorageOptions = None,
    retry: RetryPolicy | None = None,
) -> CommitMarker | None:
    """The track's commit marker, or ``None`` if the track is not committed.

    Raises:
        StorageError: the object there is not a well-formed marker of this track (larger than
            :data:`MAX_MARKER_BYTES`, malformed, naming unsafe files or another model or track).
    """
    url = marker_url(output_url, model_id, track_id)
    try:
        data = read_bytes(url, storage_options, retry=retry, max_bytes=MAX_MARKER_BYTES)
    except FileNotFoundError:
        return None
    try:
        marker = CommitMarker.from_json(data)
    except StorageError as e:
        raise StorageError(f"{url}: {e}") from e
    if (marker.model_id, marker.track_id) != (model_id, track_id):
        raise StorageError(f"{url}: malformed commit marker: it names {marker.model_id}/{marker.track_id}")
    return marker


def is_committed(output_url: str, model_id: str, track_id: str, *, storage_options: StorageOptions = None) -> bool:
    """Whether the track's marker exists (one HEAD on S3)."""
    return exists(marker_url(output_url, model_id, track_id), storage_options)


def committed_tracks(output_url: str, model_id: str, *, storage_options: StorageOptions = None) -> Iterator[str]:
    """Track ids with a commit marker under ``<out>/stems/<model_id>/``, sorted.

    One recursive listing of the model's prefix (on S3: a flat paginated
    LIST, ~1 request per 1000 objects, i.e. per ~200 tracks of 4 stems). The
    listing is held in memory while it runs, so this suits outputs up to a few
    million tracks; beyond that, plan with per-track probes
    (:func:`stemflow.catalogue.planning.plan` with ``lookup="probe"``).
    """
    prefix = join_url(output_url, "stems", check_component(model_id, "model_id"))
    fs, path = filesystem(prefix, storage_options)
    try:
        found = fs.find(path) if fs.exists(path) else []
    except OSError as e:
        raise StorageError(f"cannot list {prefix!r}: {e}") from e
    fs.invalidate_cache(path)
    suffix = "/" + MARKER_NAME
    root = path.rstrip("/") + "/"
    for name in sorted(found):
        if name.endswith(suffix) and name.startswith(root):
            track_id = name[len(root) : -len(suffix)]
            if "/" not in track_id:
                yield track_id


def verify_track(output_url: str, model_id: str, track_id: str, *, storage_options: StorageOptions = None) -> bool:
    """Re-hash a committed track's stems; ``True`` if every object matches its marker entry.

    ``False`` when the track is not committed or a stem is missing or differs.
    Reads every stem in full: an audit tool, not part of the write path.
    """
    marker = read_marker(output_url, model_id, track_id, storage_options=storage_options)
    if marker is None:
        return False
    for stem in marker.stems:
        try:
            if sha256_object(stored_stem_url(output_url, model_id, track_id, stem), storage_options) != stem.sha256:
                return False
        except (FileNotFoundError, IsADirectoryError):
            return False
    return True

