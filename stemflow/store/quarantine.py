"""What a run could not read in its own output: counted, logged, reported, and left in place.

Planning, crash recovery and ``stemflow status`` read what earlier runs wrote
(markers, Parquet parts, run manifests, journals, the committed index). One
unreadable object there must not stop every future run, and must not be
deleted either: it is *quarantined*, i.e. skipped, logged with the reason,
counted by kind, and reported in the run summary, the run manifest and
``stemflow status``. Nothing is moved or removed: an operator decides (see
``docs/guarantees.md``, "What a run cannot read in its output").

:class:`Quarantine` is the collector one run (or one status call) passes down
to the readers; it is thread-safe and keeps the first :attr:`Quarantine.keep`
items in full, the counts exactly.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

QUARANTINE_KINDS: dict[str, str] = {
    "marker": "a _COMMITTED.json that exists but is not a readable stemflow marker (its track is not done)",
    "marker_record": "a marker without extra.record: its rows are rebuilt from the stem list only",
    "track_folder": "a folder under stems/<model_id>/ whose name is not a track id",
    "metadata_file": "a file under metadata/ that is not a Parquet part of the layout, or cannot be read",
    "run_manifest": "a runs/<run_id>.json that cannot be read",
    "journal": "an intent journal of a run that cannot be read",
    "index_file": "a file of the committed index that cannot be read (the index is rebuilt around it)",
}
"""The kinds of quarantined objects, and what each means."""


@dataclass(frozen=True)
class QuarantinedItem:
    """One object set aside: its kind (a :data:`QUARANTINE_KINDS` key), URL and the reason."""

    kind: str
    url: str
    reason: str


class Quarantine:
    """Collects the objects of an output that could not be read (thread-safe)."""

    def __init__(self, keep: int = 100) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._items: list[QuarantinedItem] = []
        self._counts: dict[str, int] = {}

    def add(self, kind: str, url: str, reason: str) -> None:
        """Record (and log) one object that was skipped because it could not be read."""
        if kind not in QUARANTINE_KINDS:
            raise ValueError(f"unknown quarantine kind {kind!r}; known: {sorted(QUARANTINE_KINDS)}")
        logger.warning("quarantined %s %s: %s", kind, url, reason)
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            if len(self._items) < self.keep:
                self._items.append(QuarantinedItem(kind, url, reason))

    @property
    def counts(self) -> dict[str, int]:
        """Quarantined objects by kind (exact)."""
        with self._lock:
            return dict(self._counts)

    @property
    def items(self) -> list[QuarantinedItem]:
        """The first :attr:`keep` quarantined objects."""
        with self._lock:
            return list(self._items)

    @property
    def total(self) -> int:
        """All quarantined objects."""
        with self._lock:
            return sum(self._counts.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"counts": {...}, "items": [{"kind", "url", "reason"}, ...]}``."""
        return {"counts": self.counts,
                "items": [{"kind": i.kind, "url": i.url, "reason": i.reason} for i in self.items]}
