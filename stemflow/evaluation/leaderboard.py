"""The leaderboard: a model x stem summary of an evaluation's metrics, as a table and as Markdown.

Each (model, stem) row holds the number of tracks and means and medians over
tracks of the per-track metrics (:data:`LEADERBOARD_SCHEMA`). The two SDR figures
a reader compares with published numbers:

* ``csdr_median``: the MUSDB18 number, median over tracks of the per-track cSDR
  (:func:`stemflow.measures.metrics.csdr_over_tracks`);
* ``usdr_mean``: the SDX challenge number, mean over tracks of whole-track uSDR.

The ``mixture`` baseline (:data:`stemflow.evaluation.references.MIXTURE_BASELINE`)
is always listed last. :func:`leaderboard_markdown` states these definitions
under the table; :data:`LEADERBOARD_HEADERS` labels the columns every view shows
(Markdown, CLI, report).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from stemflow.evaluation.references import MIXTURE_BASELINE, STEM_ORDER
from stemflow.measures.metrics import csdr_over_tracks

#: ``(leaderboard column, metrics column, "mean" or "median")``.
_STAT_COLUMNS = (
    ("csdr_median", "csdr_db", "median"), ("csdr_mean", "csdr_db", "mean"),
    ("usdr_mean", "usdr_db", "mean"), ("usdr_median", "usdr_db", "median"),
    ("si_sdr_mean", "si_sdr_db", "mean"), ("si_sdr_median", "si_sdr_db", "median"),
    ("bleedless_mean", "bleedless", "mean"), ("fullness_mean", "fullness", "mean"),
)


LEADERBOARD_SCHEMA = pa.schema(
    [("model_name", pa.string()), ("model_id", pa.string()), ("stem", pa.string()), ("tracks", pa.int32()),
     *((name, pa.float64()) for name, _, _ in _STAT_COLUMNS)]
)
"""``leaderboard.parquet``: one row per (model, stem); means and medians over tracks (NaN skipped).

``csdr_median`` is the MUSDB18 number (median over tracks of the per-track median over
1 s frames), ``usdr_mean`` the SDX number (mean over tracks of whole-track SDR).
"""


def _stat(values: list[float], how: str) -> float:
    """Median (as :func:`csdr_over_tracks`) or mean, null and NaN left out; a mean skips ``+-inf`` unless all are."""
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if how == "median":
        return csdr_over_tracks(data)
    finite = data[np.isfinite(data)] if np.isinf(data).any() and not np.isinf(data).all() else data
    return float(np.mean(finite)) if finite.size else float("nan")


def _stem_rank(stem: str) -> tuple[int, str]:
    return (STEM_ORDER.index(stem) if stem in STEM_ORDER else len(STEM_ORDER), stem)


def leaderboard(metrics: pa.Table) -> pa.Table:
    """Model x stem summary of a metrics table (:data:`LEADERBOARD_SCHEMA`), ``ok`` rows only.

    Models keep their first-seen order with the ``mixture`` baseline last; stems
    are ordered vocals, drums, bass, other, instrumental, then others. NaN values
    (silent references) are skipped; a mean over values some of which are
    ``+inf`` (perfect estimates) keeps only the finite ones.
    """
    rows = [r for r in metrics.to_pylist() if r["status"] == "ok"]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model_name"], row["model_id"], row["stem"]), []).append(row)
    models = list(dict.fromkeys((r["model_name"], r["model_id"]) for r in rows))
    models.sort(key=lambda m: m[0] == MIXTURE_BASELINE)
    out = []
    for model_name, model_id in models:
        stems = sorted({s for (n, i, s) in groups if (n, i) == (model_name, model_id)}, key=_stem_rank)
        for stem in stems:
            group = groups[(model_name, model_id, stem)]
            entry: dict[str, Any] = {"model_name": model_name, "model_id": model_id, "stem": stem,
                                     "tracks": len({r["track"] for r in group})}
            for name, column, how in _STAT_COLUMNS:
                entry[name] = _stat([r[column] for r in group], how)
            out.append(entry)
    return pa.Table.from_pylist(out, schema=LEADERBOARD_SCHEMA)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.2f}"
    return str(value)


LEADERBOARD_HEADERS: dict[str, str] = {
    "model_name": "model", "stem": "stem", "tracks": "tracks",
    "csdr_median": "cSDR median (dB)", "usdr_mean": "uSDR mean (dB)", "csdr_mean": "cSDR mean (dB)",
    "usdr_median": "uSDR median (dB)", "si_sdr_median": "SI-SDR median (dB)",
    "bleedless_mean": "bleedless", "fullness_mean": "fullness",
}
"""Leaderboard columns shown in tables (Markdown, CLI, report) and their labels."""


def reported_notes(info: Mapping[str, Any] | None) -> list[str]:
    """``"<model>: its authors report …"`` for each ``info["models"]`` entry with a ``reported_sdr`` text."""
    models = (info or {}).get("models") or []
    return [f"{m['name']}: its authors report {m['reported_sdr']}" for m in models if m.get("reported_sdr")]


def leaderboard_markdown(board: pa.Table, notes: Sequence[str] = ()) -> str:
    """The leaderboard as a Markdown table with the SDR definitions (and ``notes``) stated under it."""
    keys = list(LEADERBOARD_HEADERS)
    lines = ["| " + " | ".join(LEADERBOARD_HEADERS.values()) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(_fmt(row[k]) for k in keys) + " |" for row in board.to_pylist()]
    lines += [
        "",
        "cSDR: per track the median over 1 s frames of BSS-Eval v4 SDR (museval), then the median over "
        "tracks (MUSDB18 convention). uSDR: one SDR over the whole track (SDX challenge), mean over tracks. "
        f"`{MIXTURE_BASELINE}`: the mixture itself as the estimate.",
        *(f"\n{note}" for note in notes),
    ]
    return "\n".join(lines) + "\n"


def order_models(names: Sequence[str]) -> list[str]:
    """Distinct model names in order, the baseline last."""
    return sorted(dict.fromkeys(names), key=lambda n: n == MIXTURE_BASELINE)
