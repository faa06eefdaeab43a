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

:func:`probe` describes a file without decoding it; :func:`load_stems` decodes
every stream of a ``.stem.mp4`` into named stems. Encoding is
:mod:`stemflow.audio.encode`.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile as sf

from stemflow.audio import ffmpeg
from stemflow.audio.formats import FFMPEG_EXTENSIONS
from stemflow.audio.resample import RESAMPLE_QUALITY, resample, to_stereo
from stemflow.audio.source import AudioSource, ResolvedSource, local_path, resolve_source
from stemflow.errors import AudioDecodeError

logger = logging.getLogger(__name__)


#: Stream order of a MUSDB18 / Native Instruments ``.stem.mp4``.
MUSDB_STEM_NAMES: tuple[str, ...] = ("mixture", "drums", "bass", "other", "vocals")


UNKNOWN_FRAMES = 1 << 62
"""libsndfile's frame count (``SF_COUNT_MAX``) for a stream whose header carries no length."""


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


def _decode_soundfile(src: ResolvedSource) -> tuple[np.ndarray, int]:
    """``([channels, samples] float32, rate)`` via libsndfile; raises soundfile's errors."""
    with sf.SoundFile(src.soundfile_input()) as handle:
        rate = int(handle.samplerate)
        if handle.frames >= UNKNOWN_FRAMES:  # soundfile cannot read these; ffmpeg can
            raise sf.SoundFileError("the header carries no length (a streamed file)")
        data = handle.read(dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), rate


def _decode_ffmpeg(src: ResolvedSource, stream: int) -> tuple[np.ndarray, int]:
    """``([channels, samples] float32, rate)`` of audio stream ``stream`` via ffmpeg."""
    with local_path(src) as path:
        streams = ffmpeg.probe_streams(path, name=src.label)
        if not 0 <= stream < len(streams):
            raise AudioDecodeError(f"{src.label}: has {len(streams)} audio stream(s); stream {stream} does not exist")
        info = streams[stream]
        samples = ffmpeg.decode_stream(path, audio_index=stream, channels=info.channels, name=src.label)
    return samples, info.sample_rate


def _is_mp3_impostor(src: ResolvedSource) -> bool:
    """A ``.mp3`` whose first bytes are neither an ID3 tag nor an MPEG frame sync.

    libsndfile hands such files to libmpg123, which then writes resync notes to
    stderr and fails with a misleading message; ffmpeg gives a clear answer.
    """
    if src.suffix != ".mp3":
        return False
    head = src.head(3)
    frame_sync = len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
    return not (head.startswith(b"ID3") or frame_sync)


def _decode(src: ResolvedSource, stream: int | None) -> tuple[np.ndarray, int, str | None]:
    """Decode with libsndfile, falling back to ffmpeg; returns samples, rate, decoder note."""
    if stream is None and src.suffix not in FFMPEG_EXTENSIONS and not _is_mp3_impostor(src):
        try:
            samples, rate = _decode_soundfile(src)
        except (sf.SoundFileError, RuntimeError, ValueError) as e:
            soundfile_error = str(e)
        else:
            return samples, rate, None
        if not ffmpeg.ffmpeg_available():
            raise AudioDecodeError(
                f"{src.label}: not decodable by libsndfile ({soundfile_error}), and ffmpeg is not installed to try it"
            )
        try:
            samples, rate = _decode_ffmpeg(src, 0)
        except AudioDecodeError as e:
            raise AudioDecodeError(f"{e} (libsndfile: {soundfile_error})") from e
        return samples, rate, "decoded with ffmpeg (libsndfile could not read it)"
    samples, rate = _decode_ffmpeg(src, stream or 0)
    return samples, rate, f"decoded audio stream {stream or 0} with ffmpeg"


def _check_samples(samples: np.ndarray, label: str) -> None:
    """Reject decoded audio that has no frames or holds NaN/inf."""
    if samples.shape[-1] == 0 or samples.shape[0] == 0:
        raise AudioDecodeError(f"{label}: contains no audio samples (0 frames)")
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(samples.size - np.count_nonzero(finite))
        raise AudioDecodeError(f"{label}: {bad} of {samples.size} samples are NaN or infinite")


def load_audio(
    source: AudioSource,
    *,
    sample_rate: int | None = 44100,
    channels: Literal[1, 2] = 2,
    stream: int | None = None,
    name: str | None = None,
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

    Returns:
        :class:`DecodedAudio` with ``samples`` of shape ``[channels, samples]`` float32.

    Raises:
        AudioDecodeError: empty, undecodable, zero frames, or NaN/inf samples.
    """
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    if sample_rate is not None and operator.index(sample_rate) <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    src = resolve_source(source, name)
    samples, source_rate, decoder_note = _decode(src, stream)
    _check_samples(samples, src.label)
    return _apply_policy(samples, source_rate, sample_rate, channels, src.label, decoder_note)


def _apply_policy(
    samples: np.ndarray, source_rate: int, sample_rate: int | None, channels: int, label: str, note: str | None
) -> DecodedAudio:
    """The input policy on decoded samples: channels (1 or 2), then the rate; ``note`` starts the notes."""
    notes: list[str] = [note] if note else []
    source_channels = samples.shape[0]
    if channels == 2:
        samples, channel_note = to_stereo(samples)
    elif source_channels > 1:
        samples, channel_note = samples.mean(axis=0, keepdims=True), f"averaged {source_channels} channels to mono"
    else:
        channel_note = None
    if channel_note:
        notes.append(channel_note)
        if source_channels > 2:
            logger.warning("%s: %s", label, channel_note)
    target_rate = sample_rate or source_rate
    if target_rate != source_rate:
        samples = resample(samples, source_rate, target_rate)
        notes.append(f"resampled {source_rate} -> {target_rate} Hz (soxr {RESAMPLE_QUALITY})")
    return DecodedAudio(
        samples=np.ascontiguousarray(samples, dtype=np.float32),
        sample_rate=target_rate,
        source_sample_rate=source_rate,
        source_channels=source_channels,
        notes=tuple(notes),
    )


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
        _check_samples(samples, f"{src.label} (stream {index}, {stem_name})")
        stems[stem_name] = _apply_policy(samples, info.sample_rate, sample_rate, 2, src.label, None).samples
    length = min(s.shape[-1] for s in stems.values())
    return {stem_name: np.ascontiguousarray(s[:, :length]) for stem_name, s in stems.items()}

