"""The dataset card (``README.md``) of a karaoke dataset version, with score distributions.

Markdown that reads on its own: what the folder holds, counts per split,
rejection reasons, a summary table and a text histogram per score, the models
and settings used, and how splits are assigned. When matplotlib is installed,
one PNG histogram per score is written under ``card/`` and linked.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stemflow.karaoke.index import INDEX_NAME, SPLIT_NAMES
from stemflow.karaoke.scores import REASONS, SCORE_COLUMNS
from stemflow.store.objects import write_atomic
from stemflow.store.paths import StorageOptions, join_url

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
HISTOGRAM_BINS = 10
BAR_WIDTH = 30


def score_values(rows: Sequence[Mapping[str, Any]], column: str) -> np.ndarray:
    """The finite values of ``column`` over the rows (float64)."""
    values = [r.get(column) for r in rows]
    data = np.array([v for v in values if isinstance(v, (int, float)) and math.isfinite(v)], dtype=np.float64)
    return data


def text_histogram(values: np.ndarray, bins: int = HISTOGRAM_BINS, width: int = BAR_WIDTH) -> list[str]:
    """One line per bin: ``[lo, hi)  count  ####`` (bars scaled to the fullest bin); ``[]`` if no values."""
    if values.size == 0:
        return []
    low, high = float(values.min()), float(values.max())
    if low == high:
        return [f"{low:>10.3f}            {values.size:>5d}  {'#' * width}"]
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    top = max(int(counts.max()), 1)
    return [
        f"{edges[i]:>10.3f} .. {edges[i + 1]:<10.3f} {int(c):>5d}  {'#' * int(round(width * c / top))}"
        for i, c in enumerate(counts)
    ]


def _fmt(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def render_card(version: str, rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any],
                images: Mapping[str, str] | None = None) -> str:
    """The card's markdown. ``info``: ``model_id``, ``models``, ``settings``; ``images``: score -> relative PNG path."""
    settings = info.get("settings", {})
    return "\n".join([
        *_contents_section(version, settings),
        *_counts_section(rows),
        *_reasons_section(rows),
        *_models_section(rows, info),
        *_distributions_section(rows, images or {}),
        *_splits_section(settings),
    ])


def _contents_section(version: str, settings: Mapping[str, Any]) -> list[str]:
    """Title and what the version folder holds."""
    written = "; rejected tracks included" if settings.get("include_rejected") else "; accepted tracks only"
    return [
        f"# Karaoke dataset `{version}`",
        "",
        "Backing tracks and guide vocals separated by stemflow, with reference-free karaoke quality scores.",
        "",
        "## Contents",
        "",
        f"- `{INDEX_NAME}`: one row per track (paths relative to this folder, scores, `accepted`, `reasons`, "
        "`split`, `loudness_gain_db`).",
        "- `<split>/<track_id>/backing.<ext>` and `vocals.<ext>` (plus `drums`/`bass`/`other` with stems4)"
        + written + ".",
        "- `_COMPLETE.json`: written last; a folder without it is incomplete.",
    ]


def _counts_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Tracks, accepted tracks and accepted hours per split and in total."""
    lines = ["", "## Counts", "", "| split | tracks | accepted | accepted hours |", "| --- | ---: | ---: | ---: |"]
    for split in (*SPLIT_NAMES, None):
        members = [r for r in rows if split is None or r.get("split") == split]
        accepted = [r for r in members if r.get("accepted")]
        hours = sum(float(r.get("duration_s") or 0.0) for r in accepted) / 3600.0
        lines.append(f"| {split or '**all**'} | {len(members)} | {len(accepted)} | {hours:.3f} |")
    return lines


def _reasons_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """How many tracks each rejection reason (and ``error``) applies to."""
    reasons = Counter(reason for r in rows for reason in (r.get("reasons") or []))
    lines = ["", "## Rejection reasons", "", "| reason | tracks |", "| --- | ---: |"]
    lines += [f"| `{reason}` | {reasons.get(reason, 0)} |" for reason in (*REASONS, "error")]
    return lines


def _models_section(rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> list[str]:
    """The model_id, where the backing tracks came from, and the models used."""
    backing = Counter(str(r.get("backing_source")) for r in rows if r.get("backing_source"))
    lines = ["", "## Models", "", f"- model_id: `{info.get('model_id')}`",
             f"- backing source: {', '.join(f'`{k}` ({v})' for k, v in sorted(backing.items())) or 'n/a'}"]
    full_band = (info.get("settings") or {}).get("sum_to_mixture")
    if full_band is not None:
        lines.append("- stems sum to the mixture: " + (
            "yes (whatever the separation left out, e.g. Spleeter's band above 11 kHz, is in the backing: full band)"
            if full_band else "no (the stems as the model gave them)"))
    lines += [f"- {name}: `{value}`" for name, value in sorted((info.get("models") or {}).items())]
    return lines


def _distributions_section(rows: Sequence[Mapping[str, Any]], images: Mapping[str, str]) -> list[str]:
    """A summary table of every score, then a text histogram (and the PNG, if any) per score with values."""
    lines = ["", "## Score distributions (all tracks)", "",
             "| score | n | min | p10 | median | p90 | max |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for column in SCORE_COLUMNS:
        values = score_values(rows, column)
        if values.size:
            p10, p50, p90 = np.percentile(values, [10, 50, 90])
            stats = [values.min(), p10, p50, p90, values.max()]
            lines.append(f"| `{column}` | {values.size} | " + " | ".join(_fmt(float(v)) for v in stats) + " |")
        else:
            lines.append(f"| `{column}` | 0 | n/a | n/a | n/a | n/a | n/a |")
    for column in SCORE_COLUMNS:
        histogram = text_histogram(score_values(rows, column))
        if not histogram:
            continue
        lines += ["", f"### `{column}`", "", "```", *histogram, "```"]
        if column in images:
            lines += ["", f"![{column}]({images[column]})"]
    return lines


def _splits_section(settings: Mapping[str, Any]) -> list[str]:
    """How splits are assigned, and the version's settings as JSON."""
    return [
        "",
        "## Splits",
        "",
        f"Groups by `{settings.get('group_column', 'artist')}` (a track without one is its own group); a group's "
        "split is fixed by `sha256(\"<seed>:<group key>\")` against the cumulative fractions "
        f"{list(settings.get('splits', []))} (seed {settings.get('seed')}): stable across runs and catalogue growth.",
        "",
        "Score definitions: `stemflow.karaoke.scores` (module docstring). Settings of this version:",
        "",
        "```json",
        json.dumps(settings, indent=1, sort_keys=True, default=str),
        "```",
        "",
    ]


def histogram_pngs(rows: Sequence[Mapping[str, Any]]) -> dict[str, bytes]:
    """One PNG histogram per score with values, if matplotlib is installed (else ``{}``)."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend state
    except ImportError:
        logger.info("matplotlib is not installed: the card has text histograms only")
        return {}
    images = {}
    for column in SCORE_COLUMNS:
        values = score_values(rows, column)
        if values.size == 0:
            continue
        figure = Figure(figsize=(5, 3), dpi=80)
        axes = figure.add_subplot()
        axes.hist(values, bins=HISTOGRAM_BINS, color="#4477aa")
        axes.set_xlabel(column)
        axes.set_ylabel("tracks")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        images[column] = buffer.getvalue()
    return images


def write_card(version_url: str, version: str, rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any], *,
               storage_options: StorageOptions = None) -> str:
    """Write ``README.md`` (and ``card/<score>.png``) into the version folder; the card's URL."""
    links = {}
    for column, data in histogram_pngs(rows).items():
        write_atomic(join_url(version_url, "card", f"{column}.png"), data, storage_options)
        links[column] = f"card/{column}.png"
    url = join_url(version_url, CARD_NAME)
    write_atomic(url, render_card(version, rows, info, links).encode("utf-8"), storage_options)
    return url
