"""Source tracks: :class:`TrackRef` and the stable ``track_id`` of an audio object.

A :class:`TrackRef` is what the catalogue hands on (to planning, shard files,
Ray rows): the normalised URL of a mixture, its id, and what the store said
about it. :func:`track_ref` stats one object; :func:`track_from_info` builds the
reference from a listing entry.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from stemflow.errors import StorageError
from stemflow.store.objects import ObjectInfo, object_info, sha256_object
from stemflow.store.paths import StorageOptions, check_component

TRACK_ID_HEX = 20
"""Hex digits kept of the sha256 (80 bits)."""

Fingerprint = Literal["content", "mtime"]
"""How objects without an ETag are fingerprinted: their content's sha256, or their mtime."""


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
        rejected: why this catalogue entry is not read (a manifest row outside the
            catalogue's location, a bad value, a missing object); planning turns it
            into an error row (``error_type="source"``) without reading anything.
    """

    url: str
    track_id: str
    size: int | None = None
    etag: str | None = None
    mtime_ns: int | None = None
    content_sha256: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)
    rejected: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for journals, Ray rows); :meth:`from_dict` inverts it."""
        data = {
            "url": self.url, "track_id": self.track_id, "size": self.size, "etag": self.etag,
            "mtime_ns": self.mtime_ns, "content_sha256": self.content_sha256, "extra": dict(self.extra),
        }
        if self.rejected is not None:
            data["rejected"] = self.rejected
        return data

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
            extra=dict(data.get("extra") or {}), rejected=data.get("rejected"),
        )


def compute_track_id(url: str, size: int | None, fingerprint: str | None) -> str:
    """``sha256(url \\0 size \\0 fingerprint)`` truncated to :data:`TRACK_ID_HEX` hex digits."""
    text = f"{url}\0{'' if size is None else size}\0{fingerprint or ''}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:TRACK_ID_HEX]


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

