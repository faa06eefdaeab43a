"""The catalogue's quality columns of a track that arrives block by block, in bounded memory.

:class:`QualityAccumulator` gives the numbers ``measure_track``
(:mod:`stemflow.engine.track`) gives on whole arrays -- :func:`track_quality`
on the model's own stems, then :func:`stem_quality` on each stem after the
optional residual (``add_residual``) -- from consecutive blocks of the mixture
and the model's stems, for a separation that streams a 2-hour track and never
holds it. The per-measure accumulators are in :mod:`stemflow.measures.accumulators`.

Agreement with the whole-array values (``tests/measures/test_streaming_quality.py``):

=============================================================== ============================================
column                                                          streamed vs whole array
=============================================================== ============================================
duration_s, sample_rate_hz, peak_dbfs, clipped_ratio,           equal
silence_ratio
rms_dbfs, energy_share, residual_db                             float64 sums in another order: ~1e-12 relative
stereo_correlation                                              merged co-moments: within 1e-9
loudness_lufs                                                   the same filter and sums: within 1e-6 LU
true_peak_dbtp                                                  the same blocks and FFTs: within 1e-6 dB
bleed_ratio_<stem>                                              the same frames: within 1e-9 relative
=============================================================== ============================================

Memory: per signal (the mixture, each stem as recorded and as the model gave
it) the accumulator carries at most ~2 200 float32 samples and ~100 ms of
samples per channel, running sums, and one float64 per 100 ms for each stem's
loudness gating (576 kB a stem for 2 hours), plus, during :meth:`push`, a few
copies of the block being pushed. :meth:`QualityAccumulator.held_nbytes` says
how much it holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from stemflow.measures.accumulators import (
    BleedAccumulator,
    LevelAccumulator,
    LoudnessAccumulator,
    MomentsAccumulator,
    SilenceAccumulator,
    TruePeakAccumulator,
)
from stemflow.measures.quality import DB_FLOOR, _db
from stemflow.measures.signals import as_signal, energy


class StemAccumulator:
    """The :data:`~stemflow.measures.quality.STEM_COLUMNS` of one stem, block by block."""

    def __init__(self, sample_rate: float) -> None:
        self.sample_rate = sample_rate
        self.levels = LevelAccumulator()
        self.moments = MomentsAccumulator()
        self.silence = SilenceAccumulator(sample_rate)
        self.loudness = LoudnessAccumulator(sample_rate)
        self.true_peak = TruePeakAccumulator(sample_rate)

    def push(self, block: np.ndarray) -> None:
        """Add the stem's next ``[channels, n]``."""
        for accumulator in (
            self.levels,
            self.moments,
            self.silence,
            self.loudness,
            self.true_peak,
        ):
            accumulator.push(block)

    def result(self, mixture_energy: float) -> dict[str, float]:
        """The columns of :func:`~stemflow.measures.quality.stem_quality`, ``energy_share`` against ``mixture_energy``."""
        levels = self.levels
        true_peak = self.true_peak.true_peak() if levels.peak > 0 else 0.0
        return {
            "duration_s": levels.samples / float(self.sample_rate),
            "sample_rate_hz": float(self.sample_rate),
            "peak_dbfs": _db(levels.peak, power=False),
            "true_peak_dbtp": _db(true_peak, power=False) if true_peak > 0 else DB_FLOOR,
            "loudness_lufs": self.loudness.loudness(),
            "rms_dbfs": _db(levels.energy / levels.values, power=True),
            "clipped_ratio": levels.clipped / levels.values,
            "silence_ratio": self.silence.ratio(),
            "stereo_correlation": self.moments.correlation(),
            "energy_share": levels.energy / mixture_energy if mixture_energy > 0 else float("nan"),
        }

    @property
    def nbytes(self) -> int:
        """Bytes of carried samples and filter state (the loudness powers excluded)."""
        return self.silence.nbytes + self.loudness.nbytes + self.true_peak.nbytes


class QualityAccumulator:
    """``measure_track``'s quality numbers (per stem and per track) from consecutive blocks.

    Args:
        stems: the model's stem names, in the order of the separator's dict (the
            residual is subtracted in this order, as ``add_residual`` does, so the
            float32 rounding is the same).
        sample_rate: in Hz.
        residual_stem: the stem that takes ``mixture - sum(stems)`` in its
            per-stem columns (``sum_to_mixture``); ``None``: the stems as given.

    Raises:
        ValueError: no stem, a repeated name, ``residual_stem`` not a stem, or a
            sample rate that is not positive or too low for 100 ms gating steps.
    """

    def __init__(
        self,
        stems: Sequence[str],
        sample_rate: int,
        *,
        residual_stem: str | None = None,
    ) -> None:
        self.stems = tuple(stems)
        if not self.stems:
            raise ValueError("QualityAccumulator needs at least one stem")
        if len(set(self.stems)) != len(self.stems):
            raise ValueError(f"stem names must be unique, got {list(self.stems)}")
        if residual_stem is not None and residual_stem not in self.stems:
            raise ValueError(f"residual_stem {residual_stem!r} is not one of the stems {list(self.stems)}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self.residual_stem = residual_stem
        self._channels: int | None = None
        self._mixture_energy = 0.0
        self._residual_energy = 0.0  # of mixture - sum(model stems), float64
        self._per_stem = {name: StemAccumulator(sample_rate) for name in self.stems}
        self._bleed = BleedAccumulator(len(self.stems))

    def push(self, mixture: Any, stems: Mapping[str, Any]) -> None:
        """Add the next contiguous block of the track.

        Args:
            mixture: ``[channels, n]`` (float32 from the decoder; numpy or torch),
                any ``n >= 0``, varying between calls; the channels never change.
            stems: every stem name -> the model's own stem (before any residual),
                each the mixture's shape.

        Raises:
            ValueError: naming the array: not ``[channels, n]``, NaN or inf samples,
                a shape unlike the mixture's or the earlier blocks', a missing or an unknown stem.
        """
        mix = _as_block(mixture, "mixture")
        if self._channels is not None and mix.shape[0] != self._channels:
            raise ValueError(f"mixture has {mix.shape[0]} channels, earlier blocks had {self._channels}")
        unknown = [name for name in stems if name not in self._per_stem]
        missing = [name for name in self.stems if name not in stems]
        if unknown or missing:
            raise ValueError(f"stems must be exactly {list(self.stems)}: missing {missing}, unknown {unknown}")
        model = {}
        for name in self.stems:
            audio = _as_block(stems[name], f"stems[{name!r}]")
            if audio.shape != mix.shape:
                raise ValueError(f"stem {name!r} {audio.shape} and mixture {mix.shape} must have the same shape")
            model[name] = audio
        self._channels = mix.shape[0]
        self._push_checked(mix, model)

    def _push_checked(self, mix: np.ndarray, model: dict[str, np.ndarray]) -> None:
        """Accumulate a block whose arrays :meth:`push` checked."""
        if mix.shape[1] == 0:
            return
        residual = mix.astype(np.float64)  # track_quality's residual: float64
        for audio in model.values():
            residual -= audio
        self._residual_energy += energy(residual)
        self._mixture_energy += energy(mix)
        self._bleed.push(np.stack([np.asarray(a, dtype=np.float32) for a in model.values()]))
        recorded = model
        if self.residual_stem is not None:
            # exactly add_residual's float32 operations, in the same order
            residual32 = mix.astype(np.float32, copy=True)
            for audio in model.values():
                residual32 -= audio
            recorded = {
                **model,
                self.residual_stem: model[self.residual_stem] + residual32,
            }
        for name, audio in recorded.items():
            self._per_stem[name].push(audio)

    @property
    def samples(self) -> int:
        """Samples per channel pushed so far."""
        return self._per_stem[self.stems[0]].levels.samples

    def result(self) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        """``(stem_quality per stem, track_quality)`` of the samples pushed so far.

        The values ``measure_track`` computes on the whole arrays: ``track_quality``
        (``residual_db``, ``bleed_ratio_<stem>``) on the model's stems, ``stem_quality``
        on each stem with the residual added to ``residual_stem``. Pure: more
        blocks may be pushed afterwards.

        Raises:
            ValueError: no sample pushed yet (the whole-array measures refuse an empty signal too).
        """
        if self.samples == 0:
            raise ValueError("mixture is empty: no sample was pushed to the QualityAccumulator")
        mix_energy = self._mixture_energy
        per_stem = {name: self._per_stem[name].result(mix_energy) for name in self.stems}
        residual_db = _db(self._residual_energy / mix_energy, power=True) if mix_energy > 0 else float("nan")
        track = {"residual_db": residual_db}
        track.update({f"bleed_ratio_{name}": value for name, value in zip(self.stems, self._bleed.ratios())})
        return per_stem, track

    def held_nbytes(self) -> dict[str, int]:
        """What the accumulator holds, in bytes.

        ``history``: carried samples and filter states (bounded: no more than a
        few thousand samples per signal and channel whatever the track's
        length); ``block_powers``: the loudness gating powers, 8 bytes per stem
        per 100 ms of track. Running sums (a few numbers each) are not counted.
        """
        history = self._bleed.nbytes + sum(s.nbytes for s in self._per_stem.values())
        powers = sum(s.loudness.powers_nbytes for s in self._per_stem.values())
        return {"history": history, "block_powers": powers}


def measure_blocks(
    blocks: Iterable[tuple[Any, Mapping[str, Any]]],
    stems: Sequence[str],
    sample_rate: int,
    *,
    residual_stem: str | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Push every ``(mixture, stems)`` block of ``blocks`` into a :class:`QualityAccumulator` and return its result."""
    accumulator = QualityAccumulator(stems, sample_rate, residual_stem=residual_stem)
    for mixture, block_stems in blocks:
        accumulator.push(mixture, block_stems)
    return accumulator.result()


def _as_block(x: Any, name: str) -> np.ndarray:
    """:func:`~stemflow.measures.signals.as_signal`, but a ``[channels, 0]`` block is allowed."""
    shape = getattr(x, "shape", None)
    if shape is not None and len(shape) == 2 and shape[0] > 0 and shape[1] == 0:
        return np.zeros((shape[0], 0), dtype=np.float32)
    return as_signal(x, name)
