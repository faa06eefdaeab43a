"""Mel band layout for Mel-Band-RoFormer, computed with numpy (no librosa).

The reference builds its bands from ``librosa.filters.mel(sr, n_fft, n_mels)``
with librosa's defaults (Slaney mel scale, ``htk=False``; Slaney area
normalisation; ``fmin=0``; ``fmax=sr/2``) and keeps only where each triangle is
> 0. This module repeats that computation step for step in float64 (then
float32, as librosa returns), so the support, which is all the model uses,
is the same bit for bit, including the borderline bins.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from stemflow.errors import ConfigError

_F_SP = 200.0 / 3  # Hz per mel on the linear part of the Slaney scale
_MIN_LOG_HZ = 1000.0  # where the scale turns logarithmic
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(frequencies: npt.ArrayLike) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above. Array in, array out."""
    frequencies = np.asarray(frequencies, dtype=np.float64)
    mels = frequencies / _F_SP
    log_region = frequencies >= _MIN_LOG_HZ
    mels = np.where(log_region, _MIN_LOG_MEL + np.log(np.maximum(frequencies, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, mels)
    return mels


def mel_to_hz(mels: npt.ArrayLike) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    frequencies = _F_SP * mels
    log_region = mels >= _MIN_LOG_MEL
    return np.where(log_region, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels - _MIN_LOG_MEL)), frequencies)


def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-normalised triangular mel filters, float32 ``[n_mels, n_fft // 2 + 1]``.

    Equal to ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)``.
    """
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    min_mel = hz_to_mel(0.0)
    max_mel = hz_to_mel(float(sample_rate) / 2)
    mel_freqs = mel_to_hz(np.linspace(min_mel, max_mel, n_mels + 2))  # band edges and centres, Hz
    edge_gaps = np.diff(mel_freqs)
    ramps = np.subtract.outer(mel_freqs, fft_freqs)  # [n_mels + 2, bins]
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    for i in range(n_mels):
        rising = -ramps[i] / edge_gaps[i]
        falling = ramps[i + 2] / edge_gaps[i + 1]
        weights[i] = np.maximum(0, np.minimum(rising, falling))
    area_norm = 2.0 / (mel_freqs[2 : n_mels + 2] - mel_freqs[:n_mels])
    weights *= area_norm[:, np.newaxis]
    return weights


def mel_band_membership(sample_rate: int, n_fft: int, num_bands: int) -> np.ndarray:
    """Which STFT bins each mel band covers: bool ``[num_bands, n_fft // 2 + 1]``.

    The support (> 0) of :func:`mel_filterbank`, with the first bin forced into
    the first band and the last bin into the last band (as the reference does).
    Bands overlap (neighbouring triangles share bins). Raises ConfigError if a
    bin belongs to no band (the reference refuses that layout too).
    """
    membership = mel_filterbank(sample_rate, n_fft, num_bands) > 0
    membership[0, 0] = True
    membership[-1, -1] = True
    uncovered = np.flatnonzero(~membership.any(axis=0))
    if uncovered.size:
        raise ConfigError(
            f"num_bands={num_bands} mel bands at sample_rate={sample_rate}, n_fft={n_fft} leave "
            f"{uncovered.size} STFT bins uncovered (first: {uncovered[:5].tolist()}); use fewer bands"
        )
    return membership
