"""Karaoke quality scores of a separated track: reference-free, from the vocal and backing stems.

A karaoke pair is the **backing track** (everything but the lead vocal) and the
**guide vocal**. Without reference stems we can still tell the cases a dataset
must not contain blindly: a track with no vocal to remove, a mix whose vocal is
far too loud, vocal residue left in the backing, and a clipped or silent
backing. :func:`karaoke_scores` measures, :func:`judge` applies the thresholds
(:class:`stemflow.karaoke.settings.KaraokeThresholds`, defaults in ``configs/karaoke.yaml``).

Signals are ``[channels, samples]`` float arrays, full scale = 1.0; ``E(x)`` is
the sum of squares over all channels and samples. The **mixture** is
``vocals + backing`` (for a 2-stem model with the complement stem that is the
decoded input exactly; for a 4-stem model it differs from the input by the
model's residual), so nothing but the committed stems is needed.

=========================== ===== ============================================================
score                       unit  definition
=========================== ===== ============================================================
duration_s                  s     samples / sample_rate
vocal_coverage              0..1  fraction of consecutive windows of ``window_s`` (the last,
                                  shorter one included) where the vocal is *present*:
                                  ``10 log10(E_w(vocals) / E_w(mixture)) > presence_ratio_db``
                                  **and** vocal RMS ``10 log10(E_w(vocals) / n_w) >
                                  presence_level_dbfs`` (``n_w`` samples of all channels in the
                                  window). A window with a silent mixture is not vocal.
vocal_share                 0..   ``E(vocals) / E(mixture)``; NaN for a silent mixture
vocal_to_backing_lu         LU    ``LUFS(vocals) - LUFS(backing)`` (ITU-R BS.1770 integrated
                                  loudness, :mod:`stemflow.measures.loudness`); NaN when either is
                                  undefined (silent or shorter than 400 ms)
vocal_residue_db            dB    ``10 log10(E(vocals(backing)) / E(vocals))``: the vocal model
                                  run again on the backing track finds ``vocals(backing)``;
                                  how far below the original vocal estimate that is. -200 for
                                  a vocal-free backing; NaN when not measured or the vocal is silent
vocals_lufs, backing_lufs   LUFS  integrated loudness (NaN: undefined)
backing_true_peak_dbtp      dBTP  4x oversampled true peak; -200 for digital silence
backing_clipped_ratio       0..1  :func:`stemflow.measures.quality.clipped_ratio` of the backing
=========================== ===== ============================================================

Verdicts (:func:`judge`), each a reason string in ``reasons``; a track is
``accepted`` when it has none:

* ``instrumental_only`` -- ``vocal_coverage < instrumental_max_coverage`` or
  ``vocal_share < instrumental_max_vocal_share``: no vocal to remove.
* ``vocals_too_loud`` -- ``vocal_share > max_vocal_share`` or
  ``vocal_to_backing_lu > max_vocal_to_backing_lu``.
* ``vocal_residue`` -- ``vocal_residue_db > max_vocal_residue_db`` (not judged for
  an instrumental-only track, whose "residue" compares noise with noise).
* ``backing_clipped`` -- ``backing_clipped_ratio > max_backing_clipped_ratio`` or
  ``backing_true_peak_dbtp > max_backing_true_peak_dbtp``.
* ``backing_too_quiet`` -- ``backing_lufs < min_backing_lufs`` or undefined.
* ``too_short`` -- ``duration_s < min_duration_s``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from stemflow.karaoke.settings import KaraokeThresholds, PresenceSettings
from stemflow.measures.loudness import integrated_loudness, true_peak_dbtp
from stemflow.measures.quality import DB_FLOOR, clipped_ratio
from stemflow.measures.signals import as_signal, energy, window_energies

VocalSeparator = Callable[[np.ndarray, int], np.ndarray]
"""``(audio [2, N], sample_rate) -> vocals [2, N]``: the vocal model, used for the residue."""

SCORE_COLUMNS: tuple[str, ...] = (
    "duration_s",
    "vocal_coverage",
    "vocal_share",
    "vocal_to_backing_lu",
    "vocal_residue_db",
    "vocals_lufs",
    "backing_lufs",
    "backing_true_peak_dbtp",
    "backing_clipped_ratio",
)
"""The score columns :func:`karaoke_scores` returns, in the order the dataset index stores them."""

REASONS: tuple[str, ...] = (
    "instrumental_only",
    "vocals_too_loud",
    "vocal_residue",
    "backing_clipped",
    "backing_too_quiet",
    "too_short",
)
"""Why :func:`judge` rejects a track, in the order reasons are listed."""


@dataclass(frozen=True)
class Verdict:
    """What :func:`judge` decided: ``accepted`` iff ``reasons`` is empty."""

    accepted: bool
    reasons: tuple[str, ...]
    instrumental_only: bool
    vocals_too_loud: bool


def vocal_coverage(
    vocals: Any, mixture: Any, sample_rate: float, presence: PresenceSettings = PresenceSettings()
) -> float:
    """Fraction of windows where the vocal is present (0..1); formula in the module docstring.

    Args:
        vocals, mixture: ``[channels, samples]``, same shape.
        sample_rate: Hz (sets the window length ``round(window_s * sample_rate)``).
    """
    voc = as_signal(vocals, "vocals")
    mix = as_signal(mixture, "mixture")
    if voc.shape != mix.shape:
        raise ValueError(f"vocals {voc.shape} and mixture {mix.shape} must have the same shape")
    window = max(1, int(round(presence.window_s * sample_rate)))
    e_voc, counts = window_energies(voc, window)
    e_mix, _ = window_energies(mix, window)
    return coverage_of_windows(e_voc, e_mix, counts, presence)


def coverage_of_windows(e_voc: np.ndarray, e_mix: np.ndarray, counts: np.ndarray,
                        presence: PresenceSettings) -> float:
    """``vocal_coverage`` from per-window energies of the vocal and the mixture and the windows' value counts."""
    ratio_ok = e_voc > e_mix * 10.0 ** (presence.presence_ratio_db / 10.0)
    level_ok = e_voc > counts * 10.0 ** (presence.presence_level_dbfs / 10.0)
    present = ratio_ok & level_ok & (e_mix > 0)
    return float(np.count_nonzero(present)) / present.size


def vocal_residue_db(vocals_of_backing: Any, vocals: Any) -> float:
    """``10 log10(E(vocals(backing)) / E(vocals))`` in dB; -200 floor, NaN for a silent vocal."""
    found = energy(as_signal(vocals_of_backing, "vocals_of_backing"))
    return residue_of_energies(found, energy(as_signal(vocals, "vocals")))


def residue_of_energies(found: float, original: float) -> float:
    """``vocal_residue_db`` from ``E(vocals(backing))`` and ``E(vocals)`` (-200 floor, NaN for a silent vocal)."""
    if original <= 0:
        return float("nan")
    if found <= 0:
        return DB_FLOOR
    return max(DB_FLOOR, 10.0 * math.log10(found / original))


def _true_peak(x: np.ndarray, sample_rate: float) -> float:
    """True peak in dBTP floored at -200 (digital silence)."""
    return max(DB_FLOOR, true_peak_dbtp(x, sample_rate)) if np.any(x) else DB_FLOOR


def karaoke_scores(
    vocals: Any,
    backing: Any,
    sample_rate: int,
    *,
    presence: PresenceSettings = PresenceSettings(),
    vocals_of_backing: Any | None = None,
) -> dict[str, float]:
    """The karaoke scores of one track (:data:`SCORE_COLUMNS`; definitions in the module docstring).

    Args:
        vocals: guide vocal ``[channels, samples]``.
        backing: backing track, same shape; the mixture is taken as ``vocals + backing``.
        sample_rate: Hz.
        presence: window and thresholds of ``vocal_coverage``.
        vocals_of_backing: what the vocal model finds in ``backing`` (same shape), for
            ``vocal_residue_db``; ``None`` leaves it NaN (see :func:`residue_vocals`).

    Returns:
        ``{column: float}`` with exactly the keys of :data:`SCORE_COLUMNS`.
    """
    voc = as_signal(vocals, "vocals")
    back = as_signal(backing, "backing")
    if voc.shape != back.shape:
        raise ValueError(f"vocals {voc.shape} and backing {back.shape} must have the same shape")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    mixture = voc.astype(np.float64) + back
    e_mix = energy(mixture)
    vocals_lufs = integrated_loudness(voc, sample_rate)
    backing_lufs = integrated_loudness(back, sample_rate)
    residue = float("nan")
    if vocals_of_backing is not None:
        residue = vocal_residue_db(vocals_of_backing, voc)
    return {
        "duration_s": voc.shape[1] / float(sample_rate),
        "vocal_coverage": vocal_coverage(voc, mixture, sample_rate, presence),
        "vocal_share": energy(voc) / e_mix if e_mix > 0 else float("nan"),
        "vocal_to_backing_lu": vocals_lufs - backing_lufs,  # NaN propagates
        "vocal_residue_db": residue,
        "vocals_lufs": vocals_lufs,
        "backing_lufs": backing_lufs,
        "backing_true_peak_dbtp": _true_peak(back, sample_rate),
        "backing_clipped_ratio": clipped_ratio(back),
    }


def residue_vocals(separate_vocals: VocalSeparator, backing: np.ndarray, sample_rate: int) -> np.ndarray:
    """Run the vocal model on the backing track: ``vocals(backing)`` ``[2, N]`` for the residue score."""
    found = np.asarray(separate_vocals(backing, sample_rate))
    if found.shape != backing.shape:
        raise ValueError(f"the vocal model returned {found.shape} for a backing of {backing.shape}")
    return found


def _above(value: float, limit: float) -> bool:
    """``value > limit``, False for NaN (an undefined score does not fail a test by itself)."""
    return not math.isnan(value) and value > limit


def judge(scores: Mapping[str, float], thresholds: KaraokeThresholds = KaraokeThresholds()) -> Verdict:
    """Apply the thresholds to :func:`karaoke_scores` output; reasons in :data:`REASONS` order."""
    coverage = scores["vocal_coverage"]
    share = scores["vocal_share"]
    # a NaN share (silent mixture) counts as "no vocal"
    instrumental = (coverage < thresholds.instrumental_max_coverage
                    or not share >= thresholds.instrumental_max_vocal_share)
    too_loud = _above(share, thresholds.max_vocal_share) or _above(
        scores["vocal_to_backing_lu"], thresholds.max_vocal_to_backing_lu
    )
    backing_lufs = scores["backing_lufs"]
    found = {
        "instrumental_only": instrumental,
        "vocals_too_loud": too_loud,
        "vocal_residue": not instrumental and _above(scores["vocal_residue_db"], thresholds.max_vocal_residue_db),
        "backing_clipped": _above(scores["backing_clipped_ratio"], thresholds.max_backing_clipped_ratio)
        or _above(scores["backing_true_peak_dbtp"], thresholds.max_backing_true_peak_dbtp),
        "backing_too_quiet": math.isnan(backing_lufs) or backing_lufs < thresholds.min_backing_lufs,
        "too_short": scores["duration_s"] < thresholds.min_duration_s,
    }
    reasons = tuple(r for r in REASONS if found[r])
    return Verdict(accepted=not reasons, reasons=reasons, instrumental_only=instrumental, vocals_too_loud=too_loud)


def loudness_gain_db(
    backing: Any,
    sample_rate: int,
    target_lufs: float | None,
    *,
    peak_signals: tuple[Any, ...] = (),
    max_true_peak_dbtp: float = -1.0,
) -> float:
    """Gain (dB) that brings the backing to ``target_lufs``, limited so no true peak exceeds ``max_true_peak_dbtp``.

    ``gain = min(target_lufs - LUFS(backing), max_true_peak_dbtp - max_s TP(s))``
    over the backing and every signal in ``peak_signals`` (the guide vocal, the
    stems: the same gain is applied to all of them so they stay mixable). The
    limit also applies when it asks for attenuation (a backing already peaking
    above the ceiling is turned down). ``target_lufs=None`` (no normalisation)
    or an undefined loudness gives only the peak limit, capped at 0 dB (never
    amplified); digital silence everywhere gives 0.
    """
    back = as_signal(backing, "backing")
    signals = [back, *(as_signal(s, "peak signal") for s in peak_signals)]
    lufs = integrated_loudness(back, sample_rate) if target_lufs is not None else float("nan")
    return gain_of_levels(lufs, [_true_peak(s, sample_rate) for s in signals], target_lufs,
                          max_true_peak_dbtp=max_true_peak_dbtp)


def gain_of_levels(backing_lufs: float, true_peaks_dbtp: list[float], target_lufs: float | None, *,
                   max_true_peak_dbtp: float = -1.0) -> float:
    """:func:`loudness_gain_db` from the backing's loudness and every signal's true peak (floored at -200 dBTP)."""
    loudest = max(true_peaks_dbtp)
    headroom = max_true_peak_dbtp - loudest if loudest > DB_FLOOR else math.inf
    wanted = 0.0
    if target_lufs is not None and not math.isnan(backing_lufs):
        wanted = target_lufs - backing_lufs
    gain = min(wanted, headroom)
    return 0.0 if math.isinf(gain) else float(gain)
