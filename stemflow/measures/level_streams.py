"""Integrated loudness and true peak accumulated block by block (the measures of :mod:`stemflow.measures.loudness`).

:class:`LoudnessStream` and :class:`TruePeakStream` take a signal as
consecutive ``[channels, n]`` blocks (any sizes, 0 included) and give what
:func:`~stemflow.measures.loudness.integrated_loudness` and
:func:`~stemflow.measures.loudness.true_peak_dbtp` give for the joined blocks,
driving that module's public pieces (its K-weighting biquads, gating constants,
oversampling factor and interpolation filter) without holding the track:

* loudness: the K-weighting runs block to block with its filter state carried
  (``scipy.signal.sosfilt`` with ``zi``: the same output samples as one call);
  what is kept is the energy of every complete 100 ms hop per channel (10
  floats a second), from which the 400 ms gating blocks and both gates are
  computed at the end exactly as the whole-array function does. Agreement:
  ~1e-12 LU (summation order).
* true peak: the full convolution of the zero-padded signal with every
  polyphase branch, block by block with the last ``taps - 1`` samples carried;
  computed in float64 where the whole-array function uses float32 FFTs, so the
  two agree to ~1e-5 dB (its stated error is ~1e-6 dB).

QUALITY-ACCUMULATOR: the streamed quality accumulator measures the same two
quantities for the quality columns; these may then delegate to it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal as sps

from stemflow.measures.loudness import (
    ABSOLUTE_GATE_LUFS,
    BLOCK_HOP_S,
    LOUDNESS_OFFSET_DB,
    RELATIVE_GATE_LU,
    interpolation_filter,
    k_weighting_sos,
    oversampling_factor,
)


class LoudnessStream:
    """:func:`~stemflow.measures.loudness.integrated_loudness` over blocks (LUFS; NaN as there)."""

    def __init__(self, sample_rate: float) -> None:
        self.hop = round(BLOCK_HOP_S * sample_rate)
        if self.hop <= 0:
            raise ValueError(
                f"sample_rate {sample_rate} too low for 100 ms gating steps"
            )
        self._sos = k_weighting_sos(sample_rate)
        self._state: np.ndarray | None = None  # sosfilt zi: [sections, channels, 2]
        self._carry: np.ndarray | None = (
            None  # weighted samples of the hop being filled
        )
        self._hops: list[np.ndarray] = []  # [channels, k] energies of complete hops
        self.samples = 0

    def push(self, x: np.ndarray) -> None:
        """The next ``[channels, n]`` block."""
        if x.shape[-1] == 0:
            return
        audio = np.asarray(x, dtype=np.float64)
        if self._state is None:
            self._state = np.zeros((self._sos.shape[0], audio.shape[0], 2))
            self._carry = np.zeros((audio.shape[0], 0))
        weighted, self._state = sps.sosfilt(self._sos, audio, axis=-1, zi=self._state)
        joined = np.concatenate([self._carry, weighted], axis=1)
        whole = joined.shape[1] // self.hop
        pieces = joined[:, : whole * self.hop].reshape(joined.shape[0], whole, self.hop)
        self._hops.append(np.einsum("csh,csh->cs", pieces, pieces))
        self._carry = joined[:, whole * self.hop :]
        self.samples += audio.shape[1]

    def result(self) -> float:
        """Integrated loudness in LUFS; NaN when shorter than 400 ms, silent or below the -70 LUFS gate."""
        block = 4 * self.hop
        if self.samples < block:
            return float("nan")
        sub = np.concatenate(self._hops, axis=1)
        per_block = block // self.hop
        csum = np.concatenate(
            [np.zeros((sub.shape[0], 1)), np.cumsum(sub, axis=1)], axis=1
        )
        n_blocks = sub.shape[1] - per_block + 1
        power = (
            (csum[:, per_block : per_block + n_blocks] - csum[:, :n_blocks]) / block
        ).sum(axis=0)
        with np.errstate(divide="ignore"):
            block_lufs = LOUDNESS_OFFSET_DB + 10.0 * np.log10(power)
        kept = block_lufs > ABSOLUTE_GATE_LUFS
        if not kept.any():
            return float("nan")
        relative_gate = (
            LOUDNESS_OFFSET_DB
            + 10.0 * math.log10(power[kept].mean())
            + RELATIVE_GATE_LU
        )
        kept &= block_lufs > relative_gate
        return float(LOUDNESS_OFFSET_DB + 10.0 * math.log10(power[kept].mean()))


class TruePeakStream:
    """:func:`~stemflow.measures.loudness.true_peak_dbtp` over blocks (dBTP; ``-inf`` for digital silence)."""

    def __init__(self, sample_rate: float) -> None:
        self.factor = oversampling_factor(sample_rate)
        self._phases = interpolation_filter(self.factor)
        self._carry: np.ndarray | None = (
            None  # the last taps - 1 samples (zeros before the track)
        )
        self.sample_peak = 0.0
        self._peak = 0.0

    def push(self, x: np.ndarray) -> None:
        """The next ``[channels, n]`` block."""
        if x.shape[-1] == 0:
            return
        audio = np.asarray(x, dtype=np.float64)
        self.sample_peak = max(self.sample_peak, float(np.max(np.abs(audio))))
        if self.factor == 1:
            return
        if self._carry is None:
            self._carry = np.zeros((audio.shape[0], self._phases.shape[1] - 1))
        self._interpolate(np.concatenate([self._carry, audio], axis=1))

    def _interpolate(self, segment: np.ndarray) -> None:
        """Peak of every branch's outputs that ``segment`` (carry + new samples) completes."""
        for phase in self._phases:
            y = sps.oaconvolve(segment, phase[None, :], mode="valid", axes=-1)
            self._peak = max(self._peak, float(np.max(np.abs(y))))
        self._carry = segment[:, segment.shape[1] - (self._phases.shape[1] - 1) :]

    def result(self) -> float:
        """True peak in dBTP (never below the sample peak)."""
        if self.factor > 1 and self._carry is not None and self.sample_peak > 0:
            self._interpolate(
                np.concatenate([self._carry, np.zeros_like(self._carry)], axis=1)
            )
            self._carry = None
        peak = max(self._peak, self.sample_peak)
        return 20.0 * math.log10(peak) if peak > 0 else float("-inf")
