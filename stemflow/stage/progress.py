"""A run's progress as an operator sees it: done / planned, tracks per hour, ETA, errors by type.

:class:`RunProgress` is updated by the scheduler as outcomes arrive and read
by the flow, which writes it to the run manifest (``progress``) and to a
Prefect progress artifact while the run goes on. ``planned`` grows while
planning streams; the ETA is given once planning has finished (before that,
the number of tracks left is not known).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from stemflow.stage.settings import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, TrackOutcome


@dataclass
class RunProgress:
    """Counts so far; ``started`` is ``time.monotonic()`` at the start of the run."""

    started: float = field(default_factory=time.monotonic)
    planned: int = 0
    planning_done: bool = False
    ok: int = 0
    errors: int = 0
    skipped: int = 0
    in_flight: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: TrackOutcome) -> None:
        """Count one track's outcome."""
        if outcome.status == STATUS_OK:
            self.ok += 1
        elif outcome.status == STATUS_SKIPPED:
            self.skipped += 1
        elif outcome.status == STATUS_ERROR:
            self.errors += 1
            kind = outcome.error_type or "internal"
            self.errors_by_type[kind] = self.errors_by_type.get(kind, 0) + 1

    @property
    def done(self) -> int:
        """Tracks with an outcome."""
        return self.ok + self.errors + self.skipped

    @property
    def elapsed_s(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    @property
    def tracks_per_hour(self) -> float:
        """Tracks finished per hour since the run started (start-up included: a conservative rate)."""
        span = time.monotonic() - self.started
        return 3600.0 * self.done / span if self.done and span > 1e-3 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate; ``None`` while planning goes on or before the first outcome."""
        rate = self.tracks_per_hour
        if not self.planning_done or rate <= 0:
            return None
        return 3600.0 * max(0, self.planned - self.done) / rate

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the run manifest's ``progress``)."""
        return {"planned": self.planned, "planning_done": self.planning_done, "done": self.done, "ok": self.ok,
                "errors": self.errors, "skipped": self.skipped, "in_flight": self.in_flight,
                "errors_by_type": dict(self.errors_by_type), "elapsed_s": round(self.elapsed_s, 1),
                "tracks_per_hour": round(self.tracks_per_hour, 1),
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1)}
