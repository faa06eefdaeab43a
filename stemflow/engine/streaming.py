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
of more). Outputs are every format :func:`stemflow.audio.encode.encode`
writes (chosen by ``format`` or the extension, :mod:`stemflow.audio.formats`),
with its bit depths, bitrates, clipping policies and an output rate, through
:func:`stemflow.audio.stream_encode.open_stem_writer`: the same files as the
in-memory encoder (PCM: the same bytes; lossy: the same decoded samples).
``clip="rescale"`` spools each stem to a temporary file to find its peak
first (disk, not memory).

The outputs can be a selection of the model's stems, ``two_stems`` (``S`` and
``no_S``, the sum of the others) and ``sum_to_mixture`` (the residual
``mixture - sum(stems)`` added to ``instrumental``/``other``), computed block
by block with the in-memory path's functions
(:func:`stemflow.engine.track.add_residual`,
:func:`stemflow.engine.track.split_two_stems`), so the float operations are the
same, in the same order. The residual needs the block's input: it is read
back from the source when the block comes out of
:meth:`stemflow.engine.separator.Separator.iter_blocks`, which releases input
only before the block it yields (for cross-faded chunks and for a model's
own frame segments alike; the complement stem is made the same way).

Every output is written to a temporary sibling
(:func:`stemflow.files.atomic_path`) and the stems are published under their
final names only after all of them succeeded, so no half-written file ever
carries a final name.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from stemflow.audio.blocks import DecodeLimits
from stemflow.audio.decode import TrackStream, open_track
from stemflow.audio.encode import ClipPolicy, EncodeResult
from stemflow.audio.formats import EXTENSIONS, AudioFormat, file_suffix
from stemflow.audio.stream_encode import StemWriter, open_stem_writer
from stemflow.engine.overlap_add import check_finite
from stemflow.engine.separator import Separator
from stemflow.engine.track import add_residual, split_two_stems, sum_to_mixture_stem
from stemflow.errors import AudioDecodeError, AudioEncodeError, ConfigError, StemflowError
from stemflow.files import atomic_path

logger = logging.getLogger(__name__)


STREAMED_FORMATS: tuple[str, ...] = get_args(AudioFormat)
"""Output formats written block by block: every format :func:`stemflow.audio.encode.encode` writes."""

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class StreamResult:
    """What :func:`separate_file` did: the track's length and rate, where each stem went.

    ``clipped_samples``: per output, samples saturated or clamped (:attr:`EncodeResult.clipped_samples`).
    ``peak_buffered_frames``: the most input frames held at once. ``encoded``: per output,
    what its writer reported (format, rate, frames, gain, peak, bytes).
    """

    num_samples: int
    sample_rate: int
    output_paths: dict[str, Path]
    clipped_samples: dict[str, int] = field(default_factory=dict)
    mono_input: bool = False
    peak_buffered_frames: int = 0
    notes: tuple[str, ...] = ()
    encoded: dict[str, EncodeResult] = field(default_factory=dict)


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


def _output_formats(output_paths: Mapping[str, Path], format: AudioFormat | None) -> dict[str, AudioFormat]:
    """The format of each output: ``format``, else the one its extension names; else a :class:`ConfigError`."""
    formats: dict[str, AudioFormat] = {}
    for stem, path in output_paths.items():
        extension = EXTENSIONS.get(file_suffix(path.name))
        chosen = format if format is not None else extension.encode_as if extension is not None else None
        if chosen is None:
            allowed = sorted(e for e, x in EXTENSIONS.items() if x.encode_as is not None)
            raise ConfigError(f"{path}: no output format for {path.suffix!r}; use one of {allowed}")
        formats[stem] = chosen
    return formats


@dataclass(frozen=True)
class StemFiles:
    """How the separated blocks become files: the stems written and how each is encoded.

    ``two_stems``: the outputs are ``S`` and ``no_S`` (:func:`stemflow.engine.track.split_two_stems`);
    ``residual_stem``: the stem that takes ``mixture - sum(stems)`` (``sum_to_mixture``). The
    encoding fields are :func:`stemflow.audio.stream_encode.open_stem_writer`'s.
    """

    stems: tuple[str, ...]
    two_stems: str | None = None
    residual_stem: str | None = None
    bit_depth: int = 24
    clip: ClipPolicy = "none"
    bitrate_kbps: int | None = None
    output_rate: int | None = None

    def outputs(self, stems: dict[str, np.ndarray], mixture: Callable[[], np.ndarray]) -> dict[str, np.ndarray]:
        """The output blocks for one block of the model's ``stems`` (``mixture()``: the input of that block)."""
        if self.residual_stem is not None:
            stems = add_residual(mixture(), stems, self.residual_stem)
        return split_two_stems(stems, self.two_stems) if self.two_stems else stems


def _open_writers(stack: contextlib.ExitStack, output_paths: Mapping[str, Path], formats: Mapping[str, AudioFormat],
                  sample_rate: int, files: StemFiles) -> dict[str, StemWriter]:
    """A writer per output on a temporary sibling of its path; ``stack`` publishes or removes them.

    Leaving ``stack`` without an exception publishes every file under its final
    name; with one, every writer is aborted and its temporary file deleted.
    """
    writers: dict[str, StemWriter] = {}
    for stem, path in output_paths.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp_path = stack.enter_context(atomic_path(path))
        except OSError as e:
            raise AudioEncodeError(f"{path}: cannot open for writing: {e}") from e
        writers[stem] = open_stem_writer(temp_path, sample_rate, format=formats[stem], bit_depth=files.bit_depth,
                                         clip=files.clip, bitrate_kbps=files.bitrate_kbps,
                                         output_rate=files.output_rate, name=str(path))
        stack.callback(writers[stem].abort)  # runs before the temporary file is published or removed
    return writers


def _write_blocks(separator: Separator, source: FileSource, writers: Mapping[str, StemWriter], files: StemFiles,
                  progress: ProgressCallback | None) -> dict[str, EncodeResult]:
    """Separate ``source`` block by block, turn each block into the outputs, write them; then finish the files."""
    rows = {stem: separator.all_stems.index(stem) for stem in files.stems}
    for block in separator.iter_blocks(source):
        start, stop = block.start, block.start + block.stems.shape[-1]
        stems = {stem: block.stems[row].numpy() for stem, row in rows.items()}
        # the block's input is still in the source: it releases only samples before the block being written
        outputs = files.outputs(stems, lambda start=start, stop=stop: source.read(start, stop).numpy())
        for stem, writer in writers.items():
            writer.write(outputs[stem])
        if progress is not None:
            progress(stop, source.num_samples)
    return {stem: writer.close() for stem, writer in writers.items()}


def _publish(stems: contextlib.ExitStack, name: str) -> None:
    """Publish every finished stem file under its final name (see :func:`_open_writers`)."""
    try:
        stems.close()
    except OSError as e:
        raise AudioEncodeError(f"{name}: cannot move the finished stems in place: {e}") from e


def stem_files(separator: Separator, output_stems: Sequence[str], *, two_stems: str | None = None,
               sum_to_mixture: bool = False, **encoding: Any) -> StemFiles:
    """The :class:`StemFiles` of ``output_stems`` (file names to write) for ``separator``.

    Without ``two_stems`` the outputs are stems of ``separator.all_stems``; with it,
    ``two_stems`` and/or ``no_<two_stems>`` (the others summed over
    ``separator.stems``). ``sum_to_mixture`` needs all the model's stems
    (:func:`stemflow.engine.track.sum_to_mixture_stem`). ``encoding``: the
    encoding fields of :class:`StemFiles`.

    Raises:
        ConfigError: no outputs, outputs the options do not give, or ``sum_to_mixture`` without a stem to take it.
    """
    residual_stem = sum_to_mixture_stem(separator, sum_to_mixture)
    if two_stems is not None and two_stems not in separator.stems:
        raise ConfigError(f"two_stems {two_stems!r} is not one of {list(separator.stems)}")
    given = (two_stems, f"no_{two_stems}") if two_stems is not None else separator.all_stems
    unknown = [s for s in output_stems if s not in given]
    if unknown or not output_stems:
        raise ConfigError(f"no or unknown stems {unknown}; this model gives {list(given)}")
    base = separator.stems if two_stems is not None or residual_stem is not None else tuple(output_stems)
    return StemFiles(stems=tuple(base), two_stems=two_stems, residual_stem=residual_stem, **encoding)


def separate_file(
    separator: Separator,
    input_path: str | os.PathLike[str],
    output_paths: Mapping[str, str | os.PathLike[str]],
    *,
    block_seconds: float = 10.0,
    bit_depth: int = 24,
    progress: ProgressCallback | None = None,
    limits: DecodeLimits = DecodeLimits(),
    format: AudioFormat | None = None,
    clip: ClipPolicy = "none",
    bitrate_kbps: int | None = None,
    output_rate: int | None = None,
    two_stems: str | None = None,
    sum_to_mixture: bool = False,
) -> StreamResult:
    """Separate one audio file into per-stem files, in bounded memory.

    ``output_paths``: output name -> file. The names are stems of
    ``separator.all_stems`` (the complement of a single-target model included),
    or with ``two_stems=S`` any of ``S`` and ``no_S`` (the sum of the other
    stems). ``sum_to_mixture``: the residual ``mixture - sum(stems)`` goes into
    ``instrumental``, else ``other`` (:mod:`stemflow.engine.track`), computed block
    by block from the block's input. ``block_seconds``: how much input is read at
    a time. Encoding (:func:`stemflow.audio.stream_encode.open_stem_writer`):
    ``format`` (default: from each path's extension), ``bit_depth`` (16/24 PCM,
    32 float WAV), ``clip``, ``bitrate_kbps`` (lossy formats), ``output_rate``
    (resampled as it streams; ``None``: the model's rate).
    ``progress(done_samples, total_samples)`` is called after each written
    block. Raises :class:`AudioDecodeError` (bad input, NaN/inf),
    :class:`AudioEncodeError` or :class:`ConfigError`; on any error no output
    file is left under a final name (an existing file there is left untouched).
    """
    if block_seconds <= 0:
        raise ConfigError(f"block_seconds must be positive, got {block_seconds}")
    files = stem_files(separator, tuple(output_paths), two_stems=two_stems, sum_to_mixture=sum_to_mixture,
                       bit_depth=bit_depth, clip=clip, bitrate_kbps=bitrate_kbps, output_rate=output_rate)
    name = str(input_path)
    paths = {stem: Path(path) for stem, path in output_paths.items()}
    formats = _output_formats(paths, format)
    with open_track(input_path, sample_rate=separator.sample_rate, channels=2, name=name, limits=limits) as track:
        block_frames = max(1, round(block_seconds * separator.sample_rate))
        source = FileSource(track, block_frames=block_frames, name=name)
        with contextlib.ExitStack() as stack:
            writers = _open_writers(stack, paths, formats, separator.sample_rate, files)
            results = _write_blocks(separator, source, writers, files, progress)
            finished = stack.pop_all()  # all stems written: publish them (below), not on leaving the block
        _publish(finished, name)
    return StreamResult(
        num_samples=source.num_samples,
        sample_rate=separator.sample_rate,
        output_paths=paths,
        clipped_samples={stem: result.clipped_samples for stem, result in results.items()},
        mono_input=source.mono,
        peak_buffered_frames=source.peak_buffered_frames,
        notes=track.notes,
        encoded=results,
    )
