"""Encoding: float32 stems to file bytes or files, with an explicit clipping policy.

Formats (:data:`stemflow.audio.formats.AudioFormat`): FLAC and AIFF 16/24-bit,
WAV 16/24-bit PCM or 32-bit float, and the lossy MP3, Ogg Vorbis, Opus (in Ogg)
and AAC (M4A) with a bitrate (:data:`stemflow.audio.formats.LOSSY_CODECS`).
:func:`encode` returns the bytes and an :class:`EncodeResult`; :func:`encode_audio`
only the bytes; :func:`save_audio` writes a path atomically
(:func:`stemflow.files.write_file_atomic`) or a binary file object, taking the
format from the path's extension.

Lossy formats go through ffmpeg with ``-b:a <bitrate_kbps>k`` (the codec's
default when none is asked); MP3 and Ogg Vorbis without a bitrate are written
by libsndfile when it has them (MP3 at 320 kb/s, Vorbis at its default
quality), so they need no ffmpeg. Opus always runs at 48 kHz: other rates are
resampled first (soxr, :func:`stemflow.audio.resample.resample`) and the result
says so (``EncodeResult.sample_rate``).

The clipping policy is explicit (:data:`ClipPolicy`): float WAV is never
altered under ``"none"``; every other format saturates at full scale and
:attr:`EncodeResult.clipped_samples` says how many samples that touched (a
warning is logged under ``"none"``). ``"clamp"`` clamps to [-1, 1] for float WAV
too, and for the other formats gives the same samples as ``"none"``, without the
warning; ``"rescale"`` scales the whole signal down to a peak of
:data:`RESCALE_PEAK` when it would otherwise clip, and records the gain.

Integer PCM is quantised here by :func:`quantise_pcm` (``rint(x * 2**(bits-1))``,
saturated to the integer range) rather than by libsndfile, so the count is
exact. The block-by-block writer (:mod:`stemflow.audio.stream_encode`) shares
every step with :func:`encode`: the checks (:func:`check_request`), the
clipping (:func:`limit_samples`), the choice of libsndfile or ffmpeg and its
arguments (:func:`lossy_route`) and the libsndfile sink
(:class:`stemflow.audio.encode_sinks.SoundFileSink`), so both write the same
files. libsndfile 1.2.2's own float-to-int path saturates the same way
(checked: +1.5 -> 32767, -1.5 -> -32768), it does not wrap. MP3 goes through
ffmpeg when libsndfile lacks it.

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
from stemflow.audio.encode_sinks import SoundFileSink
from stemflow.audio.formats import LOSSY_CODECS, AudioFormat, LossyCodec, format_for_path
from stemflow.audio.resample import resample
from stemflow.errors import AudioEncodeError
from stemflow.files import write_file_atomic

logger = logging.getLogger(__name__)

ClipPolicy = Literal["none", "clamp", "rescale"]
"""What happens to samples beyond full scale: see the module docstring."""

_PCM_SUBTYPES = {16: "PCM_16", 24: "PCM_24"}


def subtype_for(format: AudioFormat, bit_depth: int) -> str:
    """The libsndfile subtype written for ``format`` at ``bit_depth`` (the codec's name for the lossy formats).

    Raises:
        AudioEncodeError: a bit depth the format does not take.
    """
    if format in LOSSY_CODECS:
        return LOSSY_CODECS[format].ffmpeg_codec
    if format == "wav" and bit_depth == 32:
        return "FLOAT"
    if bit_depth not in _PCM_SUBTYPES:
        allowed = "16, 24 or 32 (float)" if format == "wav" else "16 or 24"
        raise AudioEncodeError(f"{format}: bit_depth must be {allowed}, got {bit_depth}")
    return _PCM_SUBTYPES[bit_depth]


def check_request(format: AudioFormat, bit_depth: int, clip: ClipPolicy, bitrate_kbps: int | None,
                  name: str) -> tuple[str, LossyCodec | None]:
    """The subtype (:func:`subtype_for`) and lossy codec (:func:`lossy_codec`) of an encoding request.

    Raises:
        AudioEncodeError: an unknown format or clip policy, a bit depth or bitrate the format does not take.
    """
    if format not in get_args(AudioFormat):
        raise AudioEncodeError(f"{name}: unknown format {format!r}; use one of {', '.join(get_args(AudioFormat))}")
    if clip not in get_args(ClipPolicy):
        raise AudioEncodeError(f"{name}: unknown clip policy {clip!r}; use one of {', '.join(get_args(ClipPolicy))}")
    return subtype_for(format, bit_depth), lossy_codec(format, bitrate_kbps, name)


#: Peak that ``clip="rescale"`` scales an over-full-scale signal down to.
RESCALE_PEAK = 0.999


@dataclass(frozen=True)
class EncodeResult:
    """What :func:`encode` wrote.

    ``clipped_samples`` counts samples (per channel, summed) changed by
    saturation or clamping; ``over_full_scale`` counts samples beyond [-1, 1]
    in the signal as written (non-zero only for float WAV under ``"none"``);
    ``gain`` is the linear factor ``"rescale"`` applied (1.0 otherwise); ``peak``
    is the input's absolute peak; ``sample_rate`` is the file's (Opus: 48000);
    ``bitrate_kbps`` is the lossy bitrate asked of ffmpeg (``None``: lossless, or
    libsndfile's default quality).
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
    bitrate_kbps: int | None = None


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
    bitrate_kbps: int | None = None,
) -> EncodedAudio:
    """Encode ``[channels, samples]`` (or ``[samples]``) float audio to file bytes.

    ``bit_depth`` applies to FLAC/AIFF (16, 24) and WAV (16, 24, 32 = float);
    the lossy formats ignore it and take ``bitrate_kbps`` instead (see the
    module docstring). See the module docstring for the clipping policy.
    Raises :class:`AudioEncodeError` on NaN/inf input, an unsupported
    combination (a bitrate for a lossless format, a bitrate or sample rate the
    codec does not take), or an encoder failure.
    """
    subtype, codec = check_request(format, bit_depth, clip, bitrate_kbps, name)
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
    if codec is not None and codec.resample_to is not None and sample_rate != codec.resample_to:
        rows, sample_rate = resample(rows, sample_rate, codec.resample_to), codec.resample_to
    data, clipped = limit_samples(rows, subtype, clip)
    if clipped and clip == "none":
        logger.warning("%s: %d samples beyond full scale saturated in %s %s", name, clipped, format, subtype)
    if codec is not None:
        route = lossy_route(format, codec, sample_rate, bitrate_kbps, name)
        payload, bitrate_kbps = _write_lossy(data, sample_rate, format, route, name), route.bitrate_kbps
    else:
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
        bitrate_kbps=bitrate_kbps,
    )
    return EncodedAudio(data=payload, result=result)


def lossy_codec(format: AudioFormat, bitrate_kbps: int | None, name: str) -> LossyCodec | None:
    """The codec of a lossy ``format`` (``None`` for lossless ones), after checking the bitrate asked.

    Raises:
        AudioEncodeError: a bitrate for a lossless format, or one the codec does not take (``name`` first).
    """
    codec = LOSSY_CODECS.get(format)
    if bitrate_kbps is None:
        return codec
    if codec is None:
        lossy = ", ".join(LOSSY_CODECS)
        raise AudioEncodeError(f"{name}: a bitrate applies to the lossy formats ({lossy}), not to {format}")
    low, high = codec.kbps_range
    if isinstance(bitrate_kbps, bool) or not isinstance(bitrate_kbps, int) or not low <= bitrate_kbps <= high:
        raise AudioEncodeError(f"{name}: {format} takes a bitrate of {low}-{high} kb/s, got {bitrate_kbps!r}")
    return codec


@dataclass(frozen=True)
class LossyRoute:
    """How a lossy format is written: by libsndfile (``soundfile_subtype`` set) or by ffmpeg (``ffmpeg_args``).

    ``bitrate_kbps``: the bitrate asked of ffmpeg (``None`` for libsndfile's default quality).
    """

    soundfile_subtype: str | None
    ffmpeg_args: tuple[str, ...]
    bitrate_kbps: int | None


def lossy_route(format: AudioFormat, codec: LossyCodec, sample_rate: int, bitrate_kbps: int | None,
                name: str) -> LossyRoute:
    """How ``format`` is encoded at ``sample_rate`` (the codec's rate, after any resampling).

    libsndfile writes MP3/Vorbis when no bitrate is asked and it has the format;
    ffmpeg the rest, with ``-c:a <codec> -b:a <kbps>k -f <container>``.

    Raises:
        AudioEncodeError: a sample rate the codec does not take (``name`` first).
    """
    if codec.sample_rates is not None and sample_rate not in codec.sample_rates:
        rates = ", ".join(str(r) for r in codec.sample_rates)
        raise AudioEncodeError(f"{name}: cannot encode {format} ({codec.ffmpeg_codec}) at {sample_rate} Hz; "
                               f"it takes {rates} Hz")
    subtype = codec.libsndfile_subtype
    if bitrate_kbps is None and subtype is not None and format.upper() in sf.available_formats():
        return LossyRoute(subtype, (), None)
    kbps = bitrate_kbps if bitrate_kbps is not None else codec.default_kbps
    return LossyRoute(None, ("-c:a", codec.ffmpeg_codec, "-b:a", f"{kbps}k", "-f", codec.container), kbps)


def _write_lossy(data: np.ndarray, sample_rate: int, format: AudioFormat, route: LossyRoute, name: str) -> bytes:
    """Encode float32 ``[channels, samples]`` to a lossy format by ``route``."""
    if route.soundfile_subtype is not None:
        return _write_bytes(data, sample_rate, format, route.soundfile_subtype, name)
    return ffmpeg.encode_with_ffmpeg(data.astype(np.float32), sample_rate, output_args=list(route.ffmpeg_args),
                                     name=name)


def limit_samples(rows: np.ndarray, subtype: str, clip: ClipPolicy) -> tuple[np.ndarray, int]:
    """What is written for ``rows`` under the clipping policy, and how many samples it changed.

    Element-wise, so a signal limited block by block gives the same samples and
    (summed) count as limited whole. ``rows`` is not modified.
    """
    if subtype in ("PCM_16", "PCM_24"):  # "none" and "clamp" both saturate at full scale
        return quantise_pcm(rows, 16 if subtype == "PCM_16" else 24)
    if subtype == "FLOAT":
        if clip != "clamp":
            return rows, 0
        return np.clip(rows, -1.0, 1.0), int(np.count_nonzero(np.abs(rows) > 1.0))
    # lossy codecs take floats but cannot represent more than full scale
    return np.clip(rows, -1.0, 1.0), int(np.count_nonzero(np.abs(rows) > 1.0))


def _write_bytes(data: np.ndarray, sample_rate: int, format: AudioFormat, subtype: str, name: str) -> bytes:
    """Write ``[channels, samples]`` (float32 or integer PCM) with libsndfile (:class:`SoundFileSink`)."""
    buffer = io.BytesIO()
    sink = SoundFileSink(buffer, sample_rate, data.shape[0], format=format, subtype=subtype, name=name)
    try:
        sink.write(data)
        sink.close()
    finally:
        sink.abort()
    return buffer.getvalue()


def encode_audio(
    samples: np.ndarray,
    sample_rate: int,
    *,
    format: AudioFormat = "flac",
    bit_depth: Literal[16, 24, 32] = 24,
    clip: ClipPolicy = "none",
    name: str = "<audio>",
    bitrate_kbps: int | None = None,
) -> bytes:
    """The bytes of :func:`encode` (use :func:`encode` to also get the clipping report)."""
    return encode(samples, sample_rate, format=format, bit_depth=bit_depth, clip=clip, name=name,
                  bitrate_kbps=bitrate_kbps).data


def save_audio(
    target: str | os.PathLike[str] | BinaryIO,
    samples: np.ndarray,
    sample_rate: int,
    *,
    format: AudioFormat | None = None,
    bit_depth: Literal[16, 24, 32] = 24,
    clip: ClipPolicy = "none",
    bitrate_kbps: int | None = None,
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
    encoded = encode(samples, sample_rate, format=format, bit_depth=bit_depth, clip=clip, name=label,
                     bitrate_kbps=bitrate_kbps)
    try:
        if is_path:
            write_file_atomic(target, encoded.data)  # type: ignore[arg-type]
        else:
            target.write(encoded.data)  # type: ignore[union-attr]
    except OSError as e:
        raise AudioEncodeError(f"{label}: cannot write: {e}") from e
    return encoded.result
