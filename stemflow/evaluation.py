"""Evaluation against reference stems: data sets, per-track per-stem metrics, the leaderboard.

A data set with references is either

* a MUSDB18-style folder: ``<dataset>/<track>/mixture.wav`` plus ``<track>/<stem>.wav``
  (any of ``drums``, ``bass``, ``other``, ``vocals``; also ``.flac``), found at any depth;
* ``.stem.mp4`` files (MUSDB18 / Native Instruments stems): streams ``mixture, drums,
  bass, other, vocals``.

Model stems are scored against the reference they estimate (:func:`reference_for`):
a stem with a reference of its own name is scored on it; ``instrumental`` (2-stem
vocals/instrumental models, or the complement of a vocals model) on ``drums + bass +
other``; ``no_<x>`` (the complement of another single-target model) on the sum of
every reference but ``x``. Other stems are skipped (logged).

Every SDR is labelled with its definition (:mod:`stemflow.metrics`):

* ``csdr_db``: per track, the median over 1 s frames of the framewise SDR (museval,
  MUSDB18 papers); the leaderboard's ``csdr_median`` is the median over tracks;
* ``usdr_db``: per track, one ratio over the whole track (SDX challenge);
  the leaderboard's ``usdr_mean`` is the mean over tracks.

The ``mixture`` baseline (:data:`MIXTURE_BASELINE`) scores the mixture itself as the
estimate of every reference stem: any model should beat it.

Outputs (:func:`write_evaluation`): ``<out>/evaluation/<eval_id>/metrics.parquet`` and
``leaderboard.parquet``, ``leaderboard.json``, ``leaderboard.md``.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stemflow.audio import load_audio, load_stems
from stemflow.errors import StorageError
from stemflow.metrics import bleedless_fullness, csdr, csdr_over_tracks, sdr, si_sdr
from stemflow.quality import stem_quality, track_quality
from stemflow.storage import StorageOptions, filesystem, join_url, read_bytes, url_of, write_atomic

logger = logging.getLogger(__name__)

REFERENCE_STEMS: tuple[str, ...] = ("drums", "bass", "other", "vocals")
"""The MUSDB18 reference stems, in stream order after the mixture."""
MIXTURE_BASELINE = "mixture"
"""``model_name`` of the baseline rows (the mixture as the estimate of every stem)."""
STEM_ORDER: tuple[str, ...] = ("vocals", "drums", "bass", "other", "instrumental")
_AUDIO_SUFFIXES = (".wav", ".flac")
_QUALITY = ("peak_dbfs", "true_peak_dbtp", "loudness_lufs", "rms_dbfs", "clipped_ratio", "silence_ratio",
            "stereo_correlation", "energy_share", "bleed_ratio", "residual_db")

_F = pa.float64()
METRICS_SCHEMA = pa.schema(
    [
        ("model_name", pa.string()), ("model_id", pa.string()), ("track", pa.string()),
        ("stem", pa.string()), ("reference", pa.string()), ("status", pa.string()), ("error", pa.string()),
        ("csdr_db", _F), ("usdr_db", _F), ("si_sdr_db", _F), ("bleedless", _F), ("fullness", _F),
        ("duration_s", _F), ("sample_rate", pa.int32()),
        *((name, _F) for name in _QUALITY),
    ]
)
"""``metrics.parquet``: one row per (model, track, stem); a failed track is one ``status="error"`` row.

``reference`` names what the stem was scored on (``vocals``, ``drums+bass+other``…);
``csdr_db`` is the museval median of 1 s frames, ``usdr_db`` the SDX whole-track SDR,
``si_sdr_db`` scale-invariant SDR, ``bleedless``/``fullness`` the community's 0-100
mel-spectrogram scores; ``duration_s`` the length scored (after ``max_duration_s``); the
remaining columns are the reference-free quality measures of :mod:`stemflow.quality`
(``bleed_ratio``, ``residual_db``: null for the baseline).
"""

_STAT_COLUMNS = (
    ("csdr_median", "csdr_db", "median"), ("csdr_mean", "csdr_db", "mean"),
    ("usdr_mean", "usdr_db", "mean"), ("usdr_median", "usdr_db", "median"),
    ("si_sdr_mean", "si_sdr_db", "mean"), ("si_sdr_median", "si_sdr_db", "median"),
    ("bleedless_mean", "bleedless", "mean"), ("fullness_mean", "fullness", "mean"),
)
LEADERBOARD_SCHEMA = pa.schema(
    [("model_name", pa.string()), ("model_id", pa.string()), ("stem", pa.string()), ("tracks", pa.int32()),
     *((name, _F) for name, _, _ in _STAT_COLUMNS)]
)
"""``leaderboard.parquet``: one row per (model, stem); means and medians over tracks (NaN skipped).

``csdr_median`` is the MUSDB18 number (median over tracks of the per-track median over
1 s frames), ``usdr_mean`` the SDX number (mean over tracks of whole-track SDR).
"""


@dataclass(frozen=True)
class ReferenceTrack:
    """One track of a data set with references.

    ``mixture_url`` is what gets separated (``mixture.wav``, or the ``.stem.mp4``
    itself, whose first stream is the mixture); ``stem_urls`` maps reference
    stems to files (empty for ``.stem.mp4``: the streams are the references).
    """

    name: str
    mixture_url: str
    stem_urls: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_stem_file(self) -> bool:
        """True for a multi-stream ``.stem.mp4`` track."""
        return not self.stem_urls


@dataclass(frozen=True)
class References:
    """Decoded references of one track: ``mixture`` and ``stems`` (name -> ``[2, N]`` float32)."""

    mixture: np.ndarray
    stems: Mapping[str, np.ndarray]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.mixture.shape[-1] / self.sample_rate


def _stem_file_track(name: str) -> str | None:
    lower = name.lower()
    for suffix in (".stem.mp4", ".stem.m4a"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def discover_dataset(dataset_url: str, *, storage_options: StorageOptions = None) -> list[ReferenceTrack]:
    """The tracks of a data set folder (or one ``.stem.mp4`` file), sorted by name.

    Raises:
        StorageError: nothing with references was found, or the folder cannot be listed.
    """
    fs, root = filesystem(dataset_url, storage_options)
    try:
        if fs.isfile(root):
            paths = [root]
        else:
            paths = sorted(fs.find(root))
    except OSError as e:
        raise StorageError(f"cannot list data set {dataset_url!r}: {e}") from e
    tracks: dict[str, ReferenceTrack] = {}
    folders: dict[str, dict[str, str]] = {}
    for path in paths:
        folder, _, base = path.rpartition("/")
        name = _stem_file_track(base)
        if name is not None:
            tracks[name] = ReferenceTrack(name, url_of(fs, path))
            continue
        stem, dot, suffix = base.rpartition(".")
        if dot and f".{suffix.lower()}" in _AUDIO_SUFFIXES and stem in (*REFERENCE_STEMS, "mixture"):
            folders.setdefault(folder, {})[stem] = url_of(fs, path)
    for folder, files in folders.items():
        refs = {s: u for s, u in files.items() if s != "mixture"}
        if "mixture" not in files or not refs:
            logger.warning("skipping %s: needs mixture.wav and at least one reference stem", folder)
            continue
        name = folder.rpartition("/")[2]
        tracks[name] = ReferenceTrack(name, files["mixture"], dict(sorted(refs.items())))
    if not tracks:
        raise StorageError(f"no reference tracks (.stem.mp4 or <track>/mixture.wav + stems) under {dataset_url!r}")
    return [tracks[name] for name in sorted(tracks)]


def load_references(
    track: ReferenceTrack, sample_rate: int, *, storage_options: StorageOptions = None
) -> References:
    """Decode a track's mixture and reference stems at ``sample_rate``, stereo, trimmed to a common length."""
    if track.is_stem_file:
        streams = load_stems(read_bytes(track.mixture_url, storage_options), sample_rate=sample_rate,
                             names=("mixture", *REFERENCE_STEMS), name=track.mixture_url)
        mixture = streams.pop("mixture")
        return References(mixture, streams, sample_rate)
    decoded = {
        stem: load_audio(read_bytes(url, storage_options), sample_rate=sample_rate, name=url).samples
        for stem, url in {"mixture": track.mixture_url, **track.stem_urls}.items()
    }
    length = min(a.shape[-1] for a in decoded.values())
    if max(a.shape[-1] for a in decoded.values()) != length:
        logger.warning("%s: reference files differ in length; trimmed to %d samples", track.name, length)
    trimmed = {stem: np.ascontiguousarray(a[:, :length]) for stem, a in decoded.items()}
    mixture = trimmed.pop("mixture")
    return References(mixture, trimmed, sample_rate)


def reference_for(stem: str, references: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
    """``(label, reference [2, N])`` a model stem is scored on, or ``None`` when none fits.

    ``instrumental`` -> sum of every reference but vocals (``drums+bass+other``);
    ``no_<x>`` -> sum of every reference but ``x``; a reference stem -> itself.
    """
    if stem in references:
        return stem, references[stem]
    excluded = "vocals" if stem in ("instrumental", "accompaniment") else stem[3:] if stem.startswith("no_") else None
    if excluded is None or excluded not in references:
        return None
    order = {name: i for i, name in enumerate(REFERENCE_STEMS)}
    parts = sorted((s for s in references if s != excluded), key=lambda s: (order.get(s, len(order)), s))
    if not parts:
        return None
    total = np.sum([references[s].astype(np.float64) for s in parts], axis=0).astype(np.float32)
    return "+".join(parts), total


def score_stem(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Reference metrics of one stem: ``csdr_db``, ``usdr_db``, ``si_sdr_db``, ``bleedless``, ``fullness``.

    Args:
        reference, estimate: ``[channels, samples]`` of equal shape.
    """
    bleedless, fullness = bleedless_fullness(reference, estimate, sample_rate)
    return {
        "csdr_db": csdr(reference, estimate, sample_rate),
        "usdr_db": sdr(reference, estimate),
        "si_sdr_db": si_sdr(reference, estimate),
        "bleedless": bleedless,
        "fullness": fullness,
    }


def _align(references: References, estimates: Mapping[str, np.ndarray], track: str) -> tuple[References, dict]:
    """Trim references and estimates to their common length (decoders differ by a few samples)."""
    length = min([references.mixture.shape[-1], *(e.shape[-1] for e in estimates.values())])
    longest = max([references.mixture.shape[-1], *(e.shape[-1] for e in estimates.values())])
    if longest - length > references.sample_rate // 10:
        logger.warning("%s: estimates and references differ by %d samples; scoring the first %d",
                       track, longest - length, length)
    cut = References(references.mixture[:, :length], {s: r[:, :length] for s, r in references.stems.items()},
                     references.sample_rate)
    return cut, {s: np.asarray(e)[:, :length] for s, e in estimates.items()}


def score_track(
    *,
    model_name: str,
    model_id: str,
    track: str,
    references: References,
    estimates: Mapping[str, np.ndarray],
    max_duration_s: float | None = None,
) -> list[dict[str, Any]]:
    """Metrics rows (:data:`METRICS_SCHEMA`) of one model's estimates of one track.

    Args:
        estimates: stem -> ``[2, N]`` at ``references.sample_rate`` (lengths may differ
            from the references by a few samples; both are trimmed to the shorter).
        max_duration_s: score only the first seconds (e.g. to leave out a damaged end).
    """
    refs, ests = _align(references, estimates, track)
    if max_duration_s is not None:
        stop = max(1, int(round(max_duration_s * refs.sample_rate)))
        refs = References(refs.mixture[:, :stop], {s: r[:, :stop] for s, r in refs.stems.items()}, refs.sample_rate)
        ests = {s: e[:, :stop] for s, e in ests.items()}
    baseline = model_name == MIXTURE_BASELINE
    per_track = {} if baseline else track_quality(refs.mixture, ests)
    rows = []
    for stem, estimate in ests.items():
        target = reference_for(stem, refs.stems)
        if target is None:
            logger.info("%s: no reference for stem %r of %s; not scored", track, stem, model_name)
            continue
        label, reference = target
        quality = stem_quality(estimate, refs.sample_rate, refs.mixture)
        row: dict[str, Any] = {
            "model_name": model_name, "model_id": model_id, "track": track, "stem": stem, "reference": label,
            "status": "ok", "error": None, **score_stem(reference, estimate, refs.sample_rate),
            "duration_s": refs.duration_s, "sample_rate": refs.sample_rate,
            **{k: quality[k] for k in _QUALITY if k in quality},
        }
        if not baseline:
            row["bleed_ratio"] = per_track.get(f"bleed_ratio_{stem}")
            row["residual_db"] = per_track.get("residual_db")
        rows.append(row)
    return rows


def baseline_rows(track: str, references: References, *, max_duration_s: float | None = None) -> list[dict[str, Any]]:
    """The ``mixture`` baseline: the mixture as the estimate of every reference stem and of ``instrumental``."""
    stems = [s for s in STEM_ORDER if reference_for(s, references.stems) is not None]
    stems += [s for s in references.stems if s not in stems]
    estimates = {stem: references.mixture for stem in stems}
    return score_track(model_name=MIXTURE_BASELINE, model_id=MIXTURE_BASELINE, track=track,
                       references=references, estimates=estimates, max_duration_s=max_duration_s)


def error_metrics_row(model_name: str, model_id: str, track: str, message: str) -> dict[str, Any]:
    """The single row of a track a model failed on (``status="error"``, metrics null)."""
    return {"model_name": model_name, "model_id": model_id, "track": track, "status": "error", "error": message}


def metrics_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows -> a :data:`METRICS_SCHEMA` table (missing columns null, NaN stored as null)."""
    columns: dict[str, list[Any]] = {name: [] for name in METRICS_SCHEMA.names}
    for row in rows:
        unknown = set(row) - set(columns)
        if unknown:
            raise StorageError(f"unknown metrics column(s) {sorted(unknown)}")
        for name in METRICS_SCHEMA.names:
            value = row.get(name)
            columns[name].append(None if isinstance(value, float) and math.isnan(value) else value)
    try:
        return pa.table(columns, schema=METRICS_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise StorageError(f"metrics values do not fit the schema: {e}") from e


def _stat(values: list[float], how: str) -> float:
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


def _json_safe(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def new_eval_id(now: datetime | None = None) -> str:
    """``eval-YYYYMMDDTHHMMSSZ`` (UTC), a sortable name for one evaluation."""
    return (now or datetime.now(timezone.utc)).strftime("eval-%Y%m%dT%H%M%SZ")


def evaluation_url(out_url: str, eval_id: str) -> str:
    """``<out>/evaluation/<eval_id>``."""
    return join_url(out_url, "evaluation", eval_id)


def write_evaluation(
    out_url: str, eval_id: str, metrics: pa.Table, *, storage_options: StorageOptions = None,
    info: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write ``metrics.parquet`` and the leaderboard (``.parquet``, ``.json``, ``.md``), each atomically.

    ``info`` (data set, models, settings) is stored in ``leaderboard.json`` next to the rows;
    its ``models`` entries' ``reported_sdr`` texts are quoted under the Markdown table.
    Returns the URLs written, keyed by file name.
    """
    base = evaluation_url(out_url, eval_id)
    board = leaderboard(metrics)
    payloads: dict[str, bytes] = {}
    for name, table in (("metrics.parquet", metrics), ("leaderboard.parquet", board)):
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        payloads[name] = buffer.getvalue()
    body = {"eval_id": eval_id, "info": dict(info or {}),
            "rows": [{k: _json_safe(v) for k, v in row.items()} for row in board.to_pylist()]}
    payloads["leaderboard.json"] = json.dumps(body, indent=1, default=str).encode()
    payloads["leaderboard.md"] = leaderboard_markdown(board, reported_notes(info)).encode()
    urls = {}
    for name, data in payloads.items():
        urls[name] = f"{base}/{name}"
        write_atomic(urls[name], data, storage_options)
    return urls


def read_evaluations(out_url: str, *, storage_options: StorageOptions = None) -> dict[str, pa.Table]:
    """Every ``<out>/evaluation/<eval_id>/metrics.parquet``, keyed by ``eval_id`` (sorted)."""
    fs, root = filesystem(join_url(out_url, "evaluation"), storage_options)
    try:
        if not fs.exists(root):
            return {}
        found = sorted(p for p in fs.find(root) if p.endswith("/metrics.parquet"))
        return {p.rsplit("/", 2)[-2]: pq.read_table(io.BytesIO(fs.cat_file(p))) for p in found}
    except (OSError, pa.ArrowException) as e:
        raise StorageError(f"cannot read evaluations under {out_url!r}: {e}") from e


def order_models(names: Sequence[str]) -> list[str]:
    """Distinct model names in order, the baseline last."""
    return sorted(dict.fromkeys(names), key=lambda n: n == MIXTURE_BASELINE)
