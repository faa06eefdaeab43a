"""Exactly-once stems: write-once stem objects and a create-only ``_COMMITTED.json`` per track.

Layout (the storage contract)::

    <out>/stems/<model_id>/<track_id>/<stem>.<ext>
    <out>/stems/<model_id>/<track_id>/_COMMITTED.json    written last, create-only

A track is done for a ``model_id`` only when its marker exists; readers trust
nothing else. The protocol, and why it holds under crashes and races:

1. **Stems are write-once.** :func:`write_stem` creates each stem object with a
   create-only write (S3 ``If-None-Match: *``, local ``link``). If the object is
   already there it was left by an earlier attempt with the *same* ``model_id``
   (a crashed run, or a run racing with us): every write is atomic, so it is a
   complete output of the same weights and settings. We *adopt* it: hash the
   stored bytes and report those, instead of overwriting. Adopting costs one
   extra read, only after a crash or during a race.
2. **The marker is created last, create-only**, listing each stem's size and
   sha256. :func:`commit_track` first checks that every stem exists with the
   recorded size. Of several racing runs exactly one marker write succeeds
   (``True``); the others get ``False`` and must count the track as done by
   someone else.
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

A crash before the marker leaves stems without a marker: the track is planned
again and the next attempt adopts those stems. The consequence to know: stems
of a ``model_id`` are never replaced; producing different stems needs a new
``model_id`` (which is what new weights or settings give, see DESIGN.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from stemflow.errors import StorageError
from stemflow.store.objects import exists, object_info, read_bytes, sha256_hex, sha256_object, write_create_only
from stemflow.store.paths import StorageOptions, check_component, filesystem, join_url
from stemflow.store.retry import RetryPolicy

logger = logging.getLogger(__name__)

MARKER_NAME = "_COMMITTED.json"
"""File name of the commit marker inside a track's folder."""

MARKER_FORMAT = "stemflow.commit/1"
"""The ``format`` value of every marker; a stored value (named after the module it began in), never renamed."""


@dataclass(frozen=True)
class StemObject:
    """One stored stem, as listed in a commit marker.

    Attributes:
        stem: stem name (``vocals``, ``drums``, ``bass``, ``other``, ``instrumental``…).
        file_name: object name inside the track folder, ``<stem>.<ext>``.
        size: bytes.
        sha256: hex sha256 of the stored bytes.
    """

    stem: str
    file_name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class CommitMarker:
    """Contents of ``_COMMITTED.json`` (JSON object with these keys plus ``format``).

    Attributes:
        model_id, track_id: which output this is.
        source_url: normalised URL of the mixture the stems were separated from.
        run_id: the run that committed.
        stems: the stored stems, in the order given to :func:`commit_track`.
        committed_at: ISO 8601 UTC time of the commit.
        started_at: ISO 8601 UTC time the track's processing started, if known.
        extra: small JSON-serialisable facts the caller wants kept (device, versions).
    """

    model_id: str
    track_id: str
    source_url: str
    run_id: str
    stems: tuple[StemObject, ...]
    committed_at: str
    started_at: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> bytes:
        """Serialise as UTF-8 JSON."""
        body = {
            "format": MARKER_FORMAT,
            "model_id": self.model_id,
            "track_id": self.track_id,
            "source_url": self.source_url,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "committed_at": self.committed_at,
            "stems": [
                {"stem": s.stem, "file_name": s.file_name, "size": s.size, "sha256": s.sha256}
                for s in self.stems
            ],
            "extra": dict(self.extra),
        }
        try:
            text = json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False, default=_plain)
        except (TypeError, ValueError) as e:
            raise StorageError(f"commit marker of {self.track_id!r} is not JSON-serialisable: {e}") from e
        return text.encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> CommitMarker:
        """Parse a marker written by :meth:`to_json`.

        Raises:
            StorageError: not a stemflow commit marker.
        """
        try:
            body = json.loads(data.decode("utf-8"))
            if body.get("format") != MARKER_FORMAT:
                raise ValueError(f"format is {body.get('format')!r}, expected {MARKER_FORMAT!r}")
            stems = tuple(
                StemObject(str(s["stem"]), str(s["file_name"]), int(s["size"]), str(s["sha256"]))
                for s in body["stems"]
            )
            return cls(
                model_id=str(body["model_id"]),
                track_id=str(body["track_id"]),
                source_url=str(body["source_url"]),
                run_id=str(body["run_id"]),
                stems=stems,
                committed_at=str(body["committed_at"]),
                started_at=body.get("started_at"),
                extra=dict(body.get("extra") or {}),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise StorageError(f"malformed commit marker: {e}") from e


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays in ``extra`` (``.tolist()`` / ``.item()``)."""
    for method in ("tolist", "item"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


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
) -> StemObject:
    """Store one encoded stem write-once and describe what is stored.

    If the object already exists (a crashed or concurrent attempt of the same
    ``model_id``), it is kept and adopted: the returned size and sha256 are
    those of the stored bytes, which may differ from ``data``.

    Raises:
        StorageError: unsafe names, or the write or read-back failed.
    """
    url = stem_url(output_url, model_id, track_id, stem, ext)
    if write_create_only(url, data, storage_options, retry=retry):
        return StemObject(stem, stem_file_name(stem, ext), len(data), sha256_hex(data))
    stored_sha = sha256_object(url, storage_options, retry=retry)
    stored_size = object_info(url, storage_options, retry=retry).size
    if stored_sha != sha256_hex(data):
        logger.info("adopting existing stem %s (differs from this attempt's bytes)", url)
    return StemObject(stem, stem_file_name(stem, ext), stored_size, stored_sha)


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
        url = f"{base}/{check_component(stem.file_name, 'stem file name')}"
        try:
            size = object_info(url, storage_options, retry=retry).size
        except FileNotFoundError as e:
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
        return True
    if not won:
        logger.info("track %s of model %s was already committed by another run", track_id, model_id)
    return won


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
    """The track's commit marker, or ``None`` if the track is not committed."""
    try:
        data = read_bytes(marker_url(output_url, model_id, track_id), storage_options, retry=retry)
    except FileNotFoundError:
        return None
    return CommitMarker.from_json(data)


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
    base = track_url(output_url, model_id, track_id)
    for stem in marker.stems:
        try:
            if sha256_object(f"{base}/{stem.file_name}", storage_options) != stem.sha256:
                return False
        except FileNotFoundError:
            return False
    return True

