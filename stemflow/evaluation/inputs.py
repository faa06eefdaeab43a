"""Audio objects opened for streaming: references, mixtures and committed stems, one block at a time.

The bounded-memory readers of :mod:`stemflow.evaluation` and :mod:`stemflow.karaoke`
name what they read as :class:`AudioInput` values (an object URL, optionally
one audio stream of a multi-stream ``.stem.mp4``, optionally the size and
sha256 a commit marker lists) and open them with :func:`open_inputs`:

* each object becomes a local file with :func:`stemflow.store.streams.local_copy`
  (a local file as it is, anything else streamed to a swept temporary file,
  never held in memory), capped at the listed size when there is one;
* a listed sha256 is checked on that local file, in blocks, before anything is
  decoded (a replaced or truncated committed stem is a :class:`StorageError`,
  exactly as :func:`stemflow.evaluation.committed.read_committed` refuses it);
* it is decoded with :func:`stemflow.audio.decode.open_track` (exact length up
  front, the input policy applied block by block).

:class:`BlockCursor` cuts an opened track's blocks into the exact sizes a
caller asks for, so several inputs can be read in lockstep. Memory: one
decoder block plus one requested block per input, whatever the track length.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from stemflow.audio.decode import TrackStream, open_track
from stemflow.errors import AudioDecodeError, StorageError
from stemflow.files import sha256_file
from stemflow.store.paths import StorageOptions
from stemflow.store.streams import local_copy


@dataclass(frozen=True)
class AudioInput:
    """One audio object to stream: its URL, the audio stream, and the size/sha256 it must have.

    ``stream``: audio stream index of a multi-stream container (``.stem.mp4``:
    0 = mixture), ``None`` = the first. ``size``/``sha256``: what a commit marker
    lists (checked before decoding); ``None`` = not checked. ``name`` is what
    error messages show (the URL when empty).
    """

    url: str
    stream: int | None = None
    size: int | None = None
    sha256: str | None = None
    name: str = ""

    @property
    def label(self) -> str:
        """What messages call this input."""
        return self.name or (self.url if self.stream is None else f"{self.url} (stream {self.stream})")


@contextlib.contextmanager
def _verified_copy(item: AudioInput, storage_options: StorageOptions) -> Iterator[str]:
    """A local path holding ``item``'s bytes, checked against its listed size and sha256."""
    with contextlib.ExitStack() as stack:
        try:
            path = stack.enter_context(local_copy(item.url, storage_options, max_bytes=item.size))
        except FileNotFoundError as e:
            what = "a committed stem is missing" if item.sha256 is not None else "no such object"
            raise StorageError(f"{item.url}: {what}") from e
        if item.sha256 is not None:
            size = os.path.getsize(path)
            if size != item.size or sha256_file(path) != item.sha256:
                raise StorageError(
                    f"{item.url}: not the stem its marker lists ({size} bytes, sha256 differs); not used"
                )
        yield path


@contextlib.contextmanager
def open_inputs(
    inputs: Iterable[AudioInput],
    sample_rate: int | None,
    *,
    storage_options: StorageOptions = None,
) -> Iterator[dict[AudioInput, TrackStream]]:
    """Open every distinct input for streaming at ``sample_rate`` (``None``: each its own rate), stereo.

    Raises:
        StorageError: an object is missing, over its listed size, or not its listed sha256.
        AudioDecodeError: an input cannot be decoded.
    """
    with contextlib.ExitStack() as stack:
        opened: dict[AudioInput, TrackStream] = {}
        for item in dict.fromkeys(inputs):
            path = stack.enter_context(_verified_copy(item, storage_options))
            opened[item] = stack.enter_context(
                open_track(path, sample_rate=sample_rate, name=item.label, stream=item.stream)
            )
        yield opened


class BlockCursor:
    """Reads an opened track front to back in blocks of exactly the sizes asked for.

    ``read(n)`` returns float32 ``[2, n]``; asking past the end of the track
    raises :class:`AudioDecodeError` (a decoder that ends before the length it
    announced).
    """

    def __init__(self, track: TrackStream, name: str) -> None:
        self._track = track
        self._name = name
        self._pending: list[np.ndarray] = []
        self._have = 0
        self.position = 0

    def read(self, frames: int) -> np.ndarray:
        """The next ``frames`` samples."""
        while self._have < frames:
            block = next(self._track.blocks, None)
            if block is None:
                raise AudioDecodeError(
                    f"{self._name}: ended after {self.position + self._have} of {self.position + frames} frames"
                )
            self._pending.append(block)
            self._have += block.shape[-1]
        joined = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending, axis=1)
        self._pending = [joined[:, frames:]] if joined.shape[-1] > frames else []
        self._have -= frames
        self.position += frames
        return np.ascontiguousarray(joined[:, :frames])


def centre_excerpts(
    tracks: Mapping[str, TrackStream],
    sample_rate: int,
    excerpt_s: float,
) -> tuple[dict[str, np.ndarray], int, int]:
    """The middle ``excerpt_s`` seconds of every track (all cut to the shortest): ``(excerpts, start, span)``.

    Reads each track up to the end of the excerpt, keeping only the excerpt
    (the samples before it are decoded and dropped a block at a time).
    """
    length = min(t.num_samples for t in tracks.values())
    span = min(length, int(excerpt_s * sample_rate))
    start = (length - span) // 2
    excerpts = {}
    for name, track in tracks.items():
        cursor = BlockCursor(track, name)
        for _, frames in block_spans(start, 1 << 18):
            cursor.read(frames)
        excerpts[name] = cursor.read(span)
    return excerpts, start, span


def cursors(opened: Mapping[AudioInput, TrackStream]) -> dict[AudioInput, BlockCursor]:
    """A :class:`BlockCursor` per opened input."""
    return {item: BlockCursor(track, item.label) for item, track in opened.items()}


def block_spans(length: int, block_frames: int) -> Iterator[tuple[int, int]]:
    """``(start, frames)`` of consecutive blocks covering ``[0, length)``."""
    if block_frames <= 0:
        raise ValueError(f"block_frames must be positive, got {block_frames}")
    for start in range(0, length, block_frames):
        yield start, min(block_frames, length - start)
