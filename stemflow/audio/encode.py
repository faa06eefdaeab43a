"""TODO(regroup): docstring. Split out of stemflow.audio."""

from __future__ import annotations

import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, get_args

import numpy as np
import soundfile as sf

from stemflow.audio import ffmpeg
from stemflow.audio.formats import AudioFormat, format_for_path
from stemflow.errors import AudioEncodeError

logger = logging.getLogger(__name__)

ClipPolicy = Literal["none", "clamp", "rescale"]
"""What happens to samples beyond full scale: see the module docstring."""

_PCM_SUBTYPES = {16: "PCM_16", 24: "PCM_24"}


def _subtype(format: AudioFormat, bit_depth: int) -> str:
    if format in ("mp3", "ogg"):
        return "MPEG_LAYER_III" if format == "mp3" else "VORBIS"
    if format == "wav" and bit_depth == 32:
        return "FLOAT"
    if bit_depth not in _PCM_SUBTYPES:
        allowed = "16, 24 or 32 (float)" if format == "wav" else "16 or 24"
        raise AudioEncodeError(f"{format}: bit_depth must be {allowed}, got {bit_depth}")
    return _PCM_SUBTYPES[bit_depth]


#: Peak that ``clip="rescale"`` scales an over-full-scale signal down to.
RESCALE_PEAK = 0.999


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
        format = format_for_path(label)
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

