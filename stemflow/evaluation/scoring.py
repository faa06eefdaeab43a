"""Scoring a model's estimates against reference stems: the rows of ``metrics.parquet``.

:func:`score_track` gives one row per (model, track, stem) with the reference
metrics and the reference-free quality measures of the estimate
(:data:`METRICS_SCHEMA`); which reference a stem is scored on is
:func:`stemflow.evaluation.references.reference_for`. A track a model failed on
is a single ``status="error"`` row (:func:`error_metrics_row`), and
:func:`metrics_table` turns rows into the typed table
:mod:`stemflow.evaluation.results` stores.

Every SDR is labelled with its definition (:mod:`stemflow.measures.metrics`):

* ``csdr_db``: per track, the median over 1 s frames of the framewise SDR (museval,
  MUSDB18 papers); the leaderboard's ``csdr_median`` is the median over tracks;
* ``usdr_db``: per track, one ratio over the whole track (SDX challenge);
  the leaderboard's ``usdr_mean`` is the mean over tracks.

The ``mixture`` baseline (:func:`baseline_rows`) scores the mixture itself as the
estimate of every reference stem: any model should beat it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from stemflow.errors import StorageError
from stemflow.evaluation.references import MIXTURE_BASELINE, STEM_ORDER, References, reference_for
from stemflow.measures.metrics import bleedless_fullness, csdr, sdr, si_sdr
from stemflow.measures.quality import stem_quality, track_quality

logger = logging.getLogger(__name__)

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
remaining columns are the reference-free quality measures of :mod:`stemflow.measures.quality`
(``bleed_ratio``, ``residual_db``: null for the baseline).
"""


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
    return _first(references, length), {s: np.asarray(e)[:, :length] for s, e in estimates.items()}


def _first(references: References, samples: int) -> References:
    """The first ``samples`` of the mixture and of every reference stem."""
    return References(references.mixture[:, :samples], {s: r[:, :samples] for s, r in references.stems.items()},
                      references.sample_rate)


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
        refs = _first(refs, stop)
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
