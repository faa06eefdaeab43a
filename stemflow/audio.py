"""Audio I/O: decode any catalogue file to model-ready float32, encode stems.

Decoding: WAV, FLAC, OGG (Vorbis/Opus), MP3 and AIFF are read with soundfile
(libsndfile), which recognises the format by *content*, so a wrong extension is
harmless. MP4-family files (``.m4a``, ``.mp4``, ``.aac``, the multi-stream
``.stem.mp4``) and anything libsndfile rejects go to an ``ffmpeg`` subprocess
(:mod:`stemflow.ffmpeg`). Inputs are a local path, ``bytes`` or a binary file
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
from typing import BinaryIO, Literal, get_args

import numpy as np
import soundfile as sf
import soxr

from stemflow import ffmpeg
from stemflow.errors import AudioDecodeError, AudioEncodeError

logger = logging.getLogger(__name__)

AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
ClipPolicy = Literal["none", "clamp", "rescale"]
AudioFormat = Literal["flac", "wav", "aiff", "mp3", "ogg"]

#: soxr quality used for every rate conversion ("VHQ": very high quality).
RESAMPLE_QUALITY = "VHQ"
#: Peak that ``clip="rescale"`` scales an over-full-scale signal down to.
RESCALE_PEAK = 0.999
#: Stream order of a MUSDB18 / Native Instruments ``.stem.mp4``.
MUSDB_STEM_NAMES: tuple[str, ...] = ("mixture", "drums", "bass", "other", "vocals")

_SOUNDFILE_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc"})
_FFMPEG_EXTENSIONS = frozenset({".m4a", ".mp4", ".aac", ".m4b", ".alac", ".wma", ".webm", ".mka"})
#: Lower-case extensions :func:`load_audio` reads (for enumerating folders).
SUPPORTED_EXTENSIONS: frozenset[str] = _SOUNDFILE_EXTENSIONS | _FFMPEG_EXTENSIONS

_EXTENSION_FORMATS: dict[str, AudioFormat] = {
    ".flac": "flac", ".wav": "wav", ".wave": "wav", ".aiff": "aiff", ".aif": "aiff",
    ".mp3": "mp3", ".ogg": "ogg", ".oga": "ogg",
}  # fmt: skip
_PCM_SUBTYPES = {16: "PCM_16", 24: "PCM_24"}
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
class EncodeResult:
    """What :func:`encode` wrote.

    ``clipped_samples`` counts samples (per channel, summed) changed by
    saturation or clamping; ``over_full_scale`` counts samples beyond [-1, 1]
    in the signal as written (non-zero only for float WAV under ``"none"``);
    ``gain`` is the linear factor ``"rescale"`` applied (1.0 otherwise); ``peak``
    is the input's absolute peak.
    """

    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int
    clipped_samples: int
    over_full_scale: int
    gain: float
    peak: float
    num_bytes: int


@dataclass(frozen=True)
class EncodedAudio:
    """Encoded file bytes plus the :class:`EncodeResult` describing them."""

    data: bytes
    result: EncodeResult


# --------------------------------------------------------------------------- sources


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
    suffix = _suffix(path.name if path is not None else label)
    return _Source(label=label, path=path, data=data, suffix=suffix)


def _suffix(file_name: str) -> str:
    return Path(file_name).suffix.lower()


@contextmanager
def _local_path(source: _Source) -> Iterator[Path]:
    """A local path holding the source's bytes (a temporary file for bytes inputs)."""
    if source.path is not None:
        yield source.path
        return
    with tempfile.TemporaryDirectory(prefix="stemflow-audio-") as folder:
        temp_path = Path(folder) / f"input{source.suffix if source.suffix in SUPPORTED_EXTENSIONS else ''}"
        temp_path.write_bytes(source.data or b"")
        yield temp_path


# --------------------------------------------------------------------------- decoding


def probe(source: AudioSource, *, name: str | None = None) -> AudioInfo:
    """Describe a file (rate, channels, length, format) without decoding its samples."""
    src = _read_source(source, name)
    if src.suffix not in _FFMPEG_EXTENSIONS:
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
    if stream is None and src.suffix not in _FFMPEG_EXTENSIONS and not _is_mp3_impostor(src):
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


# --------------------------------------------------------------------------- conversion


def resampled_length(frames: int, from_rate: int, to_rate: int) -> int:
    """Number of samples :func:`resample` returns: ``floor(frames * to / from + 1/2)``."""
    return (2 * frames * to_rate + from_rate) // (2 * from_rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Convert ``[channels, samples]`` (or ``[samples]``) float audio to another rate with soxr.

    Quality is :data:`RESAMPLE_QUALITY` (``"VHQ"``, linear phase). The output has
    exactly :func:`resampled_length` samples and the input's number of dimensions;
    the input is not modified.
    """
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if samples.ndim not in (1, 2):
        raise ValueError(f"expected [samples] or [channels, samples], got shape {samples.shape}")
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=True)
    length = resampled_length(samples.shape[-1], from_rate, to_rate)
    rows = np.atleast_2d(samples)
    out = np.zeros((rows.shape[0], length), dtype=np.float32)
    for channel, row in enumerate(rows):
        converted = soxr.resample(np.ascontiguousarray(row, dtype=np.float32), from_rate, to_rate, RESAMPLE_QUALITY)
        usable = min(length, converted.shape[0])
        out[channel, :usable] = converted[:usable]
    return out[0] if samples.ndim == 1 else out


def to_stereo(samples: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Make ``[channels, samples]`` audio stereo: mono duplicated, >2 channels keep the first two.

    Returns the ``[2, samples]`` array and a note saying what changed. Stereo
    input comes back as is (same array, note ``None``); otherwise the result is
    a new array. A 1-D input counts as mono.
    """
    rows = np.atleast_2d(samples)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"expected [channels, samples], got shape {samples.shape}")
    channels = rows.shape[0]
    if channels == 2:
        return rows, None
    if channels == 1:
        return np.repeat(rows, 2, axis=0), "mono duplicated to stereo"
    return rows[:2], f"kept the first two of {channels} channels"


# --------------------------------------------------------------------------- encoding


def _subtype(format: AudioFormat, bit_depth: int) -> str:
    if format in ("mp3", "ogg"):
        return "MPEG_LAYER_III" if format == "mp3" else "VORBIS"
    if format == "wav" and bit_depth == 32:
        return "FLOAT"
    if bit_depth not in _PCM_SUBTYPES:
        allowed = "16, 24 or 32 (float)" if format == "wav" else "16 or 24"
        raise AudioEncodeError(f"{format}: bit_depth must be {allowed}, got {bit_depth}")
    return _PCM_SUBTYPES[bit_depth]


def _quantise(samples: np.ndarray, bit_depth: int) -> tuple[np.ndarray, int]:
    """Float -> saturated integer PCM (int16, or int32 holding 24 bits in its top bytes)."""
    scale = float(2 ** (bit_depth - 1))
    scaled = np.rint(samples * np.float32(scale))
    clipped = int(np.count_nonzero(scaled > scale - 1) + np.count_nonzero(scaled < -scale))
    np.clip(scaled, -scale, scale - 1, out=scaled)
    if bit_depth == 16:
        return scaled.astype(np.int16), clipped
    return scaled.astype(np.int32) << 8, clipped


def encode(
    samples: np.ndarray,
    sample_rate: int,
    *,
    format: AudioFormat = "flac",
    bit_depth: Literal[16, 24, 32] = 24,
    clip: ClipPolicy = "none",
    name: str = "<audio>",
) -> EncodedAudio:
    """Encode ``[channels, samples]`` (or ``[samples]``) float audio to file bytes.

    ``bit_depth`` applies to FLAC/AIFF (16, 24) and WAV (16, 24, 32 = float);
    MP3 (highest bitrate) and OGG Vorbis ignore it. See the module docstring
    for the clipping policy. Raises :class:`AudioEncodeError` on NaN/inf input,
    an unsupported combination, or an encoder failure.
    """
    if format not in get_args(AudioFormat):
        raise AudioEncodeError(f"{name}: unknown format {format!r}; use one of {', '.join(get_args(AudioFormat))}")
    if clip not in get_args(ClipPolicy):
        raise AudioEncodeError(f"{name}: unknown clip policy {clip!r}; use one of {', '.join(get_args(ClipPolicy))}")
    subtype = _subtype(format, bit_depth)
    rows = np.atleast_2d(np.asarray(samples, dtype=np.float32))
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
        raise AudioEncodeError(f"{name}: expected non-empty [channels, samples], got shape {np.shape(samples)}")
    if not np.isfinite(rows).all():
        raise AudioEncodeError(f"{name}: the samples contain NaN or inf")
    peak = float(np.max(np.abs(rows)))
    gain = 1.0
    if clip == "rescale" and peak > RESCALE_PEAK:
        gain = RESCALE_PEAK / peak
        rows = rows * np.float32(gain)
    if subtype in ("PCM_16", "PCM_24"):  # "none" and "clamp" both saturate at full scale
        data, clipped = _quantise(rows, 16 if subtype == "PCM_16" else 24)
    elif subtype == "FLOAT":
        clipped = int(np.count_nonzero(np.abs(rows) > 1.0)) if clip == "clamp" else 0
        data = np.clip(rows, -1.0, 1.0) if clip == "clamp" else rows
    else:  # lossy codecs take floats but cannot represent more than full scale
        clipped = int(np.count_nonzero(np.abs(rows) > 1.0))
        data = np.clip(rows, -1.0, 1.0)
    if clipped and clip == "none":
        logger.warning("%s: %d samples beyond full scale saturated in %s %s", name, clipped, format, subtype)
    payload = _write_bytes(data, sample_rate, format, subtype, name)
    result = EncodeResult(
        format=format,
        subtype=subtype,
        sample_rate=sample_rate,
        channels=rows.shape[0],
        frames=rows.shape[1],
        clipped_samples=clipped,
        over_full_scale=int(np.count_nonzero(np.abs(data) > 1.0)) if subtype == "FLOAT" else 0,
        gain=gain,
        peak=peak,
        num_bytes=len(payload),
    )
    return EncodedAudio(data=payload, result=result)


def _write_bytes(data: np.ndarray, sample_rate: int, format: AudioFormat, subtype: str, name: str) -> bytes:
    """Write ``[channels, samples]`` (float32 or integer PCM) with libsndfile, ffmpeg for MP3 if needed."""
    if format == "mp3" and "MP3" not in sf.available_formats():
        args = ["-c:a", "libmp3lame", "-b:a", "320k", "-f", "mp3"]
        return ffmpeg.encode_with_ffmpeg(data.astype(np.float32), sample_rate, output_args=args, name=name)
    buffer = io.BytesIO()
    options: dict[str, object] = {}
    if format == "mp3":
        options = {"compression_level": 0.0, "bitrate_mode": "CONSTANT"}
    try:
        sf.write(buffer, data.T, sample_rate, subtype=subtype, format=format.upper(), **options)  # type: ignore[arg-type]
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as e:
        raise AudioEncodeError(f"{name}: cannot encode {format} {subtype} at {sample_rate} Hz: {e}") from e
    return buffer.getvalue()


def encode_audio(
    samples: np.ndarray,
    sample_rate: int,
    *,
    format: AudioFormat = "flac",
    bit_depth: Literal[16, 24, 32] = 24,
    clip: ClipPolicy = "none",
    name: str = "<audio>",
) -> bytes:
    """The bytes of :func:`encode` (use :func:`encode` to also get the clipping report)."""
    return encode(samples, sample_rate, format=format, bit_depth=bit_depth, clip=clip, name=name).data


def save_audio(
    target: str | os.PathLike[str] | BinaryIO,
    samples: np.ndarray,
    sample_rate: int,
    *,
    format: AudioFormat | None = None,
    bit_depth: Literal[16, 24, 32] = 24,
    clip: ClipPolicy = "none",
) -> EncodeResult:
    """Encode ``[channels, samples]`` float audio and write it to a path or binary file object.

    ``format=None`` takes the format from the path's extension (FLAC for file
    objects and unknown extensions). A path is written atomically: a temporary
    file in the same folder, flushed and fsynced, then ``os.replace``.
    """
    is_path = isinstance(target, (str, os.PathLike))
    label = str(target) if is_path else str(getattr(target, "name", "<file object>"))
    if format is None:
        format = _EXTENSION_FORMATS.get(_suffix(label), "flac")
    encoded = encode(samples, sample_rate, format=format, bit_depth=bit_depth, clip=clip, name=label)
    if not is_path:
        try:
            target.write(encoded.data)  # type: ignore[union-attr]
        except OSError as e:
            raise AudioEncodeError(f"{label}: cannot write: {e}") from e
        return encoded.result
    _write_atomically(Path(target), encoded.data)  # type: ignore[arg-type]
    return encoded.result


def _write_atomically(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary sibling of ``path``, then rename it into place."""
    try:
        descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise AudioEncodeError(f"{path}: cannot create a temporary file next to it: {e}") from e
    try:
        os.chmod(temp_name, 0o644)  # mkstemp makes it 0600; stems are meant to be shared
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except OSError as e:
        Path(temp_name).unlink(missing_ok=True)
        raise AudioEncodeError(f"{path}: cannot write: {e}") from e
