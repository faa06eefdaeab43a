"""Decoding: any catalogue file to model-ready float32 ``[channels, samples]``.

WAV, FLAC, OGG (Vorbis/Opus), MP3 and AIFF are read with soundfile
(libsndfile), which recognises the format by *content*, so a wrong extension is
harmless. MP4-family files (``.m4a``, ``.mp4``, ``.aac``, the multi-stream
``.stem.mp4``) and anything libsndfile rejects go to an ``ffmpeg`` subprocess
(:mod:`stemflow.audio.ffmpeg`); which extensions go where is the table of
:mod:`stemflow.audio.formats`. Inputs are a local path, ``bytes`` or a binary
file object (:mod:`stemflow.audio.source`); ``name`` is what error messages show.

Input policy, applied by :func:`load_audio` and recorded in
:attr:`DecodedAudio.notes`:

* empty input (zero bytes, zero frames), undecodable data and NaN/inf samples
  raise :class:`~stemflow.errors.AudioDecodeError` naming the file and the problem;
* mono is duplicated to stereo; more than two channels keep the first two (a
  warning is logged and a note recorded);
* the rate is converted with soxr at quality ``"VHQ"``
  (:data:`stemflow.audio.resample.RESAMPLE_QUALITY`); the output has
  ``floor(N * to / from + 1/2)`` samples.

Decoding is block by block (:mod:`stemflow.audio.blocks`: libsndfile blocks or an
ffmpeg pipe, the decoded-bytes limits checked before and while decoding) and the
policy is applied as the blocks come (:class:`stemflow.audio.resample.StreamPolicy`):
:func:`load_audio` joins the blocks into one array, :func:`open_track` hands
them on one by one (with the exact length first) for the bounded-memory path;
both give the same samples.

:func:`probe` describes a file without decoding it; :func:`load_stems` decodes
every stream of a ``.stem.mp4`` into named stems. Encoding is
:mod:`stemflow.audio.encode`.
"""

from __future__ import annotations

import contextlib
import logging
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile as sf

from stemflow.audio import ffmpeg
from stemflow.audio.blocks import UNKNOWN_FRAMES, BlockStream, DecodeLimits, count_frames, open_blocks
from stemflow.audio.formats import FFMPEG_EXTENSIONS
from stemflow.audio.resample import RESAMPLE_QUALITY, StreamPolicy, resample, resampled_length, to_stereo
from stemflow.audio.source import AudioSource, local_path, resolve_source
from stemflow.errors import AudioDecodeError

logger = logging.getLogger(__name__)


#: Stream order of a MUSDB18 / Native Instruments ``.stem.mp4``.
MUSDB_STEM_NAMES: tuple[str, ...] = ("mixture", "drums", "bass", "other", "vocals")


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, without decoding it.

    ``frames`` is approximate for AAC/MP3, and ``frames``/``duration_s`` are
    ``None`` when the file does not state its length (a FLAC written to a pipe).
    """

    sample_rate: int
    channels: int
    frames: int | None
    duration_s: float | None
    format: str
    subtype: str | None
    streams: int = 1


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded track after the input policy.

    ``samples`` is ``[channels, samples]`` float32 at ``sample_rate``; the
    ``source_*`` fields describe the file before conversion, and ``notes`` says
    in words what was changed (resampling, channel remixing, decoder used).
    """

    samples: np.ndarray
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    notes: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        """Length in seconds at ``sample_rate``."""
        return self.samples.shape[-1] / self.sample_rate


def probe(source: AudioSource, *, name: str | None = None) -> AudioInfo:
    """Describe a file (rate, channels, length, format) without decoding its samples."""
    src = resolve_source(source, name)
    if src.suffix not in FFMPEG_EXTENSIONS:
        try:
            info = sf.info(src.soundfile_input())
            if info.frames >= UNKNOWN_FRAMES:
                raise sf.SoundFileError("the header carries no length (a streamed file)")
            return AudioInfo(info.samplerate, info.channels, info.frames, info.duration, info.format, info.subtype)
        except (sf.SoundFileError, RuntimeError) as e:
            logger.debug("%s: libsndfile cannot probe (%s); trying ffprobe", src.label, e)
    with local_path(src) as path:
        streams = ffmpeg.probe_streams(path, name=src.label)
    first = streams[0]
    return AudioInfo(
        first.sample_rate, first.channels, first.frames, first.duration_s, first.codec.upper(), None, len(streams)
    )


def _check_block(block: np.ndarray, done: int, label: str) -> None:
    """Reject a native block holding NaN/inf (``done``: frames before it, for the message)."""
    finite = np.isfinite(block)
    if not finite.all():
        bad = int(block.size - np.count_nonzero(finite))
        raise AudioDecodeError(f"{label}: {bad} of {block.size} samples are NaN or infinite "
                               f"(frames {done}..{done + block.shape[-1]})")


@dataclass(frozen=True)
class TrackStream:
    """An input opened for streaming at the policy's rate and channels (:func:`open_track`).

    ``num_samples``: the exact length after the policy; ``blocks``: ``[channels, n]``
    float32 blocks covering exactly ``[0, num_samples)``; ``notes``/``source_*`` as in :class:`DecodedAudio`.
    """

    num_samples: int
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    notes: tuple[str, ...]
    blocks: Iterator[np.ndarray]


def _notes(opened: BlockStream, target_rate: int, channels: int, label: str) -> tuple[str, ...]:
    """What the policy changes for this input, in words (a >2-channel input is also logged)."""
    notes = [opened.note] if opened.note else []
    if channels == 2 and opened.channels != 2:
        notes.append("mono duplicated to stereo" if opened.channels == 1
                     else f"kept the first two of {opened.channels} channels")
    elif channels == 1 and opened.channels > 1:
        notes.append(f"averaged {opened.channels} channels to mono")
    if opened.channels > 2:
        logger.warning("%s: %s", label, notes[-1])
    if target_rate != opened.sample_rate:
        notes.append(f"resampled {opened.sample_rate} -> {target_rate} Hz (soxr {RESAMPLE_QUALITY})")
    return tuple(notes)


def _policy_blocks(opened: BlockStream, policy: StreamPolicy, label: str, counted: list[int]) -> Iterator[np.ndarray]:
    """The policy applied to ``opened``'s blocks, each native block checked; ``counted[0]`` ends as the native frames."""
    done = 0
    for block in opened.blocks:
        _check_block(block, done, label)
        done += block.shape[-1]
        counted[0] = done
        out = policy.push(block)
        if out.shape[-1]:
            yield out
    if done == 0:
        raise AudioDecodeError(f"{label}: contains no audio samples (0 frames)")
    tail = policy.flush(opened.channels)
    if tail.shape[-1]:
        yield tail


def _fit(blocks: Iterator[np.ndarray], length: int, channels: int) -> Iterator[np.ndarray]:
    """``blocks`` cut or zero-padded to exactly ``length`` frames in total (as :func:`resample` fits its output)."""
    done = 0
    for block in blocks:
        take = min(block.shape[-1], length - done)
        if take > 0:
            yield block[:, :take]
            done += take
    if done < length:
        yield np.zeros((channels, length - done), dtype=np.float32)


def _check_args(sample_rate: int | None, channels: int) -> None:
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    if sample_rate is not None and operator.index(sample_rate) <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")


@contextlib.contextmanager
def open_track(
    source: AudioSource,
    *,
    sample_rate: int | None = 44100,
    channels: Literal[1, 2] = 2,
    name: str | None = None,
    limits: DecodeLimits = DecodeLimits(),
    stream: int | None = None,
) -> Iterator[TrackStream]:
    """Open a file to stream it through the input policy, knowing its exact length first.

    Where the header's length is not exact (MP3, Ogg, ffmpeg inputs) a first
    decoding pass counts the frames (:func:`stemflow.audio.blocks.count_frames`,
    bounded like the decode). The blocks equal :func:`load_audio`'s samples.
    ``stream``: one audio stream of a multi-stream container (``.stem.mp4``: 0 =
    mixture), read through ffmpeg as :func:`load_audio` reads it; ``None`` = the first.
    """
    _check_args(sample_rate, channels)
    src = resolve_source(source, name)
    frames = count_frames(src, stream=stream, limits=limits)
    with open_blocks(src, stream=stream, limits=limits) as opened:
        target_rate = sample_rate or opened.sample_rate
        length = resampled_length(frames, opened.sample_rate, target_rate)
        policy = StreamPolicy(opened.sample_rate, target_rate, channels)
        blocks = _fit(_policy_blocks(opened, policy, src.label, [0]), length, channels)
        yield TrackStream(length, target_rate, opened.sample_rate, opened.channels,
                          _notes(opened, target_rate, channels, src.label), blocks)


def load_audio(
    source: AudioSource,
    *,
    sample_rate: int | None = 44100,
    channels: Literal[1, 2] = 2,
    stream: int | None = None,
    name: str | None = None,
    limits: DecodeLimits = DecodeLimits(),
) -> DecodedAudio:
    """Decode a file and apply the input policy (channels, rate, validity).

    Args:
        source: local path, ``bytes``, or a binary file object.
        sample_rate: output rate in Hz; ``None`` keeps the file's rate.
        channels: 2 (mono duplicated, >2 channels keep the first two) or 1
            (channels averaged).
        stream: audio stream index in a multi-stream container (``.stem.mp4``:
            0 = mixture); forces the ffmpeg decoder. ``None`` = the first stream.
        name: shown in error messages and logs instead of the path.
        limits: decoded-bytes (and duration) limits, checked before and while
            decoding (:mod:`stemflow.audio.blocks`).

    Returns:
        :class:`DecodedAudio` with ``samples`` of shape ``[channels, samples]`` float32.

    Raises:
        AudioDecodeError: empty, undecodable, zero frames, or NaN/inf samples;
            :class:`~stemflow.audio.blocks.DecodedSizeError` over a limit.
    """
    _check_args(sample_rate, channels)
    src = resolve_source(source, name)
    with open_blocks(src, stream=stream, limits=limits) as opened:
        target_rate = sample_rate or opened.sample_rate
        policy = StreamPolicy(opened.sample_rate, target_rate, channels)
        counted = [0]
        expected = None if opened.frames is None else resampled_length(opened.frames, opened.sample_rate, target_rate)
        samples = _collect(_policy_blocks(opened, policy, src.label, counted), channels, expected)
        notes = _notes(opened, target_rate, channels, src.label)
    length = resampled_length(counted[0], opened.sample_rate, target_rate)
    if samples.shape[-1] != length:
        samples = np.concatenate(list(_fit(iter([samples]), length, channels)), axis=1)
    return DecodedAudio(samples=samples, sample_rate=target_rate, source_sample_rate=opened.sample_rate,
                        source_channels=opened.channels, notes=notes)


def _collect(blocks: Iterator[np.ndarray], channels: int, expected: int | None) -> np.ndarray:
    """Join blocks into one ``[channels, n]`` array, filling a preallocated one when the length is announced."""
    if expected is None or expected <= 0:
        parts = list(blocks)
        return np.concatenate(parts, axis=1) if parts else np.zeros((channels, 0), np.float32)
    out = np.empty((channels, expected), dtype=np.float32)
    done = 0
    extra: list[np.ndarray] = []
    for block in blocks:
        take = max(0, min(block.shape[-1], expected - done))
        out[:, done : done + take] = block[:, :take]
        done += take
        if take < block.shape[-1]:
            extra.append(block[:, take:])
    if extra:  # the header under-stated the length
        return np.concatenate([out, *extra], axis=1)
    return out[:, :done]


def _apply_policy(samples: np.ndarray, source_rate: int, sample_rate: int | None, label: str) -> np.ndarray:
    """The stereo input policy on samples already in memory (one stream of a multi-stream file)."""
    if not np.isfinite(samples).all():
        _check_block(samples, 0, label)
    if samples.shape[-1] == 0 or samples.shape[0] == 0:
        raise AudioDecodeError(f"{label}: contains no audio samples (0 frames)")
    stereo = to_stereo(samples)[0]
    target_rate = sample_rate or source_rate
    out = resample(stereo, source_rate, target_rate) if target_rate != source_rate else stereo
    return np.ascontiguousarray(out, dtype=np.float32)


def load_stems(
    source: AudioSource,
    *,
    sample_rate: int | None = 44100,
    names: Sequence[str] = MUSDB_STEM_NAMES,
    name: str | None = None,
) -> dict[str, np.ndarray]:
    """Decode every stream of a multi-stream file (``.stem.mp4``) into named stereo stems.

    Stream ``i`` is called ``names[i]`` (MUSDB18 order by default: mixture,
    drums, bass, other, vocals). Streams are trimmed to the shortest one so
    the stems align sample for sample.

    Returns:
        ``{name: [2, samples] float32}`` at ``sample_rate`` (``None``: the file's rate).
    """
    src = resolve_source(source, name)
    with local_path(src) as path:
        streams = ffmpeg.probe_streams(path, name=src.label)
        if len(streams) != len(names):
            raise AudioDecodeError(
                f"{src.label}: has {len(streams)} audio streams but {len(names)} stem names were given ({', '.join(names)})"
            )
        decoded = ffmpeg.decode_all_streams(path, streams, name=src.label)
    stems: dict[str, np.ndarray] = {}
    for index, (stem_name, samples, info) in enumerate(zip(names, decoded, streams, strict=True)):
        stems[stem_name] = _apply_policy(samples, info.sample_rate, sample_rate, f"{src.label} (stream {index}, "
                                         f"{stem_name})")
    length = min(s.shape[-1] for s in stems.values())
    return {stem_name: np.ascontiguousarray(s[:, :length]) for stem_name, s in stems.items()}

