"""Block-by-block accumulators of the quality measures: one small class per concern.

Each accumulator takes a long signal as consecutive blocks (``push``, any
length, zero included) and gives the value its whole-array counterpart in
:mod:`stemflow.measures.quality` / :mod:`stemflow.measures.loudness` gives on
the concatenated signal, while holding only running sums and the short history
its windows or filters need -- never the signal. :mod:`stemflow.measures.streaming`
combines them into the catalogue's quality columns.

============================ ============================================ ==========================================
accumulator                  whole-array counterpart                      held between pushes (per channel)
============================ ============================================ ==========================================
:class:`LevelAccumulator`    energy, sample peak, clipped count           four numbers
:class:`MomentsAccumulator`  :func:`~quality.stereo_correlation`          six float64 co-moments (Chan et al. merge)
:class:`SilenceAccumulator`  :func:`~quality.silence_ratio`               < 100 ms of samples, two counts
:class:`LoudnessAccumulator` :func:`~loudness.integrated_loudness`        filter state, < 100 ms of K-weighted
                                                                          samples, 4 partial sums, **one float64
                                                                          per 100 ms** (the gating blocks' powers)
:class:`TruePeakAccumulator` :func:`~loudness.true_peak_dbtp`             < 2048 + 126 float32 samples
:class:`BleedAccumulator`    :func:`~quality.bleed_ratios`                < 2048 float32 samples per stem
============================ ============================================ ==========================================

Blocks are ``[channels, samples]`` numpy arrays, already checked (finite, same
channels every push: :class:`stemflow.measures.streaming.QualityAccumulator`
checks them); the accumulators never modify them. Results are pure: they may
be asked for at any time (the zero padding after the track's end is applied to
a copy) and more blocks pushed afterwards.
"""

from __future__ import annotations

from array import array

import numpy as np
import torch
from scipy import signal as sps

from stemflow.measures.loudness import (
    BLOCK_HOP_S,
    TruePeakKernel,
    gated_loudness,
    k_weighting_sos,
    oversampling_factor,
)
from stemflow.measures.quality import (
    BLEED_HOP,
    BLEED_N_FFT,
    CLIP_LEVEL,
    SILENCE_THRESHOLD_DBFS,
    SILENCE_WINDOW_S,
    bleed_sums,
)
from stemflow.measures.signals import energy, window_energies


class LevelAccumulator:
    """Samples per channel, float64 energy, sample peak and count of clipped samples (``|x| >= CLIP_LEVEL``)."""

    def __init__(self) -> None:
        self.samples = 0
        self.values = 0
        self.energy = 0.0
        self.peak = 0.0
        self.clipped = 0

    def push(self, block: np.ndarray) -> None:
        """Add ``[channels, n]``."""
        if block.shape[1] == 0:
            return
        self.samples += block.shape[1]
        self.values += block.size
        self.energy += energy(block)
        magnitude = np.abs(block)
        self.peak = max(self.peak, float(magnitude.max()))
        self.clipped += int(np.count_nonzero(magnitude >= CLIP_LEVEL))


class MomentsAccumulator:
    """Pearson correlation of channels 0 and 1 from running float64 co-moments.

    Each block's means and centred sums of squares and products are computed
    in two passes and merged with the running ones (Chan, Golub and LeVeque's
    pairwise update), so the result matches the two-pass whole-array value to
    ~1e-12 for any track length. A constant channel has a co-moment of exactly
    zero (the merge adds ``delta^2 ...`` with ``delta = 0``): NaN, as the
    whole-array version; mono (one channel) is NaN too.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = np.zeros(2)  # channels 0 and 1
        self.m2 = np.zeros(2)  # sum of squared deviations
        self.comoment = 0.0  # sum of products of deviations

    def push(self, block: np.ndarray) -> None:
        """Add ``[channels, n]`` (only channels 0 and 1 are read)."""
        n = block.shape[1]
        if block.shape[0] < 2 or n == 0:
            return
        pair = block[:2].astype(np.float64)
        mean = pair.mean(axis=1)
        centred = pair - mean[:, None]
        m2 = np.einsum("cn,cn->c", centred, centred)
        comoment = float(centred[0] @ centred[1])
        total = self.count + n
        delta = mean - self.mean
        weight = self.count * n / total
        self.comoment += comoment + float(delta[0] * delta[1]) * weight
        self.m2 = self.m2 + m2 + delta * delta * weight
        self.mean = self.mean + delta * (n / total)
        self.count = total

    def correlation(self) -> float:
        """``C / sqrt(M2_0 M2_1)`` clipped to [-1, 1]; NaN for mono, no samples or a constant channel."""
        norm = float(np.sqrt(self.m2[0] * self.m2[1]))
        if self.count == 0 or norm == 0:
            return float("nan")
        return float(np.clip(self.comoment / norm, -1.0, 1.0))


class SilenceAccumulator:
    """Count of 100 ms windows (aligned to the track's start) whose RMS is below -60 dBFS.

    The samples of the window under way (fewer than one window) are carried
    to the next push; the last, shorter window counts as the whole-array
    version counts it.
    """

    def __init__(self, sample_rate: float) -> None:
        self.window = max(1, round(SILENCE_WINDOW_S * sample_rate))
        self.windows = 0
        self.silent = 0
        self._carry: np.ndarray | None = None
        self._threshold = 10.0 ** (SILENCE_THRESHOLD_DBFS / 10.0)

    def push(self, block: np.ndarray) -> None:
        """Add ``[channels, n]``."""
        joined = block if self._carry is None else np.concatenate([self._carry, block], axis=1)
        whole = joined.shape[1] // self.window * self.window
        if whole:
            energies, counts = window_energies(joined[:, :whole], self.window)
            self.windows += energies.size
            self.silent += int(np.count_nonzero(energies / counts < self._threshold))
        self._carry = joined[:, whole:].copy()

    def ratio(self) -> float:
        """Silent windows / windows, the shorter last one included; NaN before any sample."""
        windows, silent = self.windows, self.silent
        if self._carry is not None and self._carry.shape[1]:
            windows += 1
            silent += int(energy(self._carry) / self._carry.size < self._threshold)
        return silent / windows if windows else float("nan")

    @property
    def nbytes(self) -> int:
        """Bytes of carried samples."""
        return 0 if self._carry is None else self._carry.nbytes


class LoudnessAccumulator:
    """Gated integrated loudness (LUFS) from K-weighted blocks, filtered with a carried filter state.

    The K-weighting runs through ``scipy.signal.sosfilt`` with its state ``zi``
    carried from block to block (the same output as one call on the whole
    signal). The filtered samples are summed in 100 ms sub-blocks (the partial
    one carried) into a running float64 cumulative sum, and each 400 ms
    gating block's power is a difference of that sum, exactly the arithmetic of
    :func:`~stemflow.measures.loudness.integrated_loudness`. The powers, one
    float64 per 100 ms (576 kB for 2 hours), are gated at the end by
    :func:`~stemflow.measures.loudness.gated_loudness`.
    """

    def __init__(self, sample_rate: float) -> None:
        self.hop = round(BLOCK_HOP_S * sample_rate)
        if self.hop <= 0:
            raise ValueError(f"sample_rate {sample_rate} too low for 100 ms gating steps")
        self.per_block = 4  # 400 ms blocks of 100 ms sub-blocks
        self._sos = k_weighting_sos(sample_rate)
        self._zi: np.ndarray | None = None
        self._carry: np.ndarray | None = None  # K-weighted samples of the sub-block under way
        self._csum: np.ndarray | None = None  # [channels, <= 4]: the latest cumulative sums
        self._powers = array("d")  # one per complete 400 ms block

    def push(self, block: np.ndarray) -> None:
        """Add ``[channels, n]``."""
        channels = block.shape[0]
        if self._zi is None:
            self._zi = np.zeros((self._sos.shape[0], channels, 2))
            self._carry = np.zeros((channels, 0))
            self._csum = np.zeros((channels, 1))
        if block.shape[1] == 0:
            return
        weighted, self._zi = sps.sosfilt(self._sos, block.astype(np.float64, copy=False), axis=-1, zi=self._zi)
        joined = np.concatenate([self._carry, weighted], axis=1)
        n_sub = joined.shape[1] // self.hop
        pieces = joined[:, : n_sub * self.hop].reshape(channels, n_sub, self.hop)
        sub = np.einsum("csh,csh->cs", pieces, pieces)
        self._carry = joined[:, n_sub * self.hop :].copy()
        # np.cumsum adds sequentially: starting from the last total repeats the whole-array sums
        latest = np.cumsum(np.concatenate([self._csum[:, -1:], sub], axis=1), axis=1)
        csum = np.concatenate([self._csum, latest[:, 1:]], axis=1)
        n_blocks = csum.shape[1] - self.per_block
        if n_blocks > 0:
            z = (csum[:, self.per_block :] - csum[:, :n_blocks]) / (self.per_block * self.hop)
            self._powers.frombytes(np.ascontiguousarray(z.sum(axis=0)).tobytes())  # G_i = 1
        self._csum = csum[:, -self.per_block :].copy()

    def loudness(self) -> float:
        """LUFS; NaN when shorter than 400 ms or no block passes the gates."""
        return gated_loudness(np.frombuffer(self._powers, dtype=np.float64))

    @property
    def nbytes(self) -> int:
        """Bytes of carried state, the per-100 ms powers excluded (:attr:`powers_nbytes`)."""
        return sum(a.nbytes for a in (self._zi, self._carry, self._csum) if a is not None)

    @property
    def powers_nbytes(self) -> int:
        """Bytes of the gating blocks' powers: 8 per 100 ms of signal."""
        return len(self._powers) * self._powers.itemsize


class TruePeakAccumulator:
    """True peak in dBTP, interpolated with the FIR of :func:`~stemflow.measures.loudness.true_peak_dbtp`.

    The interpolator's output is cut into the same blocks of 2048 samples as
    the whole-array version (:class:`~stemflow.measures.loudness.TruePeakKernel`):
    the float32 input is kept from the first sample the next block reads (the
    filter's ``taps - 1`` history, the track preceded by ``taps - 1`` zeros),
    each complete block is interpolated as soon as it is pushed (skipped when
    its inputs cannot beat the peak so far: exact), and the blocks at the end
    read zeros after the track, so every block gives the whole-array numbers.
    """

    def __init__(self, sample_rate: float) -> None:
        factor = oversampling_factor(sample_rate)
        self._kernel = TruePeakKernel.for_factor(factor) if factor > 1 else None
        self.samples = 0
        self.sample_peak = 0.0
        self._peak = 0.0  # largest interpolated output so far
        self._blocks = 0  # output blocks done
        self._padded: np.ndarray | None = None  # float32 input from block self._blocks's first read on

    def push(self, block: np.ndarray) -> None:
        """Add ``[channels, n]``."""
        kernel = self._kernel
        if block.shape[1]:
            self.sample_peak = max(self.sample_peak, float(np.max(np.abs(block))))
        self.samples += block.shape[1]
        if kernel is None:
            return
        if self._padded is None:
            self._padded = np.zeros((block.shape[0], kernel.taps - 1), dtype=np.float32)
        padded = np.concatenate([self._padded, block.astype(np.float32, copy=False)], axis=1)
        segments = kernel.segments(padded)
        if segments.shape[1]:
            self._peak = kernel.segments_peak(segments, max(self._peak, self._start_peak()))
            self._blocks += segments.shape[1]
        self._padded = padded[:, segments.shape[1] * kernel.block :].copy()

    def _start_peak(self) -> float:
        """The peak before interpolating: the samples' and the single-tap phases' (a scaled copy of them)."""
        gain = 1.0 if self._kernel is None else self._kernel.single_tap_gain
        return max(self.sample_peak, self.sample_peak * gain)

    def true_peak(self) -> float:
        """Largest magnitude of the interpolated signal (linear, not dB); 0 for silence or no samples."""
        kernel = self._kernel
        if kernel is None or self.sample_peak == 0.0 or self._padded is None:
            return self.sample_peak
        n_blocks = -(-(self.samples + kernel.taps - 1) // kernel.block)  # blocks of the 'full' convolution
        tail = np.zeros(
            (
                self._padded.shape[0],
                (n_blocks - self._blocks) * kernel.block + kernel.taps - 1,
            ),
            dtype=np.float32,
        )
        tail[:, : self._padded.shape[1]] = self._padded
        return kernel.segments_peak(kernel.segments(tail), max(self._peak, self._start_peak()))

    @property
    def nbytes(self) -> int:
        """Bytes of carried samples."""
        return 0 if self._padded is None else self._padded.nbytes


class BleedAccumulator:
    """Per stem, STFT energy in all and in masked bins (:func:`~stemflow.measures.quality.bleed_ratios`).

    Frames (Hann 2048, hop 1024) are placed as the whole-array version places
    them: the track preceded by 1024 zeros, frame ``f`` reads padded samples
    ``[1024 f, 1024 f + 2048)``. Every complete frame is taken as soon as it is
    pushed; the samples from the next frame's start on (fewer than 2048 a stem)
    are carried, and the last frames read 1024 zeros after the track.
    """

    def __init__(self, n_stems: int) -> None:
        self.n_stems = n_stems
        self.total = torch.zeros(n_stems, dtype=torch.float64)
        self.masked = torch.zeros(n_stems, dtype=torch.float64)
        self._padded: np.ndarray | None = None  # float32 [stems, channels, m] from the next frame's start

    def push(self, stems: np.ndarray) -> None:
        """Add ``[stems, channels, n]`` (the stems in a fixed order)."""
        if self._padded is None:
            self._padded = np.zeros((*stems.shape[:2], BLEED_N_FFT // 2), dtype=np.float32)
        padded = np.concatenate([self._padded, stems.astype(np.float32, copy=False)], axis=-1)
        n_frames = self._frames(padded)
        if n_frames:
            total, masked = bleed_sums(torch.from_numpy(padded), n_frames)
            self.total += total
            self.masked += masked
        self._padded = padded[..., n_frames * BLEED_HOP :].copy()

    @staticmethod
    def _frames(padded: np.ndarray) -> int:
        """Complete frames in ``padded``."""
        return 1 + (padded.shape[-1] - BLEED_N_FFT) // BLEED_HOP if padded.shape[-1] >= BLEED_N_FFT else 0

    def ratios(self) -> list[float]:
        """Per stem, masked / total energy; NaN for a silent stem, or every stem when there is only one."""
        if self.n_stems < 2 or self._padded is None:
            return [float("nan")] * self.n_stems
        tail = np.pad(self._padded, ((0, 0), (0, 0), (0, BLEED_N_FFT // 2)))
        total, masked = bleed_sums(torch.from_numpy(tail), self._frames(tail))
        total, masked = total + self.total, masked + self.masked
        return [float(masked[k] / total[k]) if total[k] > 0 else float("nan") for k in range(self.n_stems)]

    @property
    def nbytes(self) -> int:
        """Bytes of carried samples."""
        return 0 if self._padded is None else self._padded.nbytes
