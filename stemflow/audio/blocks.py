"""Streaming decode: a file as blocks of float32 at its own rate, within a decoded-bytes limit.

:func:`open_blocks` is the one place audio is decoded for separation, in memory
or streamed: libsndfile formats (WAV, FLAC, OGG, MP3, AIFF) are read block by
block with :meth:`soundfile.SoundFile.read`; everything else (MP4/AAC/ALAC,
Opus, WebM, a ``.mp3`` impostor, a FLAC whose header has no length) comes from
an ``ffmpeg`` pipe read block by block. Either way no more than one block of
decoded audio is held here, whatever the file's length.

**Limits** (:class:`DecodeLimits`) are in decoded bytes, ``frames x channels x 4``
at the file's own rate and channel count (so 7,000 s of 8-channel 192 kHz audio
is 43 GB, however small the file), plus an optional duration. They are checked
*before* decoding when the header states the length, and again *while*
decoding, block by block, whether or not it does: a file whose header lies or
tells nothing is stopped as soon as its decoded bytes pass the limit, having
held one block. Both raise :class:`DecodedSizeError` naming the file and the limit.

A header length is trusted for planning (:attr:`BlockStream.exact_frames`)
only where libsndfile reads it from a PCM/FLAC header; for MP3, Ogg and
ffmpeg inputs a caller that needs the exact length before separating counts
it with a first decoding pass (:func:`count_frames`), bounded by the same limits.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from stemflow.audio import ffmpeg
from stemflow.audio.formats import FFMPEG_EXTENSIONS
from stemflow.audio.source import ResolvedSource, local_path
from stemflow.audio.stderr_tail import StderrTail
from stemflow.errors import AudioDecodeError

UNKNOWN_FRAMES = 1 << 62
"""libsndfile's frame count (``SF_COUNT_MAX``) for a stream whose header carries no length."""

BLOCK_FRAMES = 1 << 16
"""Frames decoded per block (65,536: 2 MiB of 8-channel float32)."""

DEFAULT_MAX_DECODED_BYTES = 6 << 30
"""Default limit: 6 GiB decoded (about 4.9 hours of 44.1 kHz stereo, 1 hour of 8-channel 48 kHz)."""

EXACT_LENGTH_FORMATS = frozenset({"WAV", "WAVEX", "W64", "RF64", "AIFF", "AIFC", "CAF", "FLAC"})
"""libsndfile major formats whose header states the exact frame count."""


class DecodedSizeError(AudioDecodeError):
    """A file decodes to more than a :class:`DecodeLimits` allows (before or while decoding)."""


@dataclass(frozen=True)
class DecodeLimits:
    """How much one file may decode to: bytes (``frames x channels x 4``) and seconds; ``None``: no limit."""

    max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES
    max_duration_s: float | None = None

    def __post_init__(self) -> None:
        if (self.max_decoded_bytes is not None and self.max_decoded_bytes <= 0) or (
                self.max_duration_s is not None and self.max_duration_s <= 0):
            raise ValueError("max_decoded_bytes and max_duration_s must be > 0 (or None for no limit)")

    def check(self, frames: int, sample_rate: int, channels: int, label: str, *, declared: bool) -> None:
        """Raise :class:`DecodedSizeError` if ``frames`` at this rate and channel count pass a limit.

        ``declared``: the frames come from the header (checked before decoding), not from decoding so far.
        """
        size = frames * channels * 4
        when = "its header declares" if declared else "decoding stopped after"
        if self.max_decoded_bytes is not None and size > self.max_decoded_bytes:
            raise DecodedSizeError(
                f"{label}: {when} {size / 1e9:.2f} GB of decoded audio ({frames / sample_rate:.0f} s x "
                f"{sample_rate} Hz x {channels} channels x 4 bytes), over max_decoded_bytes="
                f"{self.max_decoded_bytes}; not separated (raise the limit to process it)")
        if self.max_duration_s is not None and frames > self.max_duration_s * sample_rate:
            raise DecodedSizeError(
                f"{label}: {when} {frames / sample_rate:.0f} s of audio, over max_duration_s="
                f"{self.max_duration_s:g}; not separated (raise the limit to process it)")


NO_LIMITS = DecodeLimits(max_decoded_bytes=None, max_duration_s=None)
"""No limit at all (reference material the caller already trusts)."""


@dataclass
class BlockStream:
    """An open decoder: the file's rate and channels, its header length, and its native blocks.

    ``frames`` is the header's length (``None`` when not stated); ``exact_frames``
    says whether it can be trusted for planning. ``blocks`` yields float32
    ``[channels, n]`` at ``sample_rate``, checked against the limits as it goes.
    ``note`` says which decoder read the file when it was not the default one.
    """

    sample_rate: int
    channels: int
    frames: int | None
    exact_frames: bool
    blocks: Iterator[np.ndarray]
    note: str | None = None


def _is_mp3_impostor(src: ResolvedSource) -> bool:
    """A ``.mp3`` whose first bytes are neither an ID3 tag nor an MPEG frame sync (ffmpeg explains it better)."""
    if src.suffix != ".mp3":
        return False
    head = src.head(3)
    frame_sync = len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
    return not (head.startswith(b"ID3") or frame_sync)


def _limited(blocks: Iterator[np.ndarray], limits: DecodeLimits, rate: int, channels: int,
             label: str) -> Iterator[np.ndarray]:
    """``blocks``, stopped with :class:`DecodedSizeError` once their total passes a limit."""
    done = 0
    for block in blocks:
        done += block.shape[-1]
        limits.check(done, rate, channels, label, declared=False)
        yield block


def _soundfile_blocks(handle: sf.SoundFile, block_frames: int, label: str) -> Iterator[np.ndarray]:
    """Native ``[channels, n]`` float32 blocks read by libsndfile; a failure mid-file names the file and the frame."""
    done = 0
    while True:
        try:
            data = handle.read(block_frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioDecodeError(f"{label}: decoding failed after {done} frames: {e}") from e
        if data.shape[0] == 0:
            return
        done += data.shape[0]
        yield np.ascontiguousarray(data.T)


def _ffmpeg_blocks(path: str, audio_index: int, channels: int, label: str, block_frames: int,
                   timeout_s: float) -> Iterator[np.ndarray]:
    """Native ``[channels, n]`` float32 blocks of one audio stream, read from an ffmpeg pipe.

    ffmpeg's messages are drained into a bounded tail (:class:`StderrTail`:
    no file, bounded memory however much a damaged input makes it write); a
    watchdog kills ffmpeg when one read waits ``timeout_s`` for data; closing
    the generator early kills it too.
    """
    binary = ffmpeg.binary_path(ffmpeg.FFMPEG_BINARY, label)
    args = [binary, "-nostdin", "-v", "error", "-i", path, "-map", f"0:a:{audio_index}", "-vn", "-sn", "-dn",
            "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    expired = threading.Event()
    with contextlib.ExitStack() as stack:
        errors = stack.enter_context(StderrTail())
        process = stack.enter_context(subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors))
        errors.child_started()
        stack.callback(lambda: process.poll() is None and process.kill())

        def expire() -> None:
            expired.set()
            process.kill()

        frame_bytes = channels * 4
        assert process.stdout is not None
        while True:
            watchdog = threading.Timer(timeout_s, expire)  # a deadline per read: the consumer may be slow
            watchdog.start()
            try:
                raw = process.stdout.read(block_frames * frame_bytes)
            finally:
                watchdog.cancel()
            usable = len(raw) - len(raw) % frame_bytes
            if usable:
                yield np.frombuffer(raw[:usable], dtype="<f4").reshape(-1, channels).T.astype(np.float32, order="C")
            if len(raw) < block_frames * frame_bytes:
                break
        ffmpeg.check_exit(process.wait(), errors, label, timed_out_s=timeout_s if expired.is_set() else None)


@contextlib.contextmanager
def _open_soundfile(src: ResolvedSource, limits: DecodeLimits, block_frames: int) -> Iterator[BlockStream | str]:
    """A :class:`BlockStream` over libsndfile, or why libsndfile cannot read the file (or its length)."""
    try:
        handle = sf.SoundFile(src.soundfile_input())
    except (sf.SoundFileError, RuntimeError, ValueError) as e:
        yield str(e)
        return
    with handle:
        if handle.frames >= UNKNOWN_FRAMES or handle.frames <= 0:
            yield "the header carries no length (a streamed file)" if handle.frames > 0 else "no frames"
            return
        rate, channels, frames = int(handle.samplerate), int(handle.channels), int(handle.frames)
        limits.check(frames, rate, channels, src.label, declared=True)
        blocks = _limited(_soundfile_blocks(handle, block_frames, src.label), limits, rate, channels, src.label)
        yield BlockStream(rate, channels, frames, handle.format in EXACT_LENGTH_FORMATS, blocks)


@contextlib.contextmanager
def _open_ffmpeg(src: ResolvedSource, stream: int, limits: DecodeLimits, block_frames: int,
                 note: str | None) -> Iterator[BlockStream]:
    """A :class:`BlockStream` over an ffmpeg pipe (bytes inputs go through a swept temporary file)."""
    with local_path(src) as path:
        streams = ffmpeg.probe_streams(path, name=src.label)
        if not 0 <= stream < len(streams):
            raise AudioDecodeError(f"{src.label}: has {len(streams)} audio stream(s); stream {stream} does not exist")
        info = streams[stream]
        if info.sample_rate <= 0 or info.channels <= 0:
            raise AudioDecodeError(f"{src.label}: not decodable: audio stream {stream} has "
                                   f"{info.sample_rate} Hz, {info.channels} channels")
        if info.frames is not None:
            limits.check(info.frames, info.sample_rate, info.channels, src.label, declared=True)
        blocks = _ffmpeg_blocks(str(path), stream, info.channels, src.label, block_frames, ffmpeg.DEFAULT_TIMEOUT_S)
        limited = _limited(blocks, limits, info.sample_rate, info.channels, src.label)
        try:
            yield BlockStream(info.sample_rate, info.channels, info.frames, False, limited, note)
        finally:
            blocks.close()


@contextlib.contextmanager
def open_blocks(src: ResolvedSource, *, stream: int | None = None, limits: DecodeLimits = DecodeLimits(),
                block_frames: int = BLOCK_FRAMES) -> Iterator[BlockStream]:
    """Open ``src`` for block-by-block decoding: libsndfile first, else ffmpeg (see the module docstring).

    ``stream``: an audio stream of a multi-stream container (forces ffmpeg).
    Raises :class:`AudioDecodeError` when neither decoder reads the file, and
    :class:`DecodedSizeError` when the header already passes ``limits``.
    """
    if stream is None and src.suffix not in FFMPEG_EXTENSIONS and not _is_mp3_impostor(src):
        with _open_soundfile(src, limits, block_frames) as opened:
            if isinstance(opened, BlockStream):
                yield opened
                return
        if not ffmpeg.ffmpeg_available():
            raise AudioDecodeError(f"{src.label}: not decodable by libsndfile ({opened}), and ffmpeg is not "
                                   "installed to try it")
        with _open_ffmpeg(src, 0, limits, block_frames, "decoded with ffmpeg (libsndfile could not read it)") as got:
            yield got
        return
    with _open_ffmpeg(src, stream or 0, limits, block_frames, f"decoded audio stream {stream or 0} with ffmpeg") as got:
        yield got


def count_frames(src: ResolvedSource, *, stream: int | None = None, limits: DecodeLimits = DecodeLimits()) -> int:
    """The exact number of frames ``src`` decodes to: its header's where exact, else a counting pass.

    The pass decodes block by block and keeps nothing, so it is bounded like the decode itself.
    """
    with open_blocks(src, stream=stream, limits=limits) as opened:
        if opened.exact_frames and opened.frames is not None:
            return opened.frames
        return sum(block.shape[-1] for block in opened.blocks)
