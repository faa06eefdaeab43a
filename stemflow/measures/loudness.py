"""Loudness and true peak after ITU-R BS.1770-4, vectorised with numpy/scipy.

Two measurements the catalogue records for every stem:

* :func:`integrated_loudness` -- programme loudness in LUFS (= LKFS): K-weighting
  (a high-shelf "pre-filter" and a 2nd-order high-pass "RLB" filter), mean
  square over 400 ms blocks overlapping by 75 %, an absolute gate at -70 LUFS
  and a relative gate 10 LU below the absolute-gated loudness
  (BS.1770-4, Annex 1 and section 5 of EBU Tech 3341 / EBU R 128).
* :func:`true_peak_dbtp` -- the peak of the signal oversampled 4x with a
  polyphase low-pass FIR, as BS.1770-4 Annex 2 specifies (dBTP).

The K-weighting biquads are designed for any sample rate from their analogue
prototypes (the parametrisation used by libebur128: shelf f0 = 1681.97 Hz,
G = +4.0 dB, Q = 0.7072; high-pass f0 = 38.135 Hz, Q = 0.5003); at 48 kHz they
reproduce the coefficients tabulated in BS.1770-4 Annex 1 (Tables 1 and 2).

Both take ``[channels, samples]`` arrays, numpy or torch, full scale = 1.0
(checked by :func:`stemflow.measures.signals.as_signal`), and never mutate them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft as sp_fft
from scipy import signal as sps

from stemflow.measures.signals import as_signal


#: BS.1770 block length and hop for gating (400 ms, 75 % overlap).
BLOCK_S = 0.4
BLOCK_HOP_S = 0.1

#: Absolute gate (LUFS) and relative gate offset (LU), BS.1770-4 eq. (4)-(6).
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0

#: The constant of BS.1770 eq. (2): makes a 1 kHz sine at 0 dBFS peak in both
#: stereo channels read 0 LUFS (it offsets the K-weighting gain at 1 kHz).
LOUDNESS_OFFSET_DB = -0.691


def k_weighting_sos(sample_rate: float) -> np.ndarray:
    """The two K-weighting biquads for ``sample_rate`` as scipy ``sos`` rows, shape ``[2, 6]``.

    Stage 1 is the high-shelf pre-filter (head acoustics), stage 2 the RLB
    high-pass; bilinear transform of the analogue prototypes with pre-warping.
    At 48 kHz: b = [1.53512486, -2.69169619, 1.19839281], a = [1, -1.69065929,
    0.73248077] and b = [1, -2, 1], a = [1, -1.99004745, 0.99007225] (BS.1770-4).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    # Stage 1: high shelf.
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / q + k * k) / a0,
    ]
    # Stage 2: RLB high-pass (numerator fixed to [1, -2, 1] as in the standard).
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1.0 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, highpass], dtype=np.float64)


def _block_mean_squares(weighted: np.ndarray, block: int, hop: int) -> np.ndarray:
    """Mean square of each gating block, per channel: ``[channels, n]`` -> ``[channels, blocks]``.

    Uses a float64 cumulative sum over ``hop``-sized sub-blocks (a block is
    ``block // hop`` consecutive sub-blocks), so the cost is one pass.
    """
    channels, n = weighted.shape
    n_sub = n // hop
    pieces = weighted[:, : n_sub * hop].reshape(channels, n_sub, hop)
    sub = np.einsum("csh,csh->cs", pieces, pieces)
    per_block = block // hop
    csum = np.concatenate([np.zeros((channels, 1)), np.cumsum(sub, axis=1)], axis=1)
    n_blocks = n_sub - per_block + 1
    return (csum[:, per_block : per_block + n_blocks] - csum[:, :n_blocks]) / block


def integrated_loudness(x: Any, sample_rate: float) -> float:
    """Gated integrated loudness in LUFS (ITU-R BS.1770-4, EBU R 128).

    ``z_i`` = mean square of K-weighted channel ``i`` over a 400 ms block (blocks
    start every 100 ms); block loudness ``l = -0.691 + 10 log10(sum_i G_i z_i)``
    with ``G_i = 1`` for every channel (mono and stereo; surround weights are
    not applied, stems are at most stereo). Blocks with ``l <= -70`` are dropped
    (absolute gate); of the rest, those below ``L_abs - 10`` are dropped
    (relative gate); the result is ``-0.691 + 10 log10(sum_i G_i mean(z_i))``
    over the kept blocks. A 1 kHz sine at -23 dBFS peak in both channels reads
    -23.0 LUFS (EBU Tech 3341 case 1); the same sine in one channel reads 3.01
    LU lower.

    Only complete blocks count: a signal shorter than 400 ms, digital silence,
    or anything quieter than the -70 LUFS gate gives **NaN** (BS.1770 leaves the
    loudness undefined when no block passes the gate).

    Args:
        x: ``[channels, samples]`` audio, full scale = 1.0.
        sample_rate: in Hz; the block length is rounded to whole samples.
    """
    audio = as_signal(x, "x")
    hop = int(round(BLOCK_HOP_S * sample_rate))
    block = 4 * hop
    if hop <= 0:
        raise ValueError(f"sample_rate {sample_rate} too low for 100 ms gating steps")
    if audio.shape[1] < block:
        return float("nan")
    weighted = sps.sosfilt(k_weighting_sos(sample_rate), audio.astype(np.float64, copy=False), axis=-1)
    z = _block_mean_squares(weighted, block, hop)  # [channels, blocks]
    return gated_loudness(z.sum(axis=0))  # G_i = 1


def gated_loudness(block_powers: np.ndarray) -> float:
    """The BS.1770-4 gating of :func:`integrated_loudness` on the blocks' powers, in LUFS.

    ``block_powers``: ``[blocks]``, each block's ``sum_i G_i z_i`` (K-weighted
    mean squares summed over channels; 400 ms blocks every 100 ms). Blocks at or
    below -70 LUFS are dropped, then those at or below the relative gate (10 LU
    under the loudness of the rest). NaN when no block passes the gates (or
    there is no block). Shared by the whole-array and the streamed
    (:mod:`stemflow.measures.accumulators`) paths.
    """
    power = np.asarray(block_powers, dtype=np.float64)
    with np.errstate(divide="ignore"):
        block_lufs = LOUDNESS_OFFSET_DB + 10.0 * np.log10(power)
    kept = block_lufs > ABSOLUTE_GATE_LUFS
    if not kept.any():
        return float("nan")
    relative_gate = LOUDNESS_OFFSET_DB + 10.0 * math.log10(power[kept].mean()) + RELATIVE_GATE_LU
    kept &= block_lufs > relative_gate
    return float(LOUDNESS_OFFSET_DB + 10.0 * math.log10(power[kept].mean()))


def oversampling_factor(sample_rate: float) -> int:
    """Oversampling for true peak: 4x below 96 kHz, 2x below 192 kHz, else 1x (BS.1770-4 Annex 2)."""
    if sample_rate < 96_000:
        return 4
    if sample_rate < 192_000:
        return 2
    return 1


def interpolation_filter(factor: int, taps_per_phase: int = 32) -> np.ndarray:
    """Polyphase low-pass interpolator, shape ``[factor, taps_per_phase]``.

    A linear-phase Kaiser-window (beta 8) FIR of ``factor * taps_per_phase - 1``
    taps (odd, so its delay is a whole number of output samples and one phase
    lands on the original samples), cut-off at the original Nyquist frequency,
    DC gain ``factor``; padded with one zero and split into its ``factor``
    phases (phase ``p`` = taps ``p, p + factor, ...``). BS.1770-4 Annex 2 gives
    a 48-tap, 4-phase example; ours is longer (127 taps) for a flatter pass
    band (< 0.01 dB ripple up to 0.4 fs).
    """
    if factor == 1:
        return np.ones((1, 1))
    taps = sps.firwin(factor * taps_per_phase - 1, 1.0 / factor, window=("kaiser", 8.0)) * factor
    taps = np.append(taps, 0.0)
    return taps.reshape(taps_per_phase, factor).T.copy()


#: Samples per block of the true-peak search (blocks that cannot hold the peak are skipped).
_TRUE_PEAK_BLOCK = 2048
_TRUE_PEAK_BATCH = 256


@dataclass(frozen=True)
class TruePeakKernel:
    """The block kernel of the true-peak search, shared by the whole-array and the streamed paths.

    The output of the interpolator (the 'full' convolution of the zero-padded
    signal) is cut into blocks of :data:`block` samples; block ``b`` reads the
    padded input ``padded[:, b * block : b * block + block + taps - 1]`` (a
    *segment*), where ``padded`` is the track preceded by ``taps - 1`` zeros and
    followed by zeros. :meth:`segments_peak` interpolates whole segments.

    Attributes:
        phases: the phases with more than one tap, ``[phases, taps]``.
        single_tap_gain: the largest ``|h|`` of the phases that are one tap (a
            delayed, scaled copy of the samples: their peak is ``sample_peak *
            single_tap_gain``); 0 when there is none.
        gain: ``max_p sum_k |h_p[k]|``, the bound of an output over its inputs' largest magnitude.
        responses: float32 rfft of :attr:`phases` at ``n_fft`` points, ``[phases, bins]``.
        n_fft: FFT length of one segment.
        block: output samples per segment.
    """

    phases: np.ndarray
    single_tap_gain: float
    gain: float
    responses: np.ndarray
    n_fft: int
    block: int = _TRUE_PEAK_BLOCK

    @classmethod
    def for_factor(cls, factor: int) -> TruePeakKernel:
        """The kernel of :func:`interpolation_filter` ``(factor)``, ``factor >= 2``."""
        phases = interpolation_filter(factor)
        single_tap = np.count_nonzero(np.abs(phases) > 1e-12, axis=1) == 1
        single_tap_gain = max((float(np.max(np.abs(phase))) for phase in phases[single_tap]), default=0.0)
        phases = phases[~single_tap]
        n_fft = sp_fft.next_fast_len(_TRUE_PEAK_BLOCK + phases.shape[1] - 1, real=True)
        return cls(
            phases=phases,
            single_tap_gain=single_tap_gain,
            gain=float(np.abs(phases).sum(axis=1).max()),
            responses=sp_fft.rfft(phases.astype(np.float32), n_fft, axis=-1),
            n_fft=n_fft,
        )

    @property
    def taps(self) -> int:
        """Taps per phase: a segment is ``block + taps - 1`` input samples."""
        return int(self.phases.shape[1])

    def segments(self, padded: np.ndarray) -> np.ndarray:
        """View float32 ``[channels, m]`` as its complete segments ``[channels, blocks, block + taps - 1]`` (no copy)."""
        width = self.block + self.taps - 1
        if padded.shape[1] < width:
            return np.zeros((padded.shape[0], 0, width), dtype=padded.dtype)
        return np.lib.stride_tricks.sliding_window_view(padded, width, axis=1)[:, :: self.block]

    def segments_peak(self, segments: np.ndarray, peak: float) -> float:
        """``max(peak, largest |output| of the multi-tap phases over these segments)``.

        A segment whose largest input magnitude times :attr:`gain` does not exceed
        ``peak`` cannot beat it and is skipped (exact). Batched FFT convolution:
        one forward FFT per segment, one inverse per phase; float32.
        """
        reach = np.abs(segments).max(axis=(0, 2), initial=0.0)  # [blocks]: largest input sample each block reads
        candidates = np.flatnonzero(reach * self.gain > peak)
        taps = self.taps
        for first in range(0, candidates.size, _TRUE_PEAK_BATCH):
            batch = segments[:, candidates[first : first + _TRUE_PEAK_BATCH]]  # [channels, blocks, block + taps - 1]
            spectrum = sp_fft.rfft(batch, self.n_fft, axis=-1)
            for response in self.responses:
                # circular wrap-around only touches the first taps - 1 outputs, which 'valid' drops
                y = sp_fft.irfft(spectrum * response, self.n_fft, axis=-1)[..., taps - 1 : taps - 1 + self.block]
                peak = max(peak, float(np.max(np.abs(y))))
        return peak


def true_peak_dbtp(x: Any, sample_rate: float) -> float:
    """True peak in dBTP: ``20 log10(max |x_oversampled|)`` (ITU-R BS.1770-4 Annex 2).

    The signal is interpolated ``oversampling_factor(sample_rate)`` times with
    :func:`interpolation_filter` and the largest magnitude over all phases and
    channels is taken; the result is never below the sample peak. Samples
    outside the track are zeros. No 12 dB pre-attenuation (floating point);
    float32 arithmetic (error ~1e-6 dB). Digital silence gives ``-inf`` here;
    :mod:`stemflow.measures.quality` floors it.

    Exact but fast: the output is cut into blocks of 2048 samples, and a block
    whose input (with the filter's reach) has ``max |x| * max_p sum_k |h_p[k]|``
    below the sample peak cannot beat it, so only the other blocks are
    interpolated (:class:`TruePeakKernel`: batched FFT convolution, one forward
    FFT per block, one inverse per phase; the phase that lands on the original
    samples is a single tap and needs none).

    Args:
        x: ``[channels, samples]`` audio, full scale = 1.0.
        sample_rate: in Hz (chooses the oversampling factor).
    """
    audio = as_signal(x, "x")
    sample_peak = float(np.max(np.abs(audio)))
    factor = oversampling_factor(sample_rate)
    if factor == 1 or sample_peak == 0.0:
        return _amplitude_db(sample_peak)
    kernel = TruePeakKernel.for_factor(factor)
    peak = max(sample_peak, sample_peak * kernel.single_tap_gain)
    taps, block = kernel.taps, kernel.block
    n_out = audio.shape[1] + taps - 1  # length of the 'full' convolution
    n_blocks = -(-n_out // block)
    # zeros before and after: block b's outputs need padded[b * block : b * block + block + taps - 1]
    padded = np.zeros((audio.shape[0], n_blocks * block + taps - 1), dtype=np.float32)
    padded[:, taps - 1 : taps - 1 + audio.shape[1]] = audio
    return _amplitude_db(kernel.segments_peak(kernel.segments(padded), peak))


def _amplitude_db(amplitude: float) -> float:
    """``20 log10(amplitude)``; ``-inf`` for zero."""
    return 20.0 * math.log10(amplitude) if amplitude > 0 else float("-inf")
