"""Which stems a person should listen to: thresholds on the quality columns, and the flags they raise.

:func:`flag_rows` reads rows that carry the reference-free quality columns
(catalogue records of :mod:`stemflow.store.records`, or evaluation metrics of
:mod:`stemflow.evaluation.scoring`) and returns a :class:`Flag` per threshold
crossed: ``clipping``, ``residual`` (once per model and track), ``silence`` and
``bleed``. :class:`Thresholds` holds the limits and states them in words
(:meth:`Thresholds.describe`) for the report page. Null and NaN values never raise a flag.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Thresholds:
    """When a stem is flagged; every value is stated on the page.

    * clipping: ``clipped_ratio > clipped_ratio`` or ``true_peak_dbtp > true_peak_dbtp``;
    * large residual: ``residual_db > residual_db`` (mixture minus the sum of stems;
      about -100 dB or less for single-target models, whose complement is exact);
    * silence: ``silence_ratio > silence_ratio`` for a stem not in ``may_be_silent``;
    * suspected bleed: ``bleed_ratio > bleed_ratio``.
    """

    clipped_ratio: float = 1e-4
    true_peak_dbtp: float = -0.1
    residual_db: float = -30.0
    silence_ratio: float = 0.9
    bleed_ratio: float = 0.35
    may_be_silent: tuple[str, ...] = ()

    def describe(self) -> list[tuple[str, str]]:
        """``(flag, rule)`` pairs, as shown on the page."""
        silent_ok = f" (not for: {', '.join(self.may_be_silent)})" if self.may_be_silent else ""
        return [
            ("clipping", f"clipped_ratio > {self.clipped_ratio:g} or true_peak_dbtp > {self.true_peak_dbtp:g} dBTP"),
            ("residual", f"residual_db > {self.residual_db:g} dB (mixture − sum of stems, relative to the mixture)"),
            ("silence", f"silence_ratio > {self.silence_ratio:g} (100 ms windows below −60 dBFS){silent_ok}"),
            ("bleed", f"bleed_ratio > {self.bleed_ratio:g} (share of the stem's energy where another stem is louder)"),
        ]


@dataclass(frozen=True)
class Flag:
    """One reason to look at a stem: ``kind`` (clipping/residual/silence/bleed), the column and its value."""

    model_id: str
    track: str
    stem: str | None
    kind: str
    column: str
    value: float
    source_url: str | None = None


def _value(row: Mapping[str, Any], column: str) -> float | None:
    """The row's ``column`` as a float; ``None`` when missing, null or NaN."""
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def flag_rows(rows: Iterable[Mapping[str, Any]], thresholds: Thresholds = Thresholds()) -> list[Flag]:
    """Flags of ``ok`` rows (records or evaluation metrics); the residual once per (model, track)."""
    flags: list[Flag] = []
    residual_seen: set[tuple[str, str]] = set()
    for row in rows:
        if row.get("status", "ok") != "ok":
            continue
        model_id = str(row.get("model_id"))
        track = str(row.get("track_id") or row.get("track"))
        stem = row.get("stem")
        source = row.get("source_url")

        def add(kind: str, column: str, value: float, stem_name: str | None = stem) -> None:
            flags.append(Flag(model_id, track, stem_name, kind, column, value, source))

        clipped, peak = _value(row, "clipped_ratio"), _value(row, "true_peak_dbtp")
        if clipped is not None and clipped > thresholds.clipped_ratio:
            add("clipping", "clipped_ratio", clipped)
        elif peak is not None and peak > thresholds.true_peak_dbtp:
            add("clipping", "true_peak_dbtp", peak)
        residual = _value(row, "residual_db")
        if residual is not None and residual > thresholds.residual_db and (model_id, track) not in residual_seen:
            residual_seen.add((model_id, track))
            add("residual", "residual_db", residual, None)
        silence = _value(row, "silence_ratio")
        if silence is not None and silence > thresholds.silence_ratio and stem not in thresholds.may_be_silent:
            add("silence", "silence_ratio", silence)
        bleed = _value(row, "bleed_ratio")
        if bleed is not None and bleed > thresholds.bleed_ratio:
            add("bleed", "bleed_ratio", bleed)
    return flags
