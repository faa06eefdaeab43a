"""File-to-file separation in memory bounded by the chunk, not the track.

:func:`separate_file` decodes the input block by block
(:func:`stemflow.audio.decode.open_track`: every format the decoder reads, the
input policy of resampling and channels applied as it streams, the
decoded-bytes limits checked before and during decoding), runs the same chunk
plan as :meth:`stemflow.engine.separator.Separator.separate` (including the
reflect padding at both ends, which needs the track length up front: where
the header does not state it exactly, MP3/Ogg/ffmpeg inputs, a first decoding
pass counts it) and writes every stem as its samples become final. Memory
holds about ``chunk_size + batch_size * step`` input samples, one read block
and the open chunks' sums, whatever the track length. The output equals the
in-memory path's (same decoded samples, same code, same order of float
operations).

Any channel count is taken (the input policy: mono duplicated, the first two
of more). Outputs are FLAC/AIFF (16 or 24-bit PCM) or
WAV (16/24-bit PCM, or 32-bit float with ``bit_depth=32``), chosen by the
extension (:mod:`stemflow.audio.formats`). PCM saturates at full scale
(:func:`stemflow.audio.encode.quantise_pcm`, the in-memory encoder's quantiser,
so nothing wraps and both paths write the same samples); float WAV is written
as is. Every output is written to a temporary sibling
(:func:`stemflow.files.atomic_path`) and the stems are published under their
final names only after all of them succeeded, so no half-written file ever
carries a final name.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from stemflow.audio.blocks import DecodeLimits
from stemflow.audio.decode import TrackStream, open_track
from stemflow.audio.encode import quantise_pcm
from stemflow.audio.formats import EXTENSIONS, file_suffix
from stemflow.engine.overlap_add import check_finite
from stemflow.engine.separator import Separator
from stemflow.errors import AudioDecodeError, AudioEncodeError, ConfigError, StemflowError
from stemflow.files import atomic_path

logger = logging.getLogger(__name__)


STREAMED_FORMATS = ("flac", "wav", "aiff")
"""Output formats written block by block (from the extension, :data:`stemflow.audio.formats.EXTENSIONS`)."""

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class StreamResult:
    """What :func:`separate_file` did: the track's length and rate, where each stem went.

    ``clipped_samples``: per stem, samples saturated at full scale (PCM only).
    ``peak_buffered_frames``: the most input frames held at once.
    """

    num_samples: int
    sample_rate: int
    output_paths: dict[str, Path]
    clipped_samples: dict[str, int] = field(default_factory=dict)
    mono_input: bool = False
    peak_buffered_frames: int = 0
    notes: tuple[str, ...] = ()


class FileSource:
    """A :class:`stemflow.engine.overlap_add.TrackSource` over an opened track (:func:`open_track`), front to back.

    Keeps the samples between the last ``release`` and the furthest ``read``;
    takes the decoder's blocks as they come (``block_frames`` or more at a time).
    """

    def __init__(self, track: TrackStream, *, block_frames: int, name: str) -> None:
        self._track = track
        self._name = name
        self._block_frames = block_frames
        self._start = 0
        self._buffer = torch.zeros(2, 0, dtype=torch.float32)
        self._pending: list[np.ndarray] = []
        self.peak_buffered_frames = 0

    @property
    def num_samples(self) -> int:
        return self._track.num_samples

    @property
    def mono(self) -> bool:
        return self._track.source_channels == 1

    def _take(self, frames: int) -> torch.Tensor:
        """The next ``frames`` samples from the decoder (fewer only at its end)."""
        have = sum(b.shape[-1] for b in self._pending)
        while have < frames:
            block = next(self._track.blocks, None)
            if block is None:
                break
            self._pending.append(block)
            have += block.shape[-1]
        joined = np.concatenate(self._pending, axis=1) if self._pending else np.zeros((2, 0), np.float32)
        self._pending = [joined[:, frames:]] if joined.shape[-1] > frames else []
        return torch.from_numpy(np.ascontiguousarray(joined[:, :frames]))

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Track samples ``[start, stop)``, float32 ``[2, stop - start]`` (a view of the buffer)."""
        if start < self._start:
            raise StemflowError(f"{self._name}: sample {start} was already released (at {self._start})")
        end = self._start + self._buffer.shape[1]
        if stop > end:
            frames = min(max(self._block_frames, stop - end), self.num_samples - end)
            block = self._take(frames)
            if block.shape[1] != frames:
                raise AudioDecodeError(f"{self._name}: file ended after {end + block.shape[1]} of "
                                       f"{self.num_samples} frames")
            check_finite(block, where=f"{self._name} (frames {end}..{end + frames})")
            self._buffer = torch.cat([self._buffer, block], dim=1)
            self.peak_buffered_frames = max(self.peak_buffered_frames, self._buffer.shape[1])
        return self._buffer[:, start - self._start : stop - self._start]

    def release(self, before: int) -> None:
        """Forget the samples before ``before``."""
        drop = min(max(before - self._start, 0), self._buffer.shape[1])
        if drop:
            self._buffer = self._buffer[:, drop:].clone()
            self._start += drop


class _StemWriter:
    """One output stem, appended block by block to an open sound file (a temporary sibling of ``path``)."""

    def __init__(self, path: Path, sound_file: sf.SoundFile, bit_depth: int) -> None:
        self.path = path
        self.bit_depth = bit_depth
        self.clipped = 0
        self._file = sound_file

    def write(self, block: torch.Tensor) -> None:
        """Append float32 ``[2, n]`` samples (quantised to PCM unless ``bit_depth`` is 32)."""
        samples = block.numpy()
        if self.bit_depth == 32:
            data = samples
        else:
            data, clipped = quantise_pcm(samples, self.bit_depth)  # type: ignore[arg-type]
            self.clipped += clipped
        try:
            self._file.write(np.ascontiguousarray(data.T))
        except (OSError, sf.LibsndfileError) as e:
            raise AudioEncodeError(f"{self.path}: write failed: {e}") from e

    def close(self) -> None:
        """Close the sound file (finishing its header); closing twice is harmless."""
        if not self._file.closed:
            self._file.close()


def _output_format(path: Path, bit_depth: int) -> tuple[str, str]:
    """libsndfile ``(format, subtype)`` for streaming to ``path`` at ``bit_depth``; else a :class:`ConfigError`."""
    extension = EXTENSIONS.get(file_suffix(path.name))
    if extension is None or extension.encode_as not in STREAMED_FORMATS:
        allowed = sorted(e for e, x in EXTENSIONS.items() if x.encode_as in STREAMED_FORMATS)
        raise ConfigError(f"{path}: cannot stream to {path.suffix!r}; use one of {allowed}")
    format_name = extension.encode_as.upper()
    if bit_depth == 32 and format_name != "WAV":
        raise ConfigError(f"{path}: 32-bit float output needs a .wav name")
    if bit_depth not in (16, 24, 32):
        raise ConfigError(f"bit_depth must be 16, 24 or 32 (float WAV), got {bit_depth}")
    return format_name, "FLOAT" if bit_depth == 32 else f"PCM_{bit_depth}"


def _open_writers(
    stack: contextlib.ExitStack, output_paths: Mapping[str, Path], sample_rate: int, bit_depth: int
) -> dict[str, _StemWriter]:
    """A writer per stem on a temporary sibling of its path; ``stack`` publishes or removes them.

    Leaving ``stack`` without an exception publishes every file under its final
    name; with one, every writer is closed and its temporary file deleted.
    """
    formats = {stem: _output_format(path, bit_depth) for stem, path in output_paths.items()}
    writers: dict[str, _StemWriter] = {}
    for stem, path in output_paths.items():
        format_name, subtype = formats[stem]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp_path = stack.enter_context(atomic_path(path))
            sound_file = sf.SoundFile(
                temp_path, "w", samplerate=sample_rate, channels=2, subtype=subtype, format=format_name
            )
        except (OSError, sf.LibsndfileError) as e:
            raise AudioEncodeError(f"{path}: cannot open for writing: {e}") from e
        writers[stem] = _StemWriter(path, sound_file, bit_depth)
        stack.callback(writers[stem].close)  # runs before the temporary file is published or removed
    return writers


def _write_blocks(
    separator: Separator, source: FileSource, writers: Mapping[str, _StemWriter], progress: ProgressCallback | None
) -> None:
    """Separate ``source`` block by block, append each block to every writer, then close them."""
    rows = {stem: separator.all_stems.index(stem) for stem in writers}
    for block in separator.iter_blocks(source):
        for stem, writer in writers.items():
            writer.write(block.stems[rows[stem]])
        if progress is not None:
            progress(block.start + block.stems.shape[-1], source.num_samples)
    for writer in writers.values():
        writer.close()


def _publish(stems: contextlib.ExitStack, name: str) -> None:
    """Publish every finished stem file under its final name (see :func:`_open_writers`)."""
    try:
        stems.close()
    except OSError as e:
        raise AudioEncodeError(f"{name}: cannot move the finished stems in place: {e}") from e


def separate_file(
    separator: Separator,
    input_path: str | os.PathLike[str],
    output_paths: Mapping[str, str | os.PathLike[str]],
    *,
    block_seconds: float = 10.0,
    bit_depth: int = 24,
    progress: ProgressCallback | None = None,
    limits: DecodeLimits = DecodeLimits(),
) -> StreamResult:
    """Separate one audio file into per-stem files, in bounded memory.

    ``output_paths``: stem name -> output file, for any of
    ``separator.all_stems`` (the complement of a single-target model included).
    ``block_seconds``: how much input is read at a time. ``bit_depth``: 16 or 24
    (PCM), or 32 for float WAV. ``progress(done_samples, total_samples)`` is
    called after each written block. Raises :class:`AudioDecodeError` (bad
    input, NaN/inf), :class:`AudioEncodeError` or :class:`ConfigError`; on any
    error no output file is left under a final name (an existing file there is
    left untouched).
    """
    unknown = [s for s in output_paths if s not in separator.all_stems]
    if unknown or not output_paths:
        raise ConfigError(f"no or unknown stems {unknown}; this model gives {list(separator.all_stems)}")
    if block_seconds <= 0:
        raise ConfigError(f"block_seconds must be positive, got {block_seconds}")
    name = str(input_path)
    paths = {stem: Path(path) for stem, path in output_paths.items()}
    with open_track(input_path, sample_rate=separator.sample_rate, channels=2, name=name, limits=limits) as track:
        block_frames = max(1, round(block_seconds * separator.sample_rate))
        source = FileSource(track, block_frames=block_frames, name=name)
        with contextlib.ExitStack() as stack:
            writers = _open_writers(stack, paths, separator.sample_rate, bit_depth)
            _write_blocks(separator, source, writers, progress)
            finished = stack.pop_all()  # all stems written: publish them (below), not on leaving the block
        _publish(finished, name)
    for writer in writers.values():
        if writer.clipped:
            logger.warning("%s: %d samples beyond full scale saturated", writer.path, writer.clipped)
    return StreamResult(
        num_samples=source.num_samples,
        sample_rate=separator.sample_rate,
        output_paths={stem: w.path for stem, w in writers.items()},
        clipped_samples={stem: w.clipped for stem, w in writers.items()},
        mono_input=source.mono,
        peak_buffered_frames=source.peak_buffered_frames,
        notes=track.notes,
    )
