"""The visual report of an output folder: one self-contained HTML page plus its PNG plots.

:func:`build_report` reads what an output holds -- the catalogue records
(``<out>/metadata/``, :func:`stemflow.store.records.read_records`) and the evaluations
(``<out>/evaluation/*/metrics.parquet``) -- and writes, each file atomically,

* ``<out>/reports/<name>.html``: inline CSS, plots embedded as base64 PNG, audio
  players (an embedded FLAC excerpt of the mixture; the stems linked relatively,
  ``../stems/<model_id>/<track_id>/<stem>.<ext>``, loaded only when played);
* ``<out>/reports/<name>/*.png``: the same plots as files.

The page holds: the flag thresholds (:class:`Thresholds`), the flagged stems
(:func:`flag_rows`), histograms of the quality columns, a per-model comparison
when several models ran (table + box plots per stem), each evaluation's
leaderboard with cSDR/uSDR box plots per stem, and spectrogram strips (mixture
and each stem, log magnitude) with players for a few flagged tracks, read from
committed stems only (the ``_COMMITTED.json`` marker and the source URL it records).

The page records its own script errors and failed resource loads in
``#page-errors`` (``data-count``), so a headless browser can check it.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from string import Template
from typing import Any

import numpy as np

from stemflow.audio.decode import load_audio
from stemflow.audio.encode import encode
from stemflow.errors import StemflowError
from stemflow.evaluation.flags import Flag, Thresholds, flag_rows
from stemflow.evaluation.leaderboard import LEADERBOARD_HEADERS, leaderboard, order_models, reported_notes
from stemflow.evaluation.plots import box_plot_png, finite_summary, histogram_png, spectrogram_strip_png
from stemflow.evaluation.references import MIXTURE_BASELINE
from stemflow.evaluation.results import evaluation_url, read_evaluations
from stemflow.store.commit import read_marker, track_url
from stemflow.store.objects import read_bytes, write_atomic
from stemflow.store.paths import StorageOptions, check_component, join_url
from stemflow.store.records import COLUMNS, read_records

logger = logging.getLogger(__name__)

HISTOGRAM_COLUMNS: tuple[str, ...] = ("loudness_lufs", "true_peak_dbtp", "residual_db", "silence_ratio",
                                      "clipped_ratio", "energy_share", "bleed_ratio")


"""Quality columns plotted as histograms (``residual_db`` once per track, the others per stem)."""


_UNITS = {c.name: c.unit for c in COLUMNS}


_MEANINGS = {c.name: c.description for c in COLUMNS}


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote and found."""

    html_url: str
    png_urls: tuple[str, ...]
    flags: tuple[Flag, ...]
    record_rows: int
    evaluations: tuple[str, ...]


_PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>$title</title>
<script>
(function () {
  var errors = [];
  function show() {
    var box = document.getElementById("page-errors");
    if (box) { box.textContent = errors.join("\\n"); box.setAttribute("data-count", String(errors.length)); }
  }
  window.addEventListener("error", function (e) {
    var t = e.target;
    errors.push(t && t !== window && (t.src || t.href) ? "failed to load " + (t.src || t.href)
                                                       : "script error: " + e.message);
    show();
  }, true);
  var original = console.error;
  console.error = function () { errors.push("console.error: " + Array.prototype.join.call(arguments, " ")); show();
                                return original.apply(console, arguments); };
  document.addEventListener("DOMContentLoaded", show);
})();
</script>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1200px;
       color: #1b1b1b; background: #fff; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #0072B2; padding-bottom: 4px; }
.meta { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #eef4fa; } td.l, th.l { text-align: left; }
tr.baseline td { color: #666; font-style: italic; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; } .grid figure { margin: 0; }
figcaption { font-size: 0.8em; color: #555; } img { max-width: 100%; border: 1px solid #eee; }
.track { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; margin: 12px 0; }
.players { display: flex; flex-wrap: wrap; gap: 16px; font-size: 0.85em; }
.players div { display: flex; flex-direction: column; }
.flag { display: inline-block; padding: 0 6px; border-radius: 4px; background: #fde2d0; color: #8a3a00; }
.note { color: #666; font-size: 0.85em; } #page-errors { color: #b00; white-space: pre-wrap; }
</style></head>
<body>
<h1>$title</h1>
<p class="meta">$meta</p>
<pre id="page-errors" data-count="0"></pre>
$body
</body></html>
""")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 0.01 and value != 0 else f"{value:.{digits}f}"
    return _e(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, left: int = 1,
           row_classes: Sequence[str] | None = None) -> str:
    head = "".join(f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(headers))
    lines = []
    for index, row in enumerate(rows):
        cells = "".join(f'<td class="l">{_e(c)}</td>' if i < left else f"<td>{_num(c)}</td>" for i, c in enumerate(row))
        cls = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        lines.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


class _Images:
    """PNG plots of one report: embedded in the page and kept for ``<name>/*.png``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def figure(self, file_name: str, png: bytes, caption: str) -> str:
        self.files[file_name] = png
        data = base64.b64encode(png).decode("ascii")
        return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_e(caption)}</figcaption></figure>")


def _by_model(rows: Sequence[Mapping[str, Any]], column: str, *, per_track: bool = False) -> dict[str, list]:
    values: dict[str, list] = {}
    seen: set[tuple[str, str]] = set()
    for row in rows:
        key = (str(row["model_id"]), str(row.get("track_id") or row.get("track")))
        if per_track:
            if key in seen:
                continue
            seen.add(key)
        values.setdefault(key[0], []).append(row.get(column))
    return values


def _quality_section(rows: Sequence[Mapping[str, Any]], thresholds: Thresholds, images: _Images) -> str:
    lines = {"true_peak_dbtp": (thresholds.true_peak_dbtp,), "residual_db": (thresholds.residual_db,),
             "silence_ratio": (thresholds.silence_ratio,), "clipped_ratio": (thresholds.clipped_ratio,),
             "bleed_ratio": (thresholds.bleed_ratio,)}
    figures = []
    for column in HISTOGRAM_COLUMNS:
        per_track = column == "residual_db"
        png = histogram_png(_by_model(rows, column, per_track=per_track), title=column,
                            xlabel=f"{column} ({_UNITS.get(column) or '–'})", thresholds=lines.get(column, ()))
        what = "per track" if per_track else "per stem"
        figures.append(images.figure(f"hist_{column}.png", png, f"{_MEANINGS.get(column, column)} ({what})"))
    return "<h2>Quality distributions</h2><div class=\"grid\">" + "".join(figures) + "</div>"


def _comparison_section(rows: Sequence[Mapping[str, Any]], flags: Sequence[Flag], images: _Images) -> str:
    models = list(dict.fromkeys(str(r["model_id"]) for r in rows))
    if len(models) < 2:
        return ""
    stems = list(dict.fromkeys(str(r["stem"]) for r in rows))
    table_rows = []
    for model in models:
        for stem in stems:
            group = [r for r in rows if r["model_id"] == model and r["stem"] == stem]
            if not group:
                continue
            cells = [model, stem, len({r["track_id"] for r in group})]
            for column in ("loudness_lufs", "energy_share", "bleed_ratio", "silence_ratio"):
                cells.append(finite_summary([r.get(column) for r in group])[1])
            cells.append(sum(1 for f in flags if f.model_id == model and f.stem == stem))
            table_rows.append(cells)
    headers = ["model_id", "stem", "tracks", "loudness median (LUFS)", "energy share median", "bleed ratio median",
               "silence ratio median", "flags"]
    figures = []
    for column, label in (("energy_share", "energy share"), ("bleed_ratio", "bleed ratio"),
                          ("loudness_lufs", "loudness (LUFS)")):
        values = {stem: {m: [r.get(column) for r in rows if r["model_id"] == m and r["stem"] == stem]
                         for m in models} for stem in stems}
        figures.append(images.figure(f"compare_{column}.png", box_plot_png(values, title=f"{label} per stem",
                                                                             ylabel=label), f"{label} by model"))
    return ("<h2>Models compared</h2>" + _table(headers, table_rows, left=2)
            + '<div class="grid">' + "".join(figures) + "</div>")


def _flags_section(flags: Sequence[Flag], thresholds: Thresholds) -> str:
    rules = _table(["flag", "rule"], thresholds.describe(), left=2)
    if not flags:
        return "<h2>Flagged stems</h2>" + rules + "<p>No stem crosses a threshold.</p>"
    rows = [(f.kind, f.model_id, f.track, f.stem or "(track)", f.column, f.value) for f in flags]
    return (f"<h2>Flagged stems ({len(flags)})</h2>" + rules
            + _table(["flag", "model_id", "track", "stem", "column", "value"], rows, left=5))


def _evaluation_notes(output_url: str, eval_id: str, storage_options: StorageOptions) -> list[str]:
    """What ``leaderboard.json`` says the models' authors report (nothing if it cannot be read)."""
    try:
        body = json.loads(read_bytes(join_url(evaluation_url(output_url, eval_id), "leaderboard.json"), storage_options))
        return reported_notes(body.get("info"))
    except (OSError, ValueError, AttributeError, StemflowError) as e:
        logger.info("no readable leaderboard.json for %s: %s", eval_id, e)
        return []


def _evaluation_section(eval_id: str, metrics: Any, images: _Images, notes: Sequence[str] = ()) -> str:
    board = leaderboard(metrics).to_pylist()
    keys = list(LEADERBOARD_HEADERS)
    classes = ["baseline" if r["model_name"] == MIXTURE_BASELINE else "" for r in board]
    table = _table(list(LEADERBOARD_HEADERS.values()), [[r[k] for k in keys] for r in board], left=2,
                   row_classes=classes)
    rows = [r for r in metrics.to_pylist() if r["status"] == "ok"]
    models = order_models([r["model_name"] for r in rows])
    stems = list(dict.fromkeys(r["stem"] for r in board))
    figures = []
    for column, label in (("csdr_db", "cSDR (dB, median of 1 s frames)"), ("usdr_db", "uSDR (dB, whole track)")):
        values = {s: {m: [r[column] for r in rows if r["model_name"] == m and r["stem"] == s] for m in models}
                  for s in stems}
        figures.append(images.figure(f"{check_component(eval_id, 'eval_id')}_{column}.png",
                                     box_plot_png(values, title=f"{label} per stem", ylabel=label),
                                     f"{eval_id}: {label}, one value per track"))
    errors = sum(1 for r in metrics.to_pylist() if r["status"] == "error")
    note = f'<p class="note">{errors} track(s) failed and are not in the means.</p>' if errors else ""
    note += "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    return (f"<h2>Evaluation {_e(eval_id)}</h2>" + table + note
            + '<p class="note">cSDR: per-track median over 1 s frames (museval), median over tracks (MUSDB18). '
            + f"uSDR: whole-track SDR (SDX), mean over tracks. <i>{MIXTURE_BASELINE}</i>: the mixture as the "
            + "estimate (the floor any model should beat).</p>" + '<div class="grid">' + "".join(figures) + "</div>")


def _audio_tag(label: str, src: str) -> str:
    return f'<div><span>{_e(label)}</span><audio controls preload="none" src="{_e(src)}"></audio></div>'


def _track_section(output_url: str, model_id: str, track_id: str, reasons: Sequence[Flag], excerpt_s: float,
                   images: _Images, storage_options: StorageOptions) -> str:
    """Spectrogram strip and players of one committed track (a note instead when it cannot be read)."""
    marker = read_marker(output_url, model_id, track_id, storage_options=storage_options)
    tags = "".join(f'<span class="flag">{_e(f.kind)} {_e(f.stem or "")}</span> ' for f in reasons) or "(not flagged)"
    header = f"<h3>{_e(track_id)} <small>{_e(model_id)}</small></h3><p>{tags}</p>"
    if marker is None:
        return f'<div class="track">{header}<p class="note">not committed: no stems to show.</p></div>'
    base = track_url(output_url, model_id, track_id)
    stems = {s.stem: load_audio(read_bytes(f"{base}/{s.file_name}", storage_options), sample_rate=None,
                                name=s.file_name) for s in marker.stems}
    sample_rate = next(iter(stems.values())).sample_rate
    signals: dict[str, np.ndarray] = {}
    notes = []
    try:
        signals["mixture"] = load_audio(read_bytes(marker.source_url, storage_options), sample_rate=sample_rate,
                                        name=marker.source_url).samples
    except (StemflowError, OSError) as e:
        notes.append(f"mixture not readable ({e}); stems only")
    signals.update({name: decoded.samples for name, decoded in stems.items()})
    length = min(s.shape[-1] for s in signals.values())
    span = min(length, int(excerpt_s * sample_rate))
    start = (length - span) // 2
    excerpt = {name: s[:, start:start + span] for name, s in signals.items()}
    title = f"{track_id}: {start / sample_rate:.1f}-{(start + span) / sample_rate:.1f} s"
    figure = images.figure(f"spectrogram_{model_id}_{track_id}.png",
                           spectrogram_strip_png(excerpt, sample_rate, title=title),
                           f"log-magnitude spectrograms, {title}")
    players = []
    if "mixture" in excerpt:
        flac = encode(excerpt["mixture"], sample_rate, format="flac", bit_depth=16, clip="clamp").data
        players.append(_audio_tag(f"mixture (excerpt {span / sample_rate:.0f} s)",
                                  "data:audio/flac;base64," + base64.b64encode(flac).decode("ascii")))
    for stem in marker.stems:
        players.append(_audio_tag(f"{stem.stem} (full stem)", f"../stems/{model_id}/{track_id}/{stem.file_name}"))
    source = f'<p class="note">source: {_e(marker.source_url)}</p>'
    extra = "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    return f'<div class="track">{header}{source}{extra}{figure}<div class="players">{"".join(players)}</div></div>'


def _tracks_to_show(rows: Sequence[Mapping[str, Any]], flags: Sequence[Flag], count: int) -> list[tuple[str, str]]:
    chosen = list(dict.fromkeys((f.model_id, f.track) for f in flags))
    chosen += [k for k in dict.fromkeys((str(r["model_id"]), str(r["track_id"])) for r in rows) if k not in chosen]
    return chosen[:count]


def build_report(
    output_url: str,
    *,
    name: str = "report",
    thresholds: Thresholds = Thresholds(),
    spectrogram_tracks: int = 3,
    excerpt_s: float = 10.0,
    storage_options: StorageOptions = None,
    now: datetime | None = None,
) -> ReportResult:
    """Write ``<out>/reports/<name>.html`` and ``<out>/reports/<name>/*.png`` for the output at ``output_url``.

    Spectrogram strips are drawn for up to ``spectrogram_tracks`` tracks, flagged
    ones first (then others, marked "not flagged", so a clean run still shows some).

    Raises:
        StemflowError: the output holds neither records nor evaluations.
    """
    check_component(name, "report name")
    table = read_records(output_url, storage_options=storage_options)
    rows = [r for r in table.to_pylist() if r["status"] == "ok"]
    evaluations = read_evaluations(output_url, storage_options=storage_options)
    if not table.num_rows and not evaluations:
        raise StemflowError(f"nothing to report under {output_url!r}: no records in metadata/ and no evaluation/")
    images = _Images()
    flags = flag_rows(rows, thresholds)
    sections = [_flags_section(flags, thresholds)]
    if rows:
        sections += [_quality_section(rows, thresholds, images), _comparison_section(rows, flags, images)]
        shown = []
        for model_id, track_id in _tracks_to_show(rows, flags, spectrogram_tracks):
            reasons = [f for f in flags if (f.model_id, f.track) == (model_id, track_id)]
            try:
                shown.append(_track_section(output_url, model_id, track_id, reasons, excerpt_s, images, storage_options))
            except (StemflowError, OSError) as e:
                logger.warning("report: cannot show track %s of %s: %s", track_id, model_id, e)
                shown.append(f'<div class="track"><h3>{_e(track_id)}</h3>'
                             f'<p class="note">cannot read: {_e(e)}</p></div>')
        sections.append("<h2>Tracks</h2>" + "".join(shown))
    for eval_id, metrics in evaluations.items():
        notes = _evaluation_notes(output_url, eval_id, storage_options)
        sections.append(_evaluation_section(eval_id, metrics, images, notes))
    errors = table.num_rows - len(rows)
    models = sorted({str(r["model_id"]) for r in rows})
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    meta = (f"output {_e(output_url)} · generated {stamp} · {len(rows)} stem rows, {errors} error rows, "
            f"models: {_e(', '.join(models) or '–')} · evaluations: {len(evaluations)}")
    page = _PAGE.substitute(title=_e(f"stemflow report: {name}"), meta=meta, body="\n".join(s for s in sections if s))
    reports = join_url(output_url, "reports")
    png_urls = []
    for file_name, png in images.files.items():
        url = join_url(reports, name, file_name)
        write_atomic(url, png, storage_options)
        png_urls.append(url)
    html_url = join_url(reports, f"{name}.html")
    write_atomic(html_url, page.encode("utf-8"), storage_options)
    return ReportResult(html_url, tuple(png_urls), tuple(flags), table.num_rows, tuple(evaluations))

