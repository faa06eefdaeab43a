"""Where encoded samples go: libsndfile or a long-running ffmpeg, fed block by block.

Both the whole-array encoder (:func:`stemflow.audio.encode.encode`) and the
block-by-block writer (:mod:`stemflow.audio.stream_encode`) end in one of these
sinks, so the two write the same files:

* :class:`SoundFileSink`: libsndfile (FLAC, WAV, AIFF, and MP3/Vorbis at
  libsndfile's default quality) on a path or a binary file object. Samples are
  handed to libsndfile in pieces of exactly :data:`WRITE_FRAMES` frames (the
  last one shorter), whatever the caller's block sizes: libvorbis' block
  decisions depend on how much audio each write gives it (decoded output of
  777-frame writes differs from one whole-array write by ~57 dB SNR), so a
  fixed schedule makes the Vorbis audio independent of how the samples
  arrived. PCM, FLAC and MP3 do not depend on it (checked: same bytes).
* :class:`FfmpegSink`: ``ffmpeg -f f32le -ar R -ac C -i pipe:0 <args> <path>``
  fed on stdin as blocks come. Its messages are drained into a bounded tail
  (:class:`~stemflow.audio.stderr_tail.StderrTail`: a pipe read on a thread,
  so it can neither block ffmpeg nor fill memory or disk); every write
  and the final wait run under a watchdog that kills a process taking no input
  for ``timeout_s``; a process that exits early or fails is an
  :class:`~stemflow.errors.AudioEncodeError` naming the file.

Samples are ``[channels, n]`` (float32, or int16/int32 PCM from
:func:`stemflow.audio.encode.quantise_pcm` for libsndfile); ``n`` may be 0.
``abort()`` stops without finishing the file (the caller removes it).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from stemflow.audio import ffmpeg
from stemflow.audio.stderr_tail import StderrTail
from stemflow.errors import AudioEncodeError

WRITE_FRAMES = 65536
"""Frames per libsndfile write (see the module docstring)."""


class SoundFileSink:
    """libsndfile writing ``format``/``subtype`` to ``target`` (a path, or a binary file object)."""

    def __init__(
        self, target: Path | BinaryIO, sample_rate: int, channels: int, *, format: str, subtype: str, name: str
    ) -> None:
        self.name = name
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        options: dict[str, object] = {}
        if format == "mp3":
            options = {"compression_level": 0.0, "bitrate_mode": "CONSTANT"}
        try:
            self._file = sf.SoundFile(
                target,
                "w",
                samplerate=sample_rate,
                channels=channels,
                subtype=subtype,
                format=format.upper(),
                **options,
            )  # type: ignore[arg-type]
        except (sf.SoundFileError, OSError, RuntimeError, ValueError, TypeError) as e:
            raise AudioEncodeError(f"{name}: cannot encode {format} {subtype} at {sample_rate} Hz: {e}") from e

    def write(self, data: np.ndarray) -> None:
        """Queue ``[channels, n]`` samples; whole :data:`WRITE_FRAMES` pieces go to libsndfile."""
        if data.shape[-1] == 0:
            return
        self._pending.append(data)
        self._pending_frames += data.shape[-1]
        if self._pending_frames >= WRITE_FRAMES:
            joined = np.concatenate(self._pending, axis=1) if len(self._pending) > 1 else self._pending[0]
            whole = joined.shape[-1] - joined.shape[-1] % WRITE_FRAMES
            for start in range(0, whole, WRITE_FRAMES):
                self._write(joined[:, start : start + WRITE_FRAMES])
            self._pending = [joined[:, whole:]] if whole < joined.shape[-1] else []
            self._pending_frames = joined.shape[-1] - whole

    def _write(self, piece: np.ndarray) -> None:
        try:
            self._file.write(np.ascontiguousarray(piece.T))
        except (sf.SoundFileError, OSError, RuntimeError) as e:
            raise AudioEncodeError(f"{self.name}: write failed: {e}") from e

    def close(self) -> None:
        """Write what is queued and finish the file (its header)."""
        if self._pending:
            self._write(np.concatenate(self._pending, axis=1))
            self._pending, self._pending_frames = [], 0
        try:
            self._file.close()
        except (sf.SoundFileError, OSError, RuntimeError) as e:
            raise AudioEncodeError(f"{self.name}: cannot finish the file: {e}") from e

    def abort(self) -> None:
        """Drop what is queued and close libsndfile (idempotent; the file is left for the caller to remove)."""
        self._pending, self._pending_frames = [], 0
        with contextlib.suppress(Exception):
            self._file.close()


class FfmpegSink:
    """A running ffmpeg encoding raw float32 from its stdin to ``path`` with ``output_args``.

    ``output_args`` name the codec and container (``-f``), as for
    :func:`stemflow.audio.ffmpeg.encode_with_ffmpeg`; ``path`` is overwritten.
    ``timeout_s``: the watchdog's limit per write and for the final wait
    (default :data:`stemflow.audio.ffmpeg.DEFAULT_TIMEOUT_S`, read when the sink starts).
    """

    def __init__(
        self,
        path: Path,
        sample_rate: int,
        channels: int,
        *,
        output_args: list[str],
        name: str,
        timeout_s: float | None = None,
    ) -> None:
        self.name = name
        self.timeout_s = timeout_s if timeout_s is not None else ffmpeg.DEFAULT_TIMEOUT_S
        self._channels = channels
        self._timed_out = False
        binary = ffmpeg.encoder_path(name)
        args = [
            binary, "-nostdin", "-v", "error", "-y",
            "-f", "f32le", "-ar", str(sample_rate), "-ac", str(channels), "-i", "pipe:0",
            *output_args, str(path),
        ]  # fmt: skip
        self._errors = StderrTail()
        try:
            self._process = subprocess.Popen(  # fixed argument list, no shell
                args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._errors
            )
        except OSError as e:
            self._errors.close()
            raise AudioEncodeError(f"{name}: could not start {binary}: {e}") from e
        self._errors.child_started()

    def _kill(self) -> None:
        """The watchdog's action: ffmpeg took no input (or did not finish) within ``timeout_s``."""
        self._timed_out = True
        with contextlib.suppress(OSError):
            self._process.kill()

    def _guarded(self, action: str, step: object) -> None:
        """Run ``step()`` under the watchdog; turn a dead or stuck ffmpeg into :class:`AudioEncodeError`."""
        timer = threading.Timer(self.timeout_s, self._kill)
        timer.daemon = True
        timer.start()
        try:
            step()  # type: ignore[operator]
        except (OSError, ValueError, subprocess.TimeoutExpired) as e:
            message = self._failure(action)
            self.abort()
            raise AudioEncodeError(message) from e
        finally:
            timer.cancel()

    def _failure(self, action: str) -> str:
        """What went wrong, for the error message: the watchdog, or ffmpeg's last message."""
        if self._timed_out:
            return f"{self.name}: encoding failed: ffmpeg made no progress for {self.timeout_s:g} s (killed)"
        if self._process.poll() is not None:
            self._errors.finish()  # every message is in once ffmpeg has exited
        if self._errors.last:
            return f"{self.name}: encoding failed ({action}): ffmpeg: {self._errors.last}"
        return f"{self.name}: encoding failed ({action}): ffmpeg exited with status {self._process.returncode}"

    def write(self, data: np.ndarray) -> None:
        """Feed float32 ``[channels, n]`` samples; an ffmpeg that already exited is an error."""
        if data.shape[-1] == 0:
            return
        if self._process.poll() is not None:
            message = self._failure("it exited before the end of the input")
            self.abort()
            raise AudioEncodeError(message)
        payload = np.ascontiguousarray(data.T, dtype="<f4")
        stdin = self._process.stdin
        self._guarded("writing", lambda: stdin.write(memoryview(payload).cast("B")))  # type: ignore[union-attr]

    def close(self) -> None:
        """End the input, wait for ffmpeg to finish the file; :class:`AudioEncodeError` if it failed."""
        stdin = self._process.stdin
        self._guarded("finishing", lambda: (stdin.close(), self._process.wait(self.timeout_s)))  # type: ignore[union-attr]
        if self._process.returncode != 0:
            message = self._failure("finishing")
            self.abort()
            raise AudioEncodeError(message)
        self._errors.close()

    def abort(self) -> None:
        """Kill ffmpeg and wait for it (idempotent)."""
        if self._process.poll() is None:
            with contextlib.suppress(OSError):
                self._process.kill()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self._process.wait(self.timeout_s)
        with contextlib.suppress(OSError, ValueError):
            self._process.stdin.close()  # type: ignore[union-attr]
        self._errors.close()
