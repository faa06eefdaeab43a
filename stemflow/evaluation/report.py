"""The visual report of an output folder: one self-contained HTML page plus its PNG plots.

:func:`build_report` reads what an output holds -- the catalogue records
(``<out>/metadata/``, :func:`stemflow.store.records.read_records`) and the evaluations
(``<out>/evaluation/*/metrics.parquet``, :mod:`stemflow.evaluation.results`) -- and writes,
each file atomically,

* ``<out>/reports/<name>.html``: inline CSS, plots embedded as base64 PNG, audio
  players (an embedded FLAC excerpt of the mixture; the stems linked relatively,
  ``../stems/<model_id>/<track_id>/<stem>.<ext>``, loaded only when played);
* ``<out>/reports/<name>/*.png``: the same plots as files.

The page holds: the flag thresholds and the flagged stems
(:mod:`stemflow.evaluation.flags`), histograms of the quality columns, a per-model
comparison when several models ran (table + box plots per stem), each evaluation's
leaderboard with cSDR/uSDR box plots per stem, and spectrogram strips (mixture
and each stem, log magnitude) with players for a few flagged tracks, read from
committed stems only, found and verified by their ``_COMMITTED.json`` marker
(:mod:`stemflow.evaluation.committed`); the mixture the marker names is read
only when it lies in the catalogue the committing run was given
(:mod:`stemflow.store.sources`), so a hostile marker gets a note, never a read.
This module composes the sections; the HTML building blocks are
:mod:`stemflow.evaluation.page`, the plots :mod:`stemflow.evaluation.plots`.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from stemflow.audio.decode import open_track
from stemflow.audio.encode import encode
from stemflow.errors import StemflowError
from stemflow.evaluation.flags import Flag, Thresholds, flag_rows
from stemflow.evaluation.leaderboard import LEADERBOARD_HEADERS, leaderboard, order_models, reported_notes
from stemflow.evaluation.page import Figures, audio_player, escape, html_table, note, render_page
from stemflow.evaluation.plots import box_plot_png, finite_summary, histogram_png, spectrogram_strip_png
from stemflow.evaluation.references import MIXTURE_BASELINE
from stemflow.evaluation.results import read_evaluations, read_leaderboard_json
from stemflow.catalogue.manifests import MANIFEST_SUFFIXES
from stemflow.evaluation.committed import committed_inputs
from stemflow.evaluation.inputs import centre_excerpts, open_inputs
from stemflow.store.commit import CommitMarker
from stemflow.store.objects import write_atomic
from stemflow.store.paths import StorageOptions, check_component, join_url
from stemflow.store.records import COLUMNS, read_records
from stemflow.store.runs import read_run_manifest
from stemflow.store.sources import catalogue_roots, read_source

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


def _quality_section(rows: Sequence[Mapping[str, Any]], thresholds: Thresholds, plots: Figures) -> str:
    lines = {"true_peak_dbtp": (thresholds.true_peak_dbtp,), "residual_db": (thresholds.residual_db,),
             "silence_ratio": (thresholds.silence_ratio,), "clipped_ratio": (thresholds.clipped_ratio,),
             "bleed_ratio": (thresholds.bleed_ratio,)}
    figures = []
    for column in HISTOGRAM_COLUMNS:
        per_track = column == "residual_db"
        png = histogram_png(_by_model(rows, column, per_track=per_track), title=column,
                            xlabel=f"{column} ({_UNITS.get(column) or '–'})", thresholds=lines.get(column, ()))
        what = "per track" if per_track else "per stem"
        figures.append(plots.figure(f"hist_{column}.png", png, f"{_MEANINGS.get(column, column)} ({what})"))
    return "<h2>Quality distributions</h2><div class=\"grid\">" + "".join(figures) + "</div>"


def _comparison_section(rows: Sequence[Mapping[str, Any]], flags: Sequence[Flag], plots: Figures) -> str:
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
        figures.append(plots.figure(f"compare_{column}.png", box_plot_png(values, title=f"{label} per stem",
                                                                             ylabel=label), f"{label} by model"))
    return ("<h2>Models compared</h2>" + html_table(headers, table_rows, left=2)
            + '<div class="grid">' + "".join(figures) + "</div>")


def _flags_section(flags: Sequence[Flag], thresholds: Thresholds) -> str:
    rules = html_table(["flag", "rule"], thresholds.describe(), left=2)
    if not flags:
        return "<h2>Flagged stems</h2>" + rules + "<p>No stem crosses a threshold.</p>"
    rows = [(f.kind, f.model_id, f.track, f.stem or "(track)", f.column, f.value) for f in flags]
    return (f"<h2>Flagged stems ({len(flags)})</h2>" + rules
            + html_table(["flag", "model_id", "track", "stem", "column", "value"], rows, left=5))


def _evaluation_notes(output_url: str, eval_id: str, storage_options: StorageOptions) -> list[str]:
    """What ``leaderboard.json`` says the models' authors report (nothing if it cannot be read)."""
    try:
        return reported_notes(read_leaderboard_json(output_url, eval_id, storage_options=storage_options).get("info"))
    except (OSError, ValueError, AttributeError, StemflowError) as e:
        logger.info("no readable leaderboard.json for %s: %s", eval_id, e)
        return []


def _evaluation_section(eval_id: str, metrics: Any, plots: Figures, notes: Sequence[str] = ()) -> str:
    board = leaderboard(metrics).to_pylist()
    keys = list(LEADERBOARD_HEADERS)
    classes = ["baseline" if r["model_name"] == MIXTURE_BASELINE else "" for r in board]
    table = html_table(list(LEADERBOARD_HEADERS.values()), [[r[k] for k in keys] for r in board], left=2,
                       row_classes=classes)
    rows = [r for r in metrics.to_pylist() if r["status"] == "ok"]
    models = order_models([r["model_name"] for r in rows])
    stems = list(dict.fromkeys(r["stem"] for r in board))
    figures = []
    for column, label in (("csdr_db", "cSDR (dB, median of 1 s frames)"), ("usdr_db", "uSDR (dB, whole track)")):
        values = {s: {m: [r[column] for r in rows if r["model_name"] == m and r["stem"] == s] for m in models}
                  for s in stems}
        figures.append(plots.figure(f"{check_component(eval_id, 'eval_id')}_{column}.png",
                                    box_plot_png(values, title=f"{label} per stem", ylabel=label),
                                    f"{eval_id}: {label}, one value per track"))
    errors = sum(1 for r in metrics.to_pylist() if r["status"] == "error")
    notes_html = f'<p class="note">{errors} track(s) failed and are not in the means.</p>' if errors else ""
    notes_html += "".join(note(n) for n in notes)
    return (f"<h2>Evaluation {escape(eval_id)}</h2>" + table + notes_html
            + '<p class="note">cSDR: per-track median over 1 s frames (museval), median over tracks (MUSDB18). '
            + f"uSDR: whole-track SDR (SDX), mean over tracks. <i>{MIXTURE_BASELINE}</i>: the mixture as the "
            + "estimate (the floor any model should beat).</p>" + '<div class="grid">' + "".join(figures) + "</div>")


MAX_MIXTURE_BYTES = 2 << 30
"""Largest mixture the report reads to draw an excerpt (2 GiB, the stage's default source limit)."""


@dataclass
class SourcePolicy:
    """Where the report may read the mixtures markers name: the given catalogues, else each run's own.

    ``catalogue_urls`` None: a marker's ``source_url`` must lie under the catalogue
    recorded in the run manifest of the run that committed it (``runs/<run_id>.json``,
    ``inputs.catalogue_url``); with no readable manifest the mixture is not read.
    """

    output_url: str
    catalogue_urls: Sequence[str] | None
    storage_options: StorageOptions
    _by_run: dict[str, list[str]] = field(default_factory=dict)

    def roots(self, run_id: str) -> list[str]:
        """The roots a mixture committed by ``run_id`` may be read from."""
        if self.catalogue_urls is not None:
            return catalogue_roots(self.catalogue_urls, MANIFEST_SUFFIXES)
        if run_id not in self._by_run:
            try:
                inputs = read_run_manifest(self.output_url, run_id, storage_options=self.storage_options).inputs
                found = [str(inputs["catalogue_url"])] if inputs.get("catalogue_url") else []
            except (OSError, StemflowError, KeyError, TypeError) as e:
                logger.info("report: no catalogue known for run %s (%s)", run_id, e)
                found = []
            self._by_run[run_id] = catalogue_roots(found, MANIFEST_SUFFIXES)
        return self._by_run[run_id]


def _committed_excerpt(output_url: str, model_id: str, track_id: str, sources: SourcePolicy, excerpt_s: float,
                       ) -> tuple[dict[str, np.ndarray], int, int, int, list[str], CommitMarker] | None:
    """The centre excerpt of a committed track's mixture and stems: ``(excerpt, rate, start, span, notes, marker)``.

    ``None`` when the track is not committed. The stems are read at their stored
    rate, by their marker only (:func:`stemflow.evaluation.committed.committed_inputs`,
    each checked against the marker before decoding); the mixture (the marker's
    source URL) only when it lies where ``sources`` allows, resampled to the
    stems' rate, and left out with a note otherwise. Only the excerpt is kept
    (:func:`stemflow.evaluation.inputs.centre_excerpts`).
    """
    committed = committed_inputs(output_url, model_id, track_id, storage_options=sources.storage_options)
    if committed is None:
        return None
    marker, inputs = committed
    notes = []
    with contextlib.ExitStack() as stack:
        opened = stack.enter_context(open_inputs(inputs.values(), None, storage_options=sources.storage_options))
        tracks = {stem: opened[item] for stem, item in inputs.items()}
        sample_rate = next(iter(tracks.values())).sample_rate
        try:
            data = read_source(marker.source_url, sources.roots(marker.run_id), max_bytes=MAX_MIXTURE_BYTES,
                               storage_options=sources.storage_options)
            tracks = {"mixture": stack.enter_context(open_track(data, sample_rate=sample_rate,
                                                                name=marker.source_url)), **tracks}
        except (StemflowError, OSError) as e:
            notes.append(f"mixture not read ({e}); stems only")
        excerpt, start, span = centre_excerpts(tracks, sample_rate, excerpt_s)
    return excerpt, sample_rate, start, span, notes, marker


def _track_section(output_url: str, model_id: str, track_id: str, reasons: Sequence[Flag], excerpt_s: float,
                   plots: Figures, sources: SourcePolicy) -> str:
    """Spectrogram strip and players of one committed track (a note instead when it is not committed)."""
    tags = "".join(f'<span class="flag">{escape(f.kind)} {escape(f.stem or "")}</span> '
                   for f in reasons) or "(not flagged)"
    header = f"<h3>{escape(track_id)} <small>{escape(model_id)}</small></h3><p>{tags}</p>"
    found = _committed_excerpt(output_url, model_id, track_id, sources, excerpt_s)
    if found is None:
        return f'<div class="track">{header}<p class="note">not committed: no stems to show.</p></div>'
    excerpt, sample_rate, start, span, notes, marker = found
    title = f"{track_id}: {start / sample_rate:.1f}-{(start + span) / sample_rate:.1f} s"
    figure = plots.figure(f"spectrogram_{model_id}_{track_id}.png",
                          spectrogram_strip_png(excerpt, sample_rate, title=title),
                          f"log-magnitude spectrograms, {title}")
    players = []
    if "mixture" in excerpt:
        flac = encode(excerpt["mixture"], sample_rate, format="flac", bit_depth=16, clip="clamp").data
        players.append(audio_player(f"mixture (excerpt {span / sample_rate:.0f} s)",
                                    "data:audio/flac;base64," + base64.b64encode(flac).decode("ascii")))
    for stem in marker.stems:
        players.append(audio_player(f"{stem.stem} (full stem)", f"../stems/{model_id}/{track_id}/{stem.file_name}"))
    extra = note(f"source: {marker.source_url}") + "".join(note(n) for n in notes)
    return f'<div class="track">{header}{extra}{figure}<div class="players">{"".join(players)}</div></div>'


def _tracks_to_show(rows: Sequence[Mapping[str, Any]], flags: Sequence[Flag], count: int) -> list[tuple[str, str]]:
    chosen = list(dict.fromkeys((f.model_id, f.track) for f in flags))
    chosen += [k for k in dict.fromkeys((str(r["model_id"]), str(r["track_id"])) for r in rows) if k not in chosen]
    return chosen[:count]


def _tracks_section(output_url: str, rows: Sequence[Mapping[str, Any]], flags: Sequence[Flag], count: int,
                    excerpt_s: float, plots: Figures, sources: SourcePolicy) -> str:
    """Up to ``count`` tracks, flagged ones first; a track that cannot be read gets a note, not a failure."""
    shown = []
    for model_id, track_id in _tracks_to_show(rows, flags, count):
        reasons = [f for f in flags if (f.model_id, f.track) == (model_id, track_id)]
        try:
            shown.append(_track_section(output_url, model_id, track_id, reasons, excerpt_s, plots, sources))
        except (StemflowError, OSError) as e:
            logger.warning("report: cannot show track %s of %s: %s", track_id, model_id, e)
            shown.append(f'<div class="track"><h3>{escape(track_id)}</h3>'
                         f'<p class="note">cannot read: {escape(e)}</p></div>')
    return "<h2>Tracks</h2>" + "".join(shown)


def _meta_line(output_url: str, rows: Sequence[Mapping[str, Any]], error_rows: int, evaluations: int,
               now: datetime | None) -> str:
    """The line under the title: output, time of generation, row counts, models and evaluations."""
    models = sorted({str(r["model_id"]) for r in rows})
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    return (f"output {escape(output_url)} · generated {stamp} · {len(rows)} stem rows, {error_rows} error rows, "
            f"models: {escape(', '.join(models) or '–')} · evaluations: {evaluations}")


def _write_report(output_url: str, name: str, page: str, plots: Figures,
                  storage_options: StorageOptions) -> tuple[str, list[str]]:
    """Write the PNGs, then the page, each atomically; ``(html_url, png_urls)``."""
    reports = join_url(output_url, "reports")
    png_urls = []
    for file_name, png in plots.files.items():
        url = join_url(reports, name, file_name)
        write_atomic(url, png, storage_options)
        png_urls.append(url)
    html_url = join_url(reports, f"{name}.html")
    write_atomic(html_url, page.encode("utf-8"), storage_options)
    return html_url, png_urls


def build_report(
    output_url: str,
    *,
    name: str = "report",
    thresholds: Thresholds = Thresholds(),
    spectrogram_tracks: int = 3,
    excerpt_s: float = 10.0,
    storage_options: StorageOptions = None,
    now: datetime | None = None,
    catalogue_urls: Sequence[str] | None = None,
) -> ReportResult:
    """Write ``<out>/reports/<name>.html`` and ``<out>/reports/<name>/*.png`` for the output at ``output_url``.

    Spectrogram strips are drawn for up to ``spectrogram_tracks`` tracks, flagged
    ones first (then others, marked "not flagged", so a clean run still shows some).
    A track's mixture is read only under ``catalogue_urls`` (by default: the
    catalogue of the run that committed it, from its run manifest); a marker
    naming anything else gets a note, never a read (:class:`SourcePolicy`).

    Raises:
        StemflowError: the output holds neither records nor evaluations.
    """
    check_component(name, "report name")
    table = read_records(output_url, storage_options=storage_options)
    rows = [r for r in table.to_pylist() if r["status"] == "ok"]
    evaluations = read_evaluations(output_url, storage_options=storage_options)
    if not table.num_rows and not evaluations:
        raise StemflowError(f"nothing to report under {output_url!r}: no records in metadata/ and no evaluation/")
    plots = Figures()
    flags = flag_rows(rows, thresholds)
    sections = [_flags_section(flags, thresholds)]
    if rows:
        sections += [_quality_section(rows, thresholds, plots), _comparison_section(rows, flags, plots),
                     _tracks_section(output_url, rows, flags, spectrogram_tracks, excerpt_s, plots,
                                     SourcePolicy(output_url, catalogue_urls, storage_options))]
    for eval_id, metrics in evaluations.items():
        sections.append(_evaluation_section(eval_id, metrics, plots, _evaluation_notes(output_url, eval_id,
                                                                                       storage_options)))
    meta = _meta_line(output_url, rows, table.num_rows - len(rows), len(evaluations), now)
    page = render_page(f"stemflow report: {name}", meta, sections)
    html_url, png_urls = _write_report(output_url, name, page, plots, storage_options)
    return ReportResult(html_url, tuple(png_urls), tuple(flags), table.num_rows, tuple(evaluations))
