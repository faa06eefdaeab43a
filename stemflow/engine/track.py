"""One track, start to finish: decode, separate, measure. Shared by the CLI and the Ray actor.

:func:`separate_track` is the only place that chains the audio policy, the
separation engine and the quality measures, so a file separated from the
command line and the same object separated by the catalogue pipeline give the
same stems and the same numbers. Encoding is separate (:func:`encode_stems`)
because the CLI writes files while the pipeline uploads bytes.

**Stems that sum to the mixture** (``sum_to_mixture=True``): a model's stems
rarely add up to its input exactly (Spleeter's are zero above 11 kHz, so
vocals + instrumental lose the mixture's cymbals and air). With the option,
the residual ``mixture - sum(stems)`` is added to the stem that stands for
"everything else" (:func:`residual_stem_for`: ``instrumental``, else
``other``), so the stems sum to the mixture to float rounding. The track's
``residual_db`` is still the model's own residual (measured before), and
:attr:`TrackResult.residual_stem` names the stem that took it. It changes the
output, so a catalogue run that uses it gets another ``model_id``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from stemflow.audio.blocks import DecodeLimits
from stemflow.audio.decode import DecodedAudio, load_audio
from stemflow.audio.encode import ClipPolicy, EncodedAudio, encode
from stemflow.audio.formats import AudioFormat
from stemflow.audio.source import AudioSource
from stemflow.engine.separator import Separator
from stemflow.errors import ConfigError, StemflowError
from stemflow.measures.streaming import measure_blocks

RESIDUAL_STEMS = ("instrumental", "other")
"""Stems that may take the residual under ``sum_to_mixture``, in order of preference."""


@dataclass(frozen=True)
class TrackResult:
    """A separated track.

    ``stems``: stem name -> float32 ``[2, N]`` at ``sample_rate``; ``mixture``:
    the decoded input ``[2, N]``; ``stem_quality``: stem name -> reference-free
    columns (:func:`stemflow.measures.quality.stem_quality`); ``track_quality``: residual
    and bleed columns; ``timings_s``: seconds spent in ``decode``, ``separate``
    and ``quality``.
    """

    name: str
    sample_rate: int
    mixture: np.ndarray
    stems: dict[str, np.ndarray]
    decoded: DecodedAudio
    stem_quality: dict[str, dict[str, float]] = field(default_factory=dict)
    track_quality: dict[str, float] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    residual_stem: str | None = None

    @property
    def duration_s(self) -> float:
        """Length of the track in seconds."""
        return self.mixture.shape[-1] / self.sample_rate

    @property
    def source_sample_rate(self) -> int:
        """The input file's sample rate (before the input policy)."""
        return self.decoded.source_sample_rate

    @property
    def source_channels(self) -> int:
        """The input file's channel count (before the input policy)."""
        return self.decoded.source_channels


def decode_track(separator: Separator, source: AudioSource, *, name: str,
                 limits: DecodeLimits = DecodeLimits()) -> DecodedAudio:
    """Decode ``source`` at the model's rate, stereo (the audio policy of :mod:`stemflow.audio`), within ``limits``."""
    return load_audio(source, sample_rate=separator.sample_rate, channels=2, name=name, limits=limits)


def residual_stem_for(stems: Sequence[str]) -> str:
    """The stem that takes the residual under ``sum_to_mixture``: ``instrumental``, else ``other``.

    Raises:
        ConfigError: the model has neither (e.g. a vocals-only selection).
    """
    for stem in RESIDUAL_STEMS:
        if stem in stems:
            return stem
    raise ConfigError(f"stems {list(stems)} have neither 'instrumental' nor 'other' to take the residual "
                      "(sum_to_mixture needs one)")


def add_residual(mixture: np.ndarray, stems: dict[str, np.ndarray], into: str) -> dict[str, np.ndarray]:
    """``stems`` with ``mixture - sum(stems)`` added to ``stems[into]`` (a new dict; the inputs are not modified).

    ``mixture`` and every stem are float32 ``[2, N]``; afterwards the stems sum to the mixture to float rounding.
    """
    residual = mixture.astype(np.float32, copy=True)
    for audio in stems.values():
        residual -= audio
    return {stem: (audio + residual if stem == into else audio) for stem, audio in stems.items()}


def split_two_stems(stems: dict[str, np.ndarray], target: str) -> dict[str, np.ndarray]:
    """``target`` and ``no_<target>``, the sum of every other stem (demucs' ``--two-stems``).

    Stems are float32 ``[2, N]``; the others are summed in ``stems``' order (zeros when there are none),
    element-wise, so the stems of a block give the block of the whole-track result. Inputs are not modified.
    """
    others = [audio for stem, audio in stems.items() if stem != target]
    rest = np.sum(others, axis=0, dtype=np.float32) if others else np.zeros_like(stems[target])
    return {target: stems[target], f"no_{target}": rest}


def sum_to_mixture_stem(separator: Separator, sum_to_mixture: bool) -> str | None:
    """The stem that takes the residual for ``separator`` (``None`` when the option is off).

    Raises:
        ConfigError: the option is on but the separator returns only some of the model's stems
            (their sum is not meant to be the mixture), or none that can take the residual.
    """
    if not sum_to_mixture:
        return None
    if tuple(separator.stems) != tuple(separator.all_stems):
        raise ConfigError(f"sum_to_mixture needs all of the model's stems {list(separator.all_stems)}, "
                          f"not a selection {list(separator.stems)}")
    return residual_stem_for(separator.stems)


def measure_track(
    decoded: DecodedAudio,
    stems: dict[str, np.ndarray],
    *,
    name: str,
    timings_s: dict[str, float],
    measure_quality: bool = True,
    residual_stem: str | None = None,
) -> TrackResult:
    """Wrap separated stems into a :class:`TrackResult`, with the reference-free quality measures.

    ``residual_stem``: add the residual to this stem (``sum_to_mixture``; see the module docstring).
    """
    started = time.perf_counter()
    per_stem: dict[str, dict[str, float]] = {}
    per_track: dict[str, float] = {}
    if measure_quality:
        # track columns on all the model's stems (the complement of a single-target model included), stem
        # columns after the residual: measured over slices, so the measures' float64 work arrays stay small
        per_stem, per_track = measure_blocks(_slices(decoded.samples, stems, decoded.sample_rate), list(stems),
                                             decoded.sample_rate, residual_stem=residual_stem)
    if residual_stem is not None:
        stems = add_residual(decoded.samples, stems, residual_stem)
    return TrackResult(
        name=name,
        sample_rate=decoded.sample_rate,
        mixture=decoded.samples,
        stems=stems,
        decoded=decoded,
        stem_quality=per_stem,
        track_quality=per_track,
        timings_s={**timings_s, "quality": time.perf_counter() - started},
        residual_stem=residual_stem,
    )


MEASURE_SLICE_S = 10.0
"""Seconds of a track in memory measured at a time (:func:`measure_track`)."""


def _slices(mixture: np.ndarray, stems: dict[str, np.ndarray],
            sample_rate: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """``(mixture, stems)`` views of consecutive :data:`MEASURE_SLICE_S` slices of a whole track."""
    step = max(1, round(MEASURE_SLICE_S * sample_rate))
    for start in range(0, max(mixture.shape[-1], 1), step):
        yield mixture[:, start : start + step], {name: audio[:, start : start + step] for name, audio in stems.items()}


def separate_track(
    separator: Separator,
    source: AudioSource,
    *,
    name: str,
    measure_quality: bool = True,
    progress: Callable[[int, int], None] | None = None,
    sum_to_mixture: bool = False,
    limits: DecodeLimits = DecodeLimits(),
) -> TrackResult:
    """Decode ``source`` at the model's rate (stereo), separate it, and measure the stems.

    Raises :class:`stemflow.errors.AudioDecodeError` for empty, undecodable or
    NaN/inf input (the message names ``name``). ``progress(done_samples,
    total_samples)`` follows the separation. ``sum_to_mixture``: see the module docstring. ``limits``:
    the decoded-bytes limit (:class:`stemflow.audio.blocks.DecodeLimits`).
    """
    residual_stem = sum_to_mixture_stem(separator, sum_to_mixture)
    started = time.perf_counter()
    decoded = decode_track(separator, source, name=name, limits=limits)
    decoded_at = time.perf_counter()
    stems = separator.separate(decoded.samples, decoded.sample_rate, progress=progress)
    timings = {"decode": decoded_at - started, "separate": time.perf_counter() - decoded_at}
    return measure_track(decoded, stems, name=name, timings_s=timings, measure_quality=measure_quality,
                         residual_stem=residual_stem)


def separate_decoded(
    separator: Separator,
    tracks: Sequence[tuple[DecodedAudio, str, float]],
    *,
    measure_quality: bool = True,
    sum_to_mixture: bool = False,
) -> list[TrackResult]:
    """Separate already decoded tracks together: chunks of all of them share the model's batches.

    ``tracks``: ``(decoded, name, decode_seconds)``. Same stems as
    :func:`separate_track` on each (chunks are independent;
    :meth:`Separator.separate_many`), but short tracks and tails no longer run
    part-empty batches. Each track's ``separate`` time is its share (by length)
    of the batches. Decoding apart from separating lets a caller decode the next
    tracks on other threads while the model runs.
    """
    if not tracks:
        return []
    residual_stem = sum_to_mixture_stem(separator, sum_to_mixture)
    started = time.perf_counter()
    separated = separator.separate_many([decoded.samples for decoded, _, _ in tracks], decoded_rate(tracks))
    elapsed = time.perf_counter() - started
    total = sum(decoded.samples.shape[-1] for decoded, _, _ in tracks)
    return [
        measure_track(decoded, stems, name=name, measure_quality=measure_quality, residual_stem=residual_stem,
                      timings_s={"decode": decode_s, "separate": elapsed * decoded.samples.shape[-1] / total})
        for (decoded, name, decode_s), stems in zip(tracks, separated)
    ]


def decoded_rate(tracks: Sequence[tuple[DecodedAudio, str, float]]) -> int:
    """The one sample rate of decoded tracks (they were all decoded for the same model)."""
    rates = {decoded.sample_rate for decoded, _, _ in tracks}
    if len(rates) != 1:
        raise StemflowError(f"tracks decoded at different sample rates {sorted(rates)}")
    return rates.pop()


def encode_stems(
    result: TrackResult,
    *,
    format: AudioFormat = "flac",
    bit_depth: Literal[16, 24, 32] = 24,
    clip: ClipPolicy = "none",
) -> dict[str, EncodedAudio]:
    """Encode every stem of ``result``; the clipping report is in each ``EncodedAudio.result``."""
    return {
        stem: encode(audio, result.sample_rate, format=format, bit_depth=bit_depth, clip=clip,
                     name=f"{result.name}/{stem}")
        for stem, audio in result.stems.items()
    }

