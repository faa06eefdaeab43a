"""Encoding: float32 stems to file bytes or files, with an explicit clipping policy.

Formats (:data:`stemflow.audio.formats.AudioFormat`): FLAC and AIFF 16/24-bit,
WAV 16/24-bit PCM or 32-bit float, MP3 and OGG Vorbis. :func:`encode` returns
the bytes and an :class:`EncodeResult`; :func:`encode_audio` only the bytes;
:func:`save_audio` writes a path atomically (:func:`stemflow.files.write_file_atomic`)
or a binary file object, taking the format from the path's extension.

The clipping policy is explicit (:data:`ClipPolicy`): float WAV is never
altered under ``"none"``; every other format saturates at full scale and
:attr:`EncodeResult.clipped_samples` says how many samples that touched (a
warning is logged under ``"none"``). ``"clamp"`` clamps to [-1, 1] for float WAV
too, and for the other formats gives the same samples as ``"none"``, without the
warning; ``"rescale"`` scales the whole signal down to a peak of
:data:`RESCALE_PEAK` when it would otherwise clip, and records the gain.

Integer PCM is quantised here by :func:`quantise_pcm` (``rint(x * 2**(bits-1))``,
saturated to the integer range) rather than by libsndfile, so the count is
exact; the streaming writer (:mod:`stemflow.engine.streaming`) uses the same
function, so both paths write the same bytes. libsndfile 1.2.2's own
float-to-int path saturates the same way (checked: +1.5 -> 32767, -1.5 ->
-32768), it does not wrap. MP3 goes through ffmpeg when libsndfile lacks it.

All arrays are ``[channels, samples]`` float32.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from typing import BinaryIO, Literal, get_args

import numpy as np
import soundfile as sf

from stemflow.audio import ffmpeg
from stemflow.audio.formats import AudioFormat, format_for_path
from stemflow.errors import AudioEncodeError
from stemflow.files import write_file_atomic

logger = logging.getLogger(__name__)

ClipPolicy = Literal["none", "clamp", "rescale"]
"""What happens to samples beyond full scale: see the module docstring."""

_PCM_SUBTYPES = {16: "PCM_16", 24: "PCM_24"}


def _subtype(format: AudioFormat, bit_depth: int) -> str:
    """The libsndfile subtype written for ``format`` at ``bit_depth`` (ignored by the lossy formats)."""
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


def quantise_pcm(samples: np.ndarray, bit_depth: Literal[16, 24]) -> tuple[np.ndarray, int]:
    """Float samples -> saturated integer PCM, and how many samples saturation changed.

    Each sample becomes ``rint(x * 2**(bit_depth - 1))`` clipped to the integer
    range. Returns int16 for 16 bits, int32 holding the 24 bits in its top three
    bytes for 24 (what libsndfile's ``PCM_24`` takes), in the input's shape; the
    input is not modified.
    """
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
    data, clipped = _limit(rows, subtype, clip)
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


def _limit(rows: np.ndarray, subtype: str, clip: ClipPolicy) -> tuple[np.ndarray, int]:
    """What is written for ``rows`` under the clipping policy, and how many samples it changed."""
    if subtype in ("PCM_16", "PCM_24"):  # "none" and "clamp" both saturate at full scale
        return quantise_pcm(rows, 16 if subtype == "PCM_16" else 24)
    if subtype == "FLOAT":
        if clip != "clamp":
            return rows, 0
        return np.clip(rows, -1.0, 1.0), int(np.count_nonzero(np.abs(rows) > 1.0))
    # lossy codecs take floats but cannot represent more than full scale
    return np.clip(rows, -1.0, 1.0), int(np.count_nonzero(np.abs(rows) > 1.0))


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
    objects and unknown extensions). A path is written atomically
    (:func:`stemflow.files.write_file_atomic`: a temporary sibling, fsynced, then
    renamed), so a failure leaves any existing file untouched.
    """
    is_path = isinstance(target, (str, os.PathLike))
    label = str(target) if is_path else str(getattr(target, "name", "<file object>"))
    if format is None:
        format = format_for_path(label)
    encoded = encode(samples, sample_rate, format=format, bit_depth=bit_depth, clip=clip, name=label)
    try:
        if is_path:
            write_file_atomic(target, encoded.data)  # type: ignore[arg-type]
        else:
            target.write(encoded.data)  # type: ignore[union-attr]
    except OSError as e:
        raise AudioEncodeError(f"{label}: cannot write: {e}") from e
    return encoded.result
