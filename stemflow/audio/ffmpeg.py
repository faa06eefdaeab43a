"""The ffmpeg/ffprobe subprocess back end of :mod:`stemflow.audio`.

libsndfile (through soundfile) reads WAV, FLAC, OGG, MP3 and AIFF; everything in
an MP4 container (AAC/ALAC ``.m4a``, ``.mp4``, the multi-stream ``.stem.mp4`` of
MUSDB18) goes through the ``ffmpeg`` binary instead. This module only knows how
to probe a *local file* for its audio streams, decode them to float32 PCM, and
encode float32 PCM with ffmpeg's codecs (MP3 where libsndfile lacks it);
:mod:`stemflow.audio.decode` decides when to call it and turns bytes inputs into
a temporary file first (:func:`stemflow.audio.source.local_path`: an MP4 whose
``moov`` atom sits at the end cannot be read from a pipe).

Commands are argument lists (never ``shell=True``); ffmpeg writes raw
little-endian float32 (``-f f32le``) at the stream's own rate and channel
count, so no resampling or remixing happens here. The binaries are looked up on
``PATH`` when first needed; a missing binary raises
:class:`~stemflow.errors.AudioDecodeError` (or
:class:`~stemflow.errors.AudioEncodeError` when encoding) saying what to install.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stemflow.audio.stderr_tail import StderrTail
from stemflow.errors import AudioDecodeError, AudioEncodeError
from stemflow.tempfiles import temp_dir

logger = logging.getLogger(__name__)


#: Names (or absolute paths) of the binaries; tests point these elsewhere.
FFMPEG_BINARY = "ffmpeg"
FFPROBE_BINARY = "ffprobe"


#: Seconds after which a hung ffmpeg/ffprobe process is killed.
DEFAULT_TIMEOUT_S = 600.0


_INSTALL_HINT = "install ffmpeg (e.g. `apt-get install ffmpeg` or `conda install ffmpeg`)"


@dataclass(frozen=True)
class StreamInfo:
    """One audio stream of a container, as ffprobe reports it.

    ``audio_index`` counts audio streams only (0 = the first audio stream; in a
    MUSDB18 ``.stem.mp4`` that is the mixture). ``frames`` is derived from the
    stream duration (``None`` when the container does not state one, as in a
    streamed FLAC) and is exact for PCM but approximate (to one codec frame) for
    AAC/MP3.
    """

    audio_index: int
    codec: str
    sample_rate: int
    channels: int
    frames: int | None
    duration_s: float | None


def ffmpeg_available() -> bool:
    """Whether both ``ffmpeg`` and ``ffprobe`` can be found."""
    return shutil.which(FFMPEG_BINARY) is not None and shutil.which(FFPROBE_BINARY) is not None


def _binary(name: str, *, purpose: str, error: type[Exception]) -> str:
    """The full path of binary ``name``; raise ``error`` with an install hint if it is not on PATH."""
    found = shutil.which(name)
    if found is None:
        raise error(f"{purpose}: the `{name}` binary was not found on PATH; {_INSTALL_HINT}")
    return found


def binary_path(name: str, label: str) -> str:
    """The full path of ffmpeg/ffprobe for decoding ``label``; :class:`AudioDecodeError` with a hint if missing."""
    return _binary(name, purpose=f"{label}: decoding", error=AudioDecodeError)


def encoder_path(label: str) -> str:
    """The full path of ffmpeg for encoding ``label``; :class:`AudioEncodeError` with a hint if missing."""
    return _binary(FFMPEG_BINARY, purpose=f"{label}: encoding", error=AudioEncodeError)


def check_exit(returncode: int, errors: StderrTail, label: str, *, timed_out_s: float | None) -> None:
    """Raise :class:`AudioDecodeError` for a piped ffmpeg decode that failed or was killed; log its warnings."""
    errors.finish()
    if timed_out_s is not None:
        raise AudioDecodeError(f"{label}: not decodable: ffmpeg gave no data for {timed_out_s:.0f} s (killed)")
    if returncode != 0:
        raise AudioDecodeError(f"{label}: not decodable: ffmpeg failed: {errors.last or f'exit status {returncode}'}")
    if errors.last:  # e.g. a damaged AAC frame that was skipped
        logger.warning("%s: ffmpeg reported %d problem(s), last: %s", label, errors.count, errors.last)


def _run(
    args: list[str], *, purpose: str, error: type[Exception], stdin: bytes | None, timeout_s: float
) -> bytes:
    """Run one ffmpeg/ffprobe command; return its stdout or raise ``error`` with its last message.

    stderr is drained into a bounded tail (:class:`StderrTail`): a damaged input
    can make ffmpeg write a line per frame, which is never held whole.
    """
    tool = Path(args[0]).name
    with StderrTail() as errors:
        try:
            process = subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
                args, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=errors,
            )
        except OSError as e:
            raise error(f"{purpose}: could not start {args[0]}: {e}") from e
        errors.child_started()
        with process:
            try:
                stdout, _ = process.communicate(input=stdin, timeout=timeout_s)
            except subprocess.TimeoutExpired as e:
                process.kill()
                raise error(f"{purpose}: {tool} did not finish within {timeout_s:.0f} s") from e
        errors.finish()
        if process.returncode != 0:
            raise error(f"{purpose}: {tool} failed: {errors.last or f'exit status {process.returncode}'}")
        if errors.last:  # e.g. a damaged AAC frame that was skipped
            logger.warning("%s: %s reported %d problem(s), last: %s", purpose, tool, errors.count, errors.last)
    return stdout


def probe_streams(path: str | Path, *, name: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[StreamInfo]:
    """List the audio streams of a local file with ffprobe.

    Raises :class:`AudioDecodeError` (naming ``name`` or the path) when ffprobe is
    missing, cannot parse the file, or finds no audio stream.
    """
    label = name or str(path)
    ffprobe = _binary(FFPROBE_BINARY, purpose=f"{label}: probing", error=AudioDecodeError)
    args = [ffprobe, "-v", "error", "-of", "json", "-show_streams", "-select_streams", "a", str(path)]
    raw = _run(args, purpose=f"{label}: not decodable", error=AudioDecodeError, stdin=None, timeout_s=timeout_s)
    try:
        entries = json.loads(raw.decode("utf-8", "replace")).get("streams", [])
    except json.JSONDecodeError as e:
        raise AudioDecodeError(f"{label}: ffprobe returned unreadable output") from e
    streams: list[StreamInfo] = []
    for audio_index, entry in enumerate(entries):
        try:
            sample_rate = int(entry["sample_rate"])
            channels = int(entry["channels"])
        except (KeyError, ValueError) as e:
            raise AudioDecodeError(f"{label}: audio stream {audio_index} has no sample rate or channel count") from e
        duration_s = _stream_duration_s(entry)
        streams.append(
            StreamInfo(
                audio_index=audio_index,
                codec=str(entry.get("codec_name", "unknown")),
                sample_rate=sample_rate,
                channels=channels,
                frames=None if duration_s is None else int(round(duration_s * sample_rate)),
                duration_s=duration_s,
            )
        )
    if not streams:
        raise AudioDecodeError(f"{label}: no audio stream found")
    return streams


def _stream_duration_s(entry: dict[str, object]) -> float | None:
    """Duration of one ffprobe stream entry in seconds (``None`` when not stated)."""
    duration = entry.get("duration")
    try:
        return max(0.0, float(duration)) if duration is not None else None  # type: ignore[arg-type]
    except ValueError:
        return None


def decode_stream(
    path: str | Path,
    *,
    audio_index: int = 0,
    channels: int,
    name: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> np.ndarray:
    """Decode one audio stream of a local file to float32 at its native rate.

    Args:
        path: local file ffmpeg can read (the container is detected by content).
        audio_index: which audio stream (0-based, counting audio streams only).
        channels: the stream's channel count, from :func:`probe_streams`.
        name: what error messages call the file (defaults to the path).

    Returns:
        ``[channels, samples]`` float32, C-contiguous, in ffmpeg's channel order.
    """
    label = name or str(path)
    ffmpeg = _binary(FFMPEG_BINARY, purpose=f"{label}: decoding", error=AudioDecodeError)
    args = [
        ffmpeg, "-nostdin", "-v", "error", "-i", str(path),
        "-map", f"0:a:{audio_index}", "-vn", "-sn", "-dn",
        "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1",
    ]  # fmt: skip
    raw = _run(args, purpose=f"{label}: not decodable", error=AudioDecodeError, stdin=None, timeout_s=timeout_s)
    return _planar(np.frombuffer(raw[: len(raw) - len(raw) % 4], dtype="<f4"), channels)


def decode_all_streams(
    path: str | Path,
    streams: list[StreamInfo],
    *,
    name: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[np.ndarray]:
    """Decode several audio streams of a local file in one ffmpeg run (``.stem.mp4``).

    ``streams`` come from :func:`probe_streams`. Each stream is written as raw
    float32 to its own file in a temporary folder, which is read back and removed.

    Returns:
        one ``[channels, samples]`` float32 array per entry of ``streams``, at each stream's native rate.
    """
    label = name or str(path)
    ffmpeg = _binary(FFMPEG_BINARY, purpose=f"{label}: decoding", error=AudioDecodeError)
    with temp_dir("ffmpeg") as folder:
        outputs = [folder / f"stream{info.audio_index}.f32" for info in streams]
        args = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path)]
        for info, output in zip(streams, outputs, strict=True):
            args += ["-map", f"0:a:{info.audio_index}", "-f", "f32le", "-acodec", "pcm_f32le", str(output)]
        _run(args, purpose=f"{label}: not decodable", error=AudioDecodeError, stdin=None, timeout_s=timeout_s)
        decoded = []
        for info, output in zip(streams, outputs, strict=True):
            decoded.append(_planar(np.fromfile(output, dtype="<f4"), info.channels))
    return decoded


def _planar(interleaved: np.ndarray, channels: int) -> np.ndarray:
    """Interleaved float32 PCM -> a writable C-contiguous ``[channels, frames]`` copy (a partial frame dropped)."""
    usable = interleaved.size - interleaved.size % channels
    return np.array(interleaved[:usable].reshape(-1, channels).T, dtype=np.float32, order="C")


def encode_with_ffmpeg(
    samples: np.ndarray,
    sample_rate: int,
    *,
    output_args: list[str],
    name: str = "<audio>",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> bytes:
    """Encode ``[channels, samples]`` float32 with ffmpeg and return the file's bytes.

    ``output_args`` are the codec/container options and must name the
    container, e.g. ``["-c:a", "libmp3lame", "-b:a", "320k", "-f", "mp3"]``.
    The PCM goes in through stdin; the output is a seekable temporary file, so
    ffmpeg can finish headers that need it (the LAME gapless header of MP3, the
    length fields of FLAC and MP4). Failures raise :class:`AudioEncodeError`.
    """
    ffmpeg = _binary(FFMPEG_BINARY, purpose=f"{name}: encoding", error=AudioEncodeError)
    channels = samples.shape[0]
    interleaved = np.ascontiguousarray(samples.T, dtype="<f4").tobytes()
    with temp_dir("ffmpeg") as folder:
        output = folder / "encoded"
        args = [
            ffmpeg, "-nostdin", "-v", "error",
            "-f", "f32le", "-ar", str(sample_rate), "-ac", str(channels), "-i", "pipe:0",
            *output_args, str(output),
        ]  # fmt: skip
        # -nostdin only stops ffmpeg reading keyboard commands; pipe:0 still carries the PCM.
        _run(args, purpose=f"{name}: encoding failed", error=AudioEncodeError, stdin=interleaved, timeout_s=timeout_s)
        return output.read_bytes()

