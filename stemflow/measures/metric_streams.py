"""Reference metrics accumulated block by block: the same numbers as :mod:`stemflow.measures.metrics`, in bounded memory.

Each accumulator takes a track as consecutive ``[channels, n]`` blocks of the
reference and the estimate (any block sizes, ``n = 0`` included; the blocks of
one push must have equal shapes) and gives, at the end, what the whole-array
function gives for the joined blocks:

============================ ============================== ====== =================================
accumulator                  whole-array function           passes state kept
============================ ============================== ====== =================================
:class:`CsdrStream`          :func:`~.metrics.csdr`          1     one float64 triple per 1 s frame
:class:`UsdrStream`          :func:`~.metrics.sdr`           1     two float64 sums
:class:`SiSdrStream`         :func:`~.metrics.si_sdr`        2     sums; pass 2 the exact residual
:class:`BleedlessFullnessStream` :func:`~.metrics.bleedless_fullness` 2 max dB; pass 2 the sums
:class:`L1FreqStream`        :func:`~.metrics.l1_freq`       1     one sum, ``n_fft`` samples carried
============================ ============================== ====== =================================

**Passes.** Two scores cannot be finished in one pass without losing
exactness: SI-SDR's residual ``||alpha s - s_hat||^2`` needs ``alpha`` (the
expanded form ``alpha^2 ||s||^2 - 2 alpha <s_hat, s> + ||s_hat||^2`` cancels
catastrophically for a near-perfect estimate, where ``eps = 1e-8`` decides the
value), and bleedless/fullness floor each spectrogram at its *global* maximum
minus 80 dB. Those accumulators have ``passes = 2``: the caller pushes the
whole track, calls :meth:`MetricStream.next_pass`, pushes it again (the same
blocks, from the start), then calls :meth:`MetricStream.result`.
:class:`StemMetricsStream` bundles the five scores of a metrics row.

**Frames across blocks.** cSDR frames (``window_s``, hop = window) are
aligned to the track start, not to the blocks: a frame's energies are summed
over the blocks it spans; only whole frames count, except that a track
shorter than one window is one frame (museval's framing, as
:func:`~.metrics.frame_count`); the silence (NaN) and ``+inf`` rules are
:func:`~.metrics.framewise_sdr`'s. The spectral scores carry the last
``n_fft`` samples over block boundaries
(:class:`stemflow.measures.stft_frames.StftFramer`) and pad the two
ends exactly as ``torch.stft(center=True)`` does (zeros for bleedless,
reflection for L1Freq), so every STFT frame is the whole-array one.

**Tolerance.** Sums are accumulated in float64 in a different order than the
whole-array functions, so results agree to about 1e-12 relative (tested at
1e-9); NaN, ``+inf`` and exact zeros are reproduced exactly (a sum of
squares is zero in any order iff every term is). ``zero_mean`` SI-SDR takes
the means from pass 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from stemflow.measures.metrics import (
    USDR_EPS,
    _nanmedian,
    _ratio_db,
    _samples,
    slaney_mel_filterbank,
)
from stemflow.measures.signals import as_signal
from stemflow.measures.stft_frames import StftFramer


def _block_pair(reference: Any, estimate: Any) -> tuple[np.ndarray, np.ndarray]:
    """A reference/estimate block pair of equal ``[channels, n]`` shape (``n = 0`` allowed)."""
    ref = _as_block(reference, "reference")
    est = _as_block(estimate, "estimate")
    if ref.shape != est.shape:
        raise ValueError(f"reference block {ref.shape} and estimate block {est.shape} must have the same shape")
    return ref, est


def _as_block(x: Any, name: str) -> np.ndarray:
    """:func:`as_signal` for a block, which may hold no sample."""
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if arr.ndim == 2 and arr.shape[0] > 0 and arr.shape[1] == 0:
        return arr.astype(np.float64) if not np.issubdtype(arr.dtype, np.floating) else arr
    return as_signal(arr, name)


class MetricStream:
    """One score accumulated over blocks (see the module docstring): ``push`` x passes, ``result``.

    Subclasses set ``passes`` and implement ``_push`` (``pass_index`` is 0 or 1) and ``_result``.
    """

    passes = 1

    def __init__(self) -> None:
        self.pass_index = 0
        self.samples = 0  # samples pushed in the current pass
        self._first_pass_samples = 0
        self._value: tuple[Any] | None = None

    def push(self, reference: Any, estimate: Any) -> None:
        """Take the next block of the reference and of the estimate, ``[channels, n]`` each."""
        ref, est = _block_pair(reference, estimate)
        if ref.shape[1]:
            self._push(ref, est)
            self.samples += ref.shape[1]

    def next_pass(self) -> None:
        """Start the next pass (the same blocks again, from the start of the track)."""
        if self.pass_index + 1 >= self.passes:
            raise ValueError(f"{type(self).__name__} takes {self.passes} pass(es)")
        self._first_pass_samples = self.samples
        self._end_pass()
        self.pass_index += 1
        self.samples = 0

    def result(self) -> Any:
        """The score of the pushed track (needs every pass, each with the same samples)."""
        if self.pass_index + 1 != self.passes:
            raise ValueError(f"{type(self).__name__} needs {self.passes} passes, got {self.pass_index + 1}")
        if self.samples == 0:
            raise ValueError(f"{type(self).__name__}: no sample was pushed")
        if self.passes > 1 and self.samples != self._first_pass_samples:
            raise ValueError(
                f"{type(self).__name__}: pass 2 had {self.samples} samples, pass 1 {self._first_pass_samples}"
            )
        if self._value is None:
            self._value = (self._result(),)
        return self._value[0]

    def _push(self, ref: np.ndarray, est: np.ndarray) -> None:
        raise NotImplementedError

    def _end_pass(self) -> None:
        """Hook run at the end of every pass but the last."""

    def _result(self) -> Any:
        raise NotImplementedError


class CsdrStream(MetricStream):
    """:func:`~stemflow.measures.metrics.csdr` over blocks: per-frame energies, median of the frame SDRs."""

    def __init__(self, sample_rate: float, window_s: float = 1.0) -> None:
        super().__init__()
        self.window = _samples(window_s, sample_rate, "window_s")
        self._done: list[np.ndarray] = []  # [3] per whole frame: ||s||^2, ||s_hat - s||^2, ||s_hat||^2
        self._open = np.zeros(3)  # the frame being filled
        self._filled = 0  # its samples so far

    def _push(self, ref: np.ndarray, est: np.ndarray) -> None:
        start = 0
        n = ref.shape[1]
        while start < n:
            take = min(n - start, self.window - self._filled)
            r = ref[:, start : start + take].astype(np.float64)
            e = est[:, start : start + take].astype(np.float64)
            self._open += _energies(r, e)
            self._filled += take
            start += take
            if self._filled == self.window:
                self._done.append(self._open)
                self._open, self._filled = np.zeros(3), 0

    def frame_sdr(self) -> np.ndarray:
        """SDR of each frame in dB, ``[frames]`` (:func:`~stemflow.measures.metrics.framewise_sdr`)."""
        frames = np.array(self._done) if self._done else self._open[None, :]  # shorter than a window: one frame
        ref_energy, err_energy, est_energy = frames[:, 0], frames[:, 1], frames[:, 2]
        return _ratio_db(ref_energy, err_energy, (ref_energy == 0) | (est_energy == 0))

    def _result(self) -> float:
        return _nanmedian(self.frame_sdr())


def _energies(ref: np.ndarray, est: np.ndarray) -> np.ndarray:
    """``[||s||^2, ||s_hat - s||^2, ||s_hat||^2]`` of float64 blocks, over all channels."""
    diff = est - ref
    return np.array(
        [
            np.einsum("cn,cn->", ref, ref),
            np.einsum("cn,cn->", diff, diff),
            np.einsum("cn,cn->", est, est),
        ]
    )


class UsdrStream(MetricStream):
    """:func:`~stemflow.measures.metrics.sdr` (uSDR) over blocks: two running sums."""

    def __init__(self, eps: float = USDR_EPS) -> None:
        super().__init__()
        self.eps = eps
        self._num = 0.0
        self._den = 0.0

    def _push(self, ref: np.ndarray, est: np.ndarray) -> None:
        self._num += float(np.einsum("cn,cn->", ref, ref, dtype=np.float64))
        diff = est.astype(np.float64) - ref
        self._den += float(np.einsum("cn,cn->", diff, diff))

    def _result(self) -> float:
        return 10.0 * math.log10((self._num + self.eps) / (self._den + self.eps))


class SiSdrStream(MetricStream):
    """:func:`~stemflow.measures.metrics.si_sdr` over two passes: ``alpha`` first, the exact residual second.

    Pass 1 sums ``||s||^2``, ``<s_hat, s>`` (and, for ``zero_mean``, each channel's
    sums of ``s`` and ``s_hat``: the centred products are the raw ones minus
    ``n * mean * mean``, exact unless a DC offset dominates the signal); pass 2
    sums ``||alpha (s - m_s) - (s_hat - m_hat)||^2`` directly.
    """

    passes = 2

    def __init__(self, *, zero_mean: bool = False, eps: float = 1e-8) -> None:
        super().__init__()
        self.zero_mean = zero_mean
        self.eps = eps
        self._sums = np.zeros((3, 0))  # [2, channels]: sums of s and of s_hat
        self._ref_energy = 0.0
        self._dot = 0.0
        self._noise = 0.0
        self._alpha = math.nan
        self._means: tuple[np.ndarray, np.ndarray] | None = None

    def _push(self, ref: np.ndarray, est: np.ndarray) -> None:
        ref = ref.astype(np.float64)
        est = est.astype(np.float64)
        if self.pass_index == 0:
            self._ref_energy += float(np.einsum("cn,cn->", ref, ref))
            self._dot += float(np.einsum("cn,cn->", est, ref))
            sums = np.stack([ref.sum(axis=1), est.sum(axis=1)])
            self._sums = sums if self._sums.size == 0 else self._sums + sums
            return
        if self._means is not None:
            ref = ref - self._means[0][:, None]
            est = est - self._means[1][:, None]
        noise = self._alpha * ref - est
        self._noise += float(np.einsum("cn,cn->", noise, noise))

    def _end_pass(self) -> None:
        if self.zero_mean:
            n = self.samples
            mean_ref, mean_est = self._sums[0] / n, self._sums[1] / n
            self._means = (mean_ref, mean_est)
            self._ref_energy -= n * float(mean_ref @ mean_ref)
            self._dot -= n * float(mean_est @ mean_ref)
        self._alpha = self._dot / self._ref_energy if self._ref_energy != 0 else 0.0

    def _result(self) -> float:
        if self._ref_energy == 0:
            return float("nan")
        return 10.0 * math.log10((self._alpha * self._alpha * self._ref_energy + self.eps) / (self._noise + self.eps))


class BleedlessFullnessStream(MetricStream):
    """:func:`~stemflow.measures.metrics.bleedless_fullness` over two passes: each mel dB maximum, then the sums."""

    passes = 2

    def __init__(
        self,
        sample_rate: float = 44100,
        *,
        n_fft: int = 4096,
        hop_length: int = 1024,
        n_mels: int = 512,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self._mel = torch.from_numpy(slaney_mel_filterbank(sample_rate, n_fft, n_mels))
        self._window = torch.hann_window(n_fft, dtype=torch.float64)
        self._max = [-math.inf, -math.inf]  # mel dB maxima: reference, estimate
        self._sums = [0.0, 0, 0.0, 0]  # sum and count of d > 0, then of -d for d < 0
        self._framers = self._new_framers()

    def _new_framers(self) -> tuple[StftFramer, StftFramer]:
        return tuple(StftFramer(self.n_fft, self.hop_length, self._window, "constant") for _ in range(2))

    def _push(self, ref: np.ndarray, est: np.ndarray) -> None:
        self._take(
            self._framers[0].push(ref.astype(np.float64)),
            self._framers[1].push(est.astype(np.float64)),
        )

    def _take(self, ref_spec: torch.Tensor, est_spec: torch.Tensor) -> None:
        if ref_spec.shape[-1] == 0:
            return
        dbs = [20.0 * torch.log10(torch.clamp(self._mel @ s.abs(), min=1e-10)) for s in (ref_spec, est_spec)]
        if self.pass_index == 0:
            self._max = [max(m, float(db.max())) for m, db in zip(self._max, dbs)]
            return
        ref_db, est_db = (torch.maximum(db, torch.tensor(m - 80.0, dtype=db.dtype)) for db, m in zip(dbs, self._max))
        diff = est_db - ref_db
        above, below = diff[diff > 0], diff[diff < 0]
        self._sums[0] += float(above.sum())
        self._sums[1] += above.numel()
        self._sums[2] -= float(below.sum())
        self._sums[3] += below.numel()

    def _end_pass(self) -> None:
        self._take(self._framers[0].finish(), self._framers[1].finish())
        self._framers = self._new_framers()

    def _result(self) -> tuple[float, float]:
        self._take(self._framers[0].finish(), self._framers[1].finish())
        mean_above = self._sums[0] / self._sums[1] if self._sums[1] else 0.0
        mean_below = self._sums[2] / self._sums[3] if self._sums[3] else 0.0
        return 100.0 / (1.0 + mean_above), 100.0 / (1.0 + mean_below)


class L1FreqStream(MetricStream):
    """:func:`~stemflow.measures.metrics.l1_freq` over blocks: one running sum of magnitude differences."""

    def __init__(self, *, n_fft: int = 2048, hop_length: int = 1024) -> None:
        super().__init__()
        window = torch.ones(n_fft, dtype=torch.float64)
        self._framers = tuple(StftFramer(n_fft, hop_length, window, "reflect") for _ in range(2))
        self._sum = 0.0
        self._count = 0

    def _push(self, ref: np.ndarray, est: np.ndarray) -> None:
        self._take(
            self._framers[0].push(ref.astype(np.float64)),
            self._framers[1].push(est.astype(np.float64)),
        )

    def _take(self, ref_spec: torch.Tensor, est_spec: torch.Tensor) -> None:
        self._sum += float((est_spec.abs() - ref_spec.abs()).abs().sum())
        self._count += ref_spec.numel()

    def _result(self) -> float:
        self._take(self._framers[0].finish(), self._framers[1].finish())
        return 100.0 / (1.0 + 10.0 * self._sum / self._count)


METRIC_COLUMNS: tuple[str, ...] = (
    "csdr_db",
    "usdr_db",
    "si_sdr_db",
    "bleedless",
    "fullness",
)
"""The reference metrics columns of a metrics row, in order."""


class StemMetricsStream(MetricStream):
    """The reference metrics of a metrics row (what :func:`stemflow.evaluation.scoring.score_stem` gives).

    ``result()``: ``{column: value}`` for ``columns`` (a subset of :data:`METRIC_COLUMNS`).
    cSDR and uSDR are one-pass scores (they take only pass 1's blocks); the
    stream takes two passes when SI-SDR, bleedless or fullness is asked for, else one.
    """

    def __init__(self, sample_rate: int, columns: tuple[str, ...] = METRIC_COLUMNS) -> None:
        super().__init__()
        unknown = set(columns) - set(METRIC_COLUMNS)
        if unknown:
            raise ValueError(f"unknown metrics column(s) {sorted(unknown)}; valid: {', '.join(METRIC_COLUMNS)}")
        self.columns = tuple(columns)
        one_pass = {"csdr_db": lambda: CsdrStream(sample_rate), "usdr_db": UsdrStream}
        self._one_pass = {c: make() for c, make in one_pass.items() if c in columns}
        self._si_sdr = SiSdrStream() if "si_sdr_db" in columns else None
        wants_spectral = {"bleedless", "fullness"} & set(columns)
        self._spectral = BleedlessFullnessStream(sample_rate) if wants_spectral else None
        self._two_pass = [s for s in (self._si_sdr, self._spectral) if s is not None]
        self.passes = 2 if self._two_pass else 1

    def _push(self, ref: np.ndarray, est: np.ndarray) -> None:
        if self.pass_index == 0:
            for stream in self._one_pass.values():
                stream.push(ref, est)
        for stream in self._two_pass:
            stream.push(ref, est)

    def _end_pass(self) -> None:
        for stream in self._two_pass:
            stream.next_pass()

    def _result(self) -> dict[str, float]:
        out = {name: stream.result() for name, stream in self._one_pass.items()}
        if self._si_sdr is not None:
            out["si_sdr_db"] = self._si_sdr.result()
        if self._spectral is not None:
            out["bleedless"], out["fullness"] = self._spectral.result()
        return {column: out[column] for column in self.columns}
