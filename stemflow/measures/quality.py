"""Reference-free quality measures of separated stems: the catalogue's Parquet quality columns.

This is the one implementation the pipeline records (the measures against reference
stems are :mod:`stemflow.measures.metrics`). Two entry points, both returning ``dict[str, float]``
with the units in the names:

:func:`stem_quality` -- one stem (``[channels, samples]``, full scale = 1.0):

================== ======= ==========================================================
column             unit    definition
================== ======= ==========================================================
duration_s         s       samples / sample_rate
sample_rate_hz     Hz      as given
peak_dbfs          dBFS    20 log10(max |x|) over all channels (sample peak)
true_peak_dbtp     dBTP    4x-oversampled peak, ITU-R BS.1770-4 Annex 2 (:mod:`stemflow.measures.loudness`)
loudness_lufs      LUFS    gated integrated loudness, ITU-R BS.1770-4 / EBU R 128
rms_dbfs           dBFS    10 log10(mean x^2) over all channels and samples; a full-scale
                           square wave is 0 dBFS, a full-scale sine -3.01 dBFS (no +3 dB AES17 offset)
clipped_ratio      0..1    fraction of samples (all channels) with ``|x| >= CLIP_LEVEL``
                           (``1 - 1e-4``, about -0.0009 dBFS; float stems above 1.0 count too)
silence_ratio      0..1    fraction of consecutive 100 ms windows (the last, shorter one included)
                           whose RMS over all channels is below -60 dBFS
stereo_correlation -1..1   Pearson correlation of channels 0 and 1 over the whole stem
energy_share       0..     sum(stem^2) / sum(mixture^2) (above 1 is possible: out-of-phase stems)
================== ======= ==========================================================

:func:`track_quality` -- a mixture and all its stems:

====================== ===== ==============================================================
residual_db            dB    10 log10(sum (mixture - sum(stems))^2 / sum mixture^2)
bleed_ratio_<stem>     0..1  share of the stem's STFT energy lying in time-frequency bins where
                             another stem is louder (see :func:`bleed_ratios`)
====================== ===== ==============================================================

Undefined and silent values (never ``+-inf``, which JSON cannot carry; NaN means undefined, a null in Parquet):

* level measures (peak, true peak, RMS, residual) of digital silence are floored at
  :data:`DB_FLOOR` = -200 dB (an exact ``mixture == sum(stems)`` gives -200);
* ``loudness_lufs`` is NaN when no 400 ms block passes the -70 LUFS gate (BS.1770 leaves
  it undefined) or the stem is shorter than 400 ms;
* ``stereo_correlation`` is NaN for mono input or a constant (e.g. silent) channel;
  dual mono (L == R) is 1.0. Only channels 0 and 1 are compared;
* ``energy_share`` is NaN without a mixture or for a silent mixture; ``residual_db`` is NaN
  for a silent mixture; ``bleed_ratio_<stem>`` is NaN for a silent stem or a lone stem.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from stemflow.measures.loudness import integrated_loudness, true_peak_dbtp
from stemflow.measures.signals import as_signal, energy, window_energies


#: Floor of every level in dB (digital silence); JSON, Parquet and DuckDB all take it.
DB_FLOOR = -200.0

#: A sample is "clipped" when ``|x| >= CLIP_LEVEL``.
CLIP_LEVEL = 1.0 - 1e-4

#: Silence detection: windows of ``SILENCE_WINDOW_S`` whose RMS is below ``SILENCE_THRESHOLD_DBFS``.
SILENCE_WINDOW_S = 0.1
SILENCE_THRESHOLD_DBFS = -60.0

#: STFT of the bleed estimate (Hann window, 50 % overlap) and frames per processing chunk.
BLEED_N_FFT = 2048
BLEED_HOP = 1024
_BLEED_FRAMES_PER_CHUNK = 512

STEM_COLUMNS = (
    "duration_s",
    "sample_rate_hz",
    "peak_dbfs",
    "true_peak_dbtp",
    "loudness_lufs",
    "rms_dbfs",
    "clipped_ratio",
    "silence_ratio",
    "stereo_correlation",
    "energy_share",
)


def _db(ratio: float, *, power: bool) -> float:
    """``10 log10`` (power) or ``20 log10`` (amplitude) of a non-negative ratio, floored at DB_FLOOR."""
    if ratio <= 0:
        return DB_FLOOR
    return max(DB_FLOOR, (10.0 if power else 20.0) * math.log10(ratio))


def clipped_ratio(x: Any) -> float:
    """Fraction of samples, over all channels, with ``|x| >= CLIP_LEVEL`` (0..1)."""
    audio = as_signal(x, "x")
    return float(np.count_nonzero(np.abs(audio) >= CLIP_LEVEL)) / audio.size


def silence_ratio(x: Any, sample_rate: float) -> float:
    """Fraction of 100 ms windows whose RMS (all channels) is below -60 dBFS (0..1).

    Windows are consecutive and non-overlapping; the last one may be shorter
    (every sample belongs to exactly one window). RMS uses the same convention
    as ``rms_dbfs``: ``sqrt(mean x^2)`` over the window's samples and channels.
    """
    audio = as_signal(x, "x")
    window = max(1, int(round(SILENCE_WINDOW_S * sample_rate)))
    energies, counts = window_energies(audio, window)
    threshold = 10.0 ** (SILENCE_THRESHOLD_DBFS / 10.0)  # mean square of -60 dBFS RMS
    return float(np.count_nonzero(energies / counts < threshold)) / energies.size


def stereo_correlation(x: Any) -> float:
    """Pearson correlation of channels 0 and 1 over the whole signal; NaN for mono or a constant channel."""
    audio = as_signal(x, "x")
    if audio.shape[0] < 2:
        return float("nan")
    left = audio[0].astype(np.float64) - float(np.mean(audio[0], dtype=np.float64))
    right = audio[1].astype(np.float64) - float(np.mean(audio[1], dtype=np.float64))
    norm = math.sqrt(float(left @ left) * float(right @ right))
    if norm == 0:
        return float("nan")
    return float(np.clip((left @ right) / norm, -1.0, 1.0))


def stem_quality(stem: Any, sample_rate: float, mixture: Any | None = None) -> dict[str, float]:
    """Reference-free quality columns of one stem (names, units and edge cases: module docstring).

    Args:
        stem: ``[channels, samples]`` (numpy or torch), full scale = 1.0.
        sample_rate: in Hz.
        mixture: the track's mixture, same shape, for ``energy_share`` (NaN without it).

    Returns:
        A dict with exactly the keys of :data:`STEM_COLUMNS`, plain floats.
    """
    audio = as_signal(stem, "stem")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    stem_energy = energy(audio)
    share = float("nan")
    if mixture is not None:
        mix = as_signal(mixture, "mixture")
        if mix.shape != audio.shape:
            raise ValueError(f"mixture {mix.shape} and stem {audio.shape} must have the same shape")
        mix_energy = energy(mix)
        share = stem_energy / mix_energy if mix_energy > 0 else float("nan")
    peak = float(np.max(np.abs(audio)))
    true_peak = true_peak_dbtp(audio, sample_rate) if peak > 0 else DB_FLOOR
    return {
        "duration_s": audio.shape[1] / float(sample_rate),
        "sample_rate_hz": float(sample_rate),
        "peak_dbfs": _db(peak, power=False),
        "true_peak_dbtp": max(DB_FLOOR, true_peak),
        "loudness_lufs": integrated_loudness(audio, sample_rate),
        "rms_dbfs": _db(stem_energy / audio.size, power=True),
        "clipped_ratio": clipped_ratio(audio),
        "silence_ratio": silence_ratio(audio, sample_rate),
        "stereo_correlation": stereo_correlation(audio),
        "energy_share": share,
    }


def _power_spectrogram(audio: torch.Tensor) -> torch.Tensor:
    """STFT power summed over channels: ``[stems, channels, samples]`` -> ``[stems, bins, frames]``.

    Hann window of BLEED_N_FFT, hop BLEED_HOP, no centring (the caller pads), float32.
    """
    stems, channels, n = audio.shape
    spec = torch.stft(
        audio.reshape(stems * channels, n),
        BLEED_N_FFT,
        BLEED_HOP,
        window=torch.hann_window(BLEED_N_FFT),
        center=False,
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()
    return power.reshape(stems, channels, *power.shape[1:]).sum(dim=1)


def bleed_sums(padded: torch.Tensor, n_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per stem, the STFT energy of the first ``n_frames`` frames of ``padded``, all and in masked bins.

    ``padded``: float32 ``[stems, channels, samples]`` whose frame ``f`` is
    ``padded[..., f * BLEED_HOP : f * BLEED_HOP + BLEED_N_FFT]`` (the caller
    pads and needs ``(n_frames - 1) * BLEED_HOP + BLEED_N_FFT`` samples). Returns
    two float64 ``[stems]`` tensors: ``sum P_k`` and ``sum_{P_k < max_j P_j} P_k``
    over those frames (:func:`bleed_ratios` divides them). Chunks of 512 frames
    (bounded memory); shared by the whole-array and the streamed paths.
    """
    total = torch.zeros(padded.shape[0], dtype=torch.float64)
    masked = torch.zeros(padded.shape[0], dtype=torch.float64)
    for first in range(0, n_frames, _BLEED_FRAMES_PER_CHUNK):
        last = min(first + _BLEED_FRAMES_PER_CHUNK, n_frames)
        chunk = padded[..., first * BLEED_HOP : (last - 1) * BLEED_HOP + BLEED_N_FFT]
        power = _power_spectrogram(chunk)  # [stems, bins, frames]
        # "another stem is louder" <=> "below the loudest of all" (the loudest is never masked)
        loudest = power.amax(dim=0, keepdim=True)
        total += power.sum(dim=(1, 2), dtype=torch.float64)
        masked += torch.where(power < loudest, power, 0.0).sum(dim=(1, 2), dtype=torch.float64)
    return total, masked


def bleed_ratios(stems: Mapping[str, Any]) -> dict[str, float]:
    """Per stem, the share of its energy in time-frequency bins another stem dominates (0..1).

    With ``P_k[f, t]`` the STFT power of stem ``k`` (Hann 2048, hop 1024,
    frames centred with zero padding, summed over channels): ``bleed_k =
    sum_{P_k < max_j P_j} P_k / sum P_k``, i.e. the energy of ``k`` in bins where
    some other stem is louder. A heuristic, not a measurement: leakage of stem
    ``j`` into stem ``k`` sits, quieter, in bins where ``j`` itself is loud, so it
    lands in this sum; but so does the genuine overlap of instruments, so
    compare values across models on the same tracks rather than reading them
    as absolute. Known case: stems in disjoint bands score 0; ``k = x + g * y``
    next to ``j = y`` (equal-energy ``x``, ``y`` in disjoint bands) scores
    ``g^2 / (1 + g^2)``. Computed in chunks of 512 frames (bounded memory).

    Returns:
        ``{stem: ratio}``; NaN for a silent stem, or for every stem when there is only one.
    """
    names = list(stems)
    if len(names) < 2:
        return {name: float("nan") for name in names}
    arrays = [as_signal(stems[name], f"stems[{name!r}]") for name in names]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"stems must all have the same shape, got {[a.shape for a in arrays]}")
    half = BLEED_N_FFT // 2
    audio = torch.from_numpy(np.pad(np.stack(arrays).astype(np.float32, copy=False), ((0, 0), (0, 0), (half, half))))
    n_frames = 1 + (audio.shape[-1] - BLEED_N_FFT) // BLEED_HOP
    total, masked = bleed_sums(audio, n_frames)
    return {
        name: float(masked[k] / total[k]) if total[k] > 0 else float("nan") for k, name in enumerate(names)
    }


def track_quality(mixture: Any, stems: Mapping[str, Any]) -> dict[str, float]:
    """Track-level columns: ``residual_db`` and ``bleed_ratio_<stem>`` per stem (module docstring).

    Args:
        mixture: ``[channels, samples]``.
        stems: stem name -> ``[channels, samples]``, each the mixture's shape. For
            single-target models include the complement (``instrumental``): the
            residual then measures only float rounding.
    """
    mix = as_signal(mixture, "mixture")
    if not stems:
        raise ValueError("track_quality needs at least one stem")
    residual = mix.astype(np.float64)  # a fresh copy: the caller's mixture is never modified
    for name, stem in stems.items():
        audio = as_signal(stem, f"stems[{name!r}]")
        if audio.shape != mix.shape:
            raise ValueError(f"stem {name!r} {audio.shape} and mixture {mix.shape} must have the same shape")
        residual -= audio
    mix_energy = energy(mix)
    out = {"residual_db": _db(energy(residual) / mix_energy, power=True) if mix_energy > 0 else float("nan")}
    out.update({f"bleed_ratio_{name}": value for name, value in bleed_ratios(stems).items()})
    return out
