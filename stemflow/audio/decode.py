"""Audio I/O: decode any catalogue file to model-ready float32, encode stems.

Decoding: WAV, FLAC, OGG (Vorbis/Opus), MP3 and AIFF are read with soundfile
(libsndfile), which recognises the format by *content*, so a wrong extension is
harmless. MP4-family files (``.m4a``, ``.mp4``, ``.aac``, the multi-stream
``.stem.mp4``) and anything libsndfile rejects go to an ``ffmpeg`` subprocess
(:mod:`stemflow.audio.ffmpeg`). Inputs are a local path, ``bytes`` or a binary file
object (what fsspec hands the pipeline); ``name`` is what error messages show.

Input policy, applied by :func:`load_audio` and recorded in
:attr:`DecodedAudio.notes`:

* empty input (zero bytes, zero frames), undecodable data and NaN/inf samples
  raise :class:`~stemflow.errors.AudioDecodeError` naming the file and the problem;
* mono is duplicated to stereo; more than two channels keep the first two (a
  warning is logged and a note recorded);
* the rate is converted with soxr at quality ``"VHQ"`` (:data:`RESAMPLE_QUALITY`);
  the output has ``floor(N * to / from + 1/2)`` samples.

Encoding (:func:`encode`, :func:`encode_audio`, :func:`save_audio`): FLAC and
AIFF 16/24-bit, WAV 16/24-bit PCM or 32-bit float, MP3 and OGG Vorbis. The
clipping policy is explicit (:data:`ClipPolicy`): float WAV is never altered
under ``"none"``; every other format saturates at full scale and :attr:`EncodeResult.clipped_samples` says how
many samples that touched (a warning is logged under ``"none"``). ``"clamp"``
clamps to [-1, 1] for float WAV too, and for the other formats gives the same
samples as ``"none"``, without the warning;
``"rescale"`` scales the whole signal down to a peak of :data:`RESCALE_PEAK` when
it would otherwise clip, and records the gain. Integer PCM is quantised here
(``rint(x * 2**(bits-1))``, saturated to the integer range) rather than by
libsndfile, so the count is exact; libsndfile 1.2.2's own float-to-int path
saturates the same way (checked: +1.5 -> 32767, -1.5 -> -32768), it does not wrap.

All arrays are ``[channels, samples]`` float32.
"""

from __future__ import annotations

import io
import logging
import operator
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import soundfile as sf

from stemflow.audio import ffmpeg
from stemflow.audio.formats import DECODABLE_EXTENSIONS, FFMPEG_EXTENSIONS, file_suffix
from stemflow.audio.resample import RESAMPLE_QUALITY, resample, to_stereo
from stemflow.errors import AudioDecodeError

logger = logging.getLogger(__name__)

AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


#: Stream order of a MUSDB18 / Native Instruments ``.stem.mp4``.
MUSDB_STEM_NAMES: tuple[str, ...] = ("mixture", "drums", "bass", "other", "vocals")


# libsndfile reports SF_COUNT_MAX frames when a stream's header carries no length.
_UNKNOWN_FRAMES = 1 << 62


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


@dataclass(frozen=True)
class _Source:
    label: str
    path: Path | None
    data: bytes | None
    suffix: str


def _read_source(source: AudioSource, name: str | None) -> _Source:
    """Normalise a path / bytes / file object; raise on missing or zero-byte input."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "<bytes>"
        path = None
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(path)
        try:
            size = path.stat().st_size
        except OSError as e:
            raise AudioDecodeError(f"{label}: cannot read the file: {e.strerror or e}") from e
        if size == 0:
            raise AudioDecodeError(f"{label}: the file is empty (0 bytes)")
        data = None
    elif hasattr(source, "read"):
        label = name or str(getattr(source, "name", "<file object>"))
        try:
            data = source.read()
        except OSError as e:
            raise AudioDecodeError(f"{label}: cannot read the file object: {e}") from e
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"{label}: the file object must be opened in binary mode")
        data = bytes(data)
        path = None
    else:
        raise TypeError(f"expected a path, bytes or a binary file object, got {type(source).__name__}")
    if data is not None and len(data) == 0:
        raise AudioDecodeError(f"{label}: the input is empty (0 bytes)")
    suffix = file_suffix(path.name if path is not None else label)
    return _Source(label=label, path=path, data=data, suffix=suffix)


@contextmanager
def _local_path(source: _Source) -> Iterator[Path]:
    """A local path holding the source's bytes (a temporary file for bytes inputs)."""
    if source.path is not None:
        yield source.path
        return
    with tempfile.TemporaryDirectory(prefix="stemflow-audio-") as folder:
        temp_path = Path(folder) / f"input{source.suffix if source.suffix in DECODABLE_EXTENSIONS else ''}"
        temp_path.write_bytes(source.data or b"")
        yield temp_path


def probe(source: AudioSource, *, name: str | None = None) -> AudioInfo:
    """Describe a file (rate, channels, length, format) without decoding its samples."""
    src = _read_source(source, name)
    if src.suffix not in FFMPEG_EXTENSIONS:
        try:
            info = sf.info(src.path if src.path is not None else io.BytesIO(src.data))  # type: ignore[arg-type]
            if info.frames >= _UNKNOWN_FRAMES:
                raise sf.SoundFileError("the header carries no length (a streamed file)")
            return AudioInfo(info.samplerate, info.channels, info.frames, info.duration, info.format, info.subtype)
        except (sf.SoundFileError, RuntimeError) as e:
            logger.debug("%s: libsndfile cannot probe (%s); trying ffprobe", src.label, e)
    with _local_path(src) as path:
        streams = ffmpeg.probe_streams(path, name=src.label)
    first = streams[0]
    return AudioInfo(
        first.sample_rate, first.channels, first.frames, first.duration_s, first.codec.upper(), None, len(streams)
    )


def _decode_soundfile(src: _Source) -> tuple[np.ndarray, int]:
    """``([channels, samples] float32, rate)`` via libsndfile; raises soundfile's errors."""
    file: Path | io.BytesIO = src.path if src.path is not None else io.BytesIO(src.data)  # type: ignore[arg-type]
    with sf.SoundFile(file) as handle:
        rate = int(handle.samplerate)
        if handle.frames >= _UNKNOWN_FRAMES:  # soundfile cannot read these; ffmpeg can
            raise sf.SoundFileError("the header carries no length (a streamed file)")
        data = handle.read(dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), rate


def _decode_ffmpeg(src: _Source, stream: int) -> tuple[np.ndarray, int]:
    """``([channels, samples] float32, rate)`` of audio stream ``stream`` via ffmpeg."""
    with _local_path(src) as path:
        streams = ffmpeg.probe_streams(path, name=src.label)
        if not 0 <= stream < len(streams):
            raise AudioDecodeError(f"{src.label}: has {len(streams)} audio stream(s); stream {stream} does not exist")
        info = streams[stream]
        samples = ffmpeg.decode_stream(path, audio_index=stream, channels=info.channels, name=src.label)
    return samples, info.sample_rate


def _is_mp3_impostor(src: _Source) -> bool:
    """A ``.mp3`` whose first bytes are neither an ID3 tag nor an MPEG frame sync.

    libsndfile hands such files to libmpg123, which then writes resync notes to
    stderr and fails with a misleading message; ffmpeg gives a clear answer.
    """
    if src.suffix != ".mp3":
        return False
    if src.data is not None:
        head = src.data[:3]
    else:
        with open(src.path, "rb") as handle:  # type: ignore[arg-type]
            head = handle.read(3)
    frame_sync = len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
    return not (head.startswith(b"ID3") or frame_sync)


def _decode(src: _Source, stream: int | None) -> tuple[np.ndarray, int, str | None]:
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
    src = _read_source(source, name)
    samples, source_rate, decoder_note = _decode(src, stream)
    _check_samples(samples, src.label)
    return _apply_policy(samples, source_rate, sample_rate, channels, src.label, decoder_note)


def _apply_policy(
    samples: np.ndarray, source_rate: int, sample_rate: int | None, channels: int, label: str, note: str | None
) -> DecodedAudio:
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
    src = _read_source(source, name)
    with _local_path(src) as path:
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

