"""One track, start to finish: decode, separate, measure. Shared by the CLI and the Ray actor.

:func:`separate_track` is the only place that chains the audio policy, the
separation engine and the quality measures, so a file separated from the
command line and the same object separated by the catalogue pipeline give the
same stems and the same numbers. Encoding is separate (:func:`encode_stems`)
because the CLI writes files while the pipeline uploads bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from stemflow.audio import AudioFormat, AudioSource, ClipPolicy, DecodedAudio, EncodedAudio, encode, load_audio
from stemflow.errors import StemflowError
from stemflow.quality import stem_quality, track_quality
from stemflow.separate import Separator


@dataclass(frozen=True)
class TrackResult:
    """A separated track.

    ``stems``: stem name -> float32 ``[2, N]`` at ``sample_rate``; ``mixture``:
    the decoded input ``[2, N]``; ``stem_quality``: stem name -> reference-free
    columns (:func:`stemflow.quality.stem_quality`); ``track_quality``: residual
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

    @property
    def duration_s(self) -> float:
        """Length of the track in seconds."""
        return self.mixture.shape[-1] / self.sample_rate


def decode_track(separator: Separator, source: AudioSource, *, name: str) -> DecodedAudio:
    """Decode ``source`` at the model's rate, stereo (the audio policy of :mod:`stemflow.audio`)."""
    return load_audio(source, sample_rate=separator.sample_rate, channels=2, name=name)


def measure_track(
    decoded: DecodedAudio,
    stems: dict[str, np.ndarray],
    *,
    name: str,
    timings_s: dict[str, float],
    measure_quality: bool = True,
) -> TrackResult:
    """Wrap separated stems into a :class:`TrackResult`, with the reference-free quality measures."""
    started = time.perf_counter()
    per_stem: dict[str, dict[str, float]] = {}
    per_track: dict[str, float] = {}
    if measure_quality:
        per_stem = {stem: stem_quality(audio, decoded.sample_rate, decoded.samples) for stem, audio in stems.items()}
        # all stems, the complement of a single-target model included, should add up to the mixture
        per_track = track_quality(decoded.samples, stems)
    return TrackResult(
        name=name,
        sample_rate=decoded.sample_rate,
        mixture=decoded.samples,
        stems=stems,
        decoded=decoded,
        stem_quality=per_stem,
        track_quality=per_track,
        timings_s={**timings_s, "quality": time.perf_counter() - started},
    )


def separate_track(
    separator: Separator,
    source: AudioSource,
    *,
    name: str,
    measure_quality: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> TrackResult:
    """Decode ``source`` at the model's rate (stereo), separate it, and measure the stems.

    Raises :class:`stemflow.errors.AudioDecodeError` for empty, undecodable or
    NaN/inf input (the message names ``name``). ``progress(done_samples,
    total_samples)`` follows the separation.
    """
    started = time.perf_counter()
    decoded = decode_track(separator, source, name=name)
    decoded_at = time.perf_counter()
    stems = separator.separate(decoded.samples, decoded.sample_rate, progress=progress)
    timings = {"decode": decoded_at - started, "separate": time.perf_counter() - decoded_at}
    return measure_track(decoded, stems, name=name, timings_s=timings, measure_quality=measure_quality)


def separate_tracks(
    separator: Separator,
    sources: Sequence[tuple[AudioSource, str]],
    *,
    measure_quality: bool = True,
) -> list[TrackResult | StemflowError]:
    """Several tracks at once: chunks of all of them share the model's batches.

    ``sources``: ``(source, name)`` pairs. Same stems as :func:`separate_track`
    on each (chunks are independent; :meth:`Separator.separate_many`), but a
    short track or a track's tail no longer runs a part-empty batch. A track
    that fails to decode comes back as its error, in its place; the others go
    on. Each track's ``separate`` time is its share (by length) of the batches.
    """
    results: list[TrackResult | StemflowError | None] = [None] * len(sources)
    decoded: list[tuple[int, DecodedAudio, float]] = []
    for index, (source, name) in enumerate(sources):
        started = time.perf_counter()
        try:
            audio = decode_track(separator, source, name=name)
            separator.check_audio(audio.samples, audio.sample_rate)
        except StemflowError as e:
            results[index] = e
            continue
        decoded.append((index, audio, time.perf_counter() - started))
    if decoded:
        started = time.perf_counter()
        separated = separator.separate_many([audio.samples for _, audio, _ in decoded], separator.sample_rate)
        elapsed = time.perf_counter() - started
        total = sum(audio.samples.shape[-1] for _, audio, _ in decoded)
        for (index, audio, decode_s), stems in zip(decoded, separated):
            share = elapsed * audio.samples.shape[-1] / total
            results[index] = measure_track(audio, stems, name=sources[index][1],
                                           timings_s={"decode": decode_s, "separate": share},
                                           measure_quality=measure_quality)
    return [r for r in results if r is not None]


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
