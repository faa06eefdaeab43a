"""The commit marker ``_COMMITTED.json``: its format, and how it is read back, strictly.

A marker is a small JSON object (:class:`CommitMarker`, ``format`` =
:data:`MARKER_FORMAT`) listing a committed track's stems with their sizes and
sha256 (:class:`StemObject`). The format is stored data: markers written by
every earlier version read back unchanged (``tests/store/test_legacy_output.py``).

:meth:`CommitMarker.from_json` accepts only what stemflow writes, because
readers follow a marker's contents (they open its ``file_name`` objects): every
stem and file name must be one safe path component inside the track folder
(never ``..``, ``/``, an absolute path or the marker itself), sizes are
non-negative integers and hashes 64 lowercase hex digits. Anything else is a
:class:`~stemflow.errors.StorageError` ("malformed commit marker"), never a read
elsewhere. The protocol that writes markers is :mod:`stemflow.store.commit`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stemflow.errors import StorageError
from stemflow.store.paths import check_component

MARKER_NAME = "_COMMITTED.json"
"""File name of the commit marker inside a track's folder."""

MARKER_FORMAT = "stemflow.commit/1"
"""The ``format`` value of every marker; a stored value (named after the module it began in), never renamed."""

MAX_MARKER_BYTES = 4 << 20
"""A marker is a few kB; anything larger under that name is refused unread (4 MiB)."""

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


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
            stems = tuple(_stem_entry(s) for s in body["stems"])
            names = [s.file_name for s in stems]
            if not stems or len(set(names)) != len(names) or len({s.stem for s in stems}) != len(stems):
                raise ValueError(f"the stems must be one or more, with distinct names: {names}")
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
        except (ValueError, KeyError, TypeError, AttributeError, StorageError) as e:
            raise StorageError(f"malformed commit marker: {e}") from e


def _stem_entry(entry: Mapping[str, Any]) -> StemObject:
    """One ``stems`` entry of a marker, checked: safe names inside the track folder, a size, a sha256."""
    stem = check_component(str(entry["stem"]), "stem name")
    file_name = check_component(str(entry["file_name"]), "stem file name")  # never the marker: "_" is refused
    size, sha256 = entry["size"], str(entry["sha256"])
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"stem {stem!r} has size {size!r}")
    if _SHA256_HEX.fullmatch(sha256) is None:
        raise ValueError(f"stem {stem!r} has sha256 {sha256!r}, not 64 lowercase hex digits")
    return StemObject(stem, file_name, size, sha256)


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays in ``extra`` (``.tolist()`` / ``.item()``)."""
    for method in ("tolist", "item"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
