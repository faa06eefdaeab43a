"""A disk spool of float32 samples: written block by block, read back block by block, in bounded memory.

For encoders that must see a whole signal before writing its first sample
(``clip="rescale"`` needs the peak: :mod:`stemflow.audio.stream_encode`). The
samples go to ``stemflow-spool-<pid>-*.f32`` in the temp root
(:func:`stemflow.tempfiles.temp_file`), so the spool of a killed process is
swept by :func:`stemflow.tempfiles.sweep_stale`; :meth:`SampleSpool.close`
removes it otherwise. Frames are stored interleaved, little-endian float32.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

from stemflow.errors import AudioEncodeError
from stemflow.tempfiles import temp_file


class SampleSpool:
    """``channels``-channel float32 samples in a temporary file; ``name`` is what errors call the signal."""

    def __init__(self, channels: int, *, name: str) -> None:
        self.channels = channels
        self.name = name
        self.frames = 0
        self._stack = contextlib.ExitStack()
        try:
            descriptor, self.path = self._stack.enter_context(temp_file("spool", ".f32"))
            self._file = self._stack.enter_context(os.fdopen(descriptor, "w+b"))
        except OSError as e:
            self._stack.close()
            raise AudioEncodeError(f"{name}: cannot create a spool file: {e}") from e

    def append(self, block: np.ndarray) -> None:
        """Add float32 ``[channels, n]`` samples at the end."""
        try:
            self._file.write(np.ascontiguousarray(block.T, dtype="<f4").tobytes())
        except OSError as e:
            raise AudioEncodeError(f"{self.name}: cannot spool samples to {self.path}: {e}") from e
        self.frames += block.shape[1]

    def replay(self, block_frames: int) -> Iterator[np.ndarray]:
        """Every sample from the start, as float32 ``[channels, <= block_frames]`` blocks."""
        try:
            self._file.flush()
            self._file.seek(0)
            frame_bytes = 4 * self.channels
            while data := self._file.read(block_frames * frame_bytes):
                yield np.frombuffer(data, dtype="<f4").reshape(-1, self.channels).T
        except OSError as e:
            raise AudioEncodeError(f"{self.name}: cannot read the spool {self.path} back: {e}") from e

    def close(self) -> None:
        """Remove the spool file (idempotent)."""
        self._stack.close()
