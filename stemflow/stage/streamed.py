"""Long tracks in the stage: decoded, separated, measured and encoded block by block, never whole.

A track whose source object or decoded size is above the stage's
``stream_above_bytes`` (:mod:`stemflow.stage.fetching` decides) is not held in
memory: the fetch step leaves it as a :class:`StreamedSource` (a local file:
the source itself, or its copy in a swept temporary file, opened for
block-by-block decoding with the exact length known), and the model step
:func:`separate_streamed` runs the same chunk plan as the in-memory path
(:meth:`stemflow.engine.separator.Separator.iter_blocks`) while a sink thread
takes every finished block:

* the reference-free quality measures accumulate
  (:class:`stemflow.measures.streaming.QualityAccumulator`: the same numbers as
  :func:`stemflow.engine.track.measure_track` on whole arrays);
* ``sum_to_mixture`` adds the block's residual to its stem (as
  :func:`stemflow.engine.track.add_residual` does on the whole track);
* each stem is appended to its encoder (:func:`stemflow.audio.stream_encode.open_stem_writer`),
  writing a temporary file that the finishing step uploads in blocks
  (:func:`stemflow.store.commit.write_stem_file`).

The queue between the model thread and the sink holds at most
:data:`QUEUE_BLOCKS` blocks and the sink gathers :data:`SINK_SECONDS` before it
measures and encodes, so memory stays at a few seconds per track
whatever its length, and encoding overlaps the separation. The stems equal the
in-memory path's (same chunk plan, same float operations), so their bytes and
hashes do too. Every temporary file lives in a folder of this process
(:mod:`stemflow.tempfiles`), removed when the track is finished (or swept at
the next worker start after a kill).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stemflow.audio.decode import TrackStream
from stemflow.audio.encode import EncodeResult
from stemflow.audio.formats import AudioFormat
from stemflow.audio.stream_encode import StemWriter, open_stem_writer
from stemflow.engine.separator import Separator
from stemflow.engine.streaming import FileSource
from stemflow.errors import StemflowError
from stemflow.measures.streaming import QualityAccumulator

QUEUE_BLOCKS = 4
"""Finished blocks waiting for the sink thread at most (the model thread waits beyond that)."""

BLOCK_SECONDS = 10.0
"""Input read from the decoder at a time."""

SINK_SECONDS = 5.0
"""Output gathered before it is measured and encoded (the measures are far cheaper per sample on long blocks)."""


@dataclass
class StreamedSource:
    """A source opened for streaming (:func:`stemflow.audio.decode.open_track`) and what holds it open.

    ``stack`` closes the decoder and removes the local copy; whoever ends the
    track's life (the finishing step, or an error) closes it.
    """

    track: TrackStream
    stack: contextlib.ExitStack
    name: str

    @property
    def num_samples(self) -> int:
        """The track's exact length at the model's rate."""
        return self.track.num_samples


@dataclass
class StreamedResult:
    """A streamed track after the model step: its stems in local files, its measures, its length.

    The attributes the record columns read are those of
    :class:`stemflow.engine.track.TrackResult` (``stem_quality``,
    ``track_quality``, ``duration_s``, ``sample_rate``, ``source_*``,
    ``timings_s``, ``residual_stem``); ``files`` and ``encoded`` replace the
    stems in memory.
    """

    name: str
    sample_rate: int
    num_samples: int
    source_sample_rate: int
    source_channels: int
    files: dict[str, Path]
    encoded: dict[str, EncodeResult]
    stem_quality: dict[str, dict[str, float]]
    track_quality: dict[str, float]
    timings_s: dict[str, float] = field(default_factory=dict)
    residual_stem: str | None = None

    @property
    def duration_s(self) -> float:
        """Length of the track in seconds."""
        return self.num_samples / self.sample_rate


class StreamStepError(StemflowError):
    """A streamed track failed in the step ``step`` (``measure`` or ``finish``: encoding) of the sink thread.

    The original error is the ``__cause__``; a failure on the model thread
    (decoding, separating) is raised as it is.
    """

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.step = step


class _Sink:
    """The sink thread's work: measure each block, add the residual, append every stem to its writer.

    The separator's blocks (one batch of chunks each, often well under a
    second) are gathered to at least ``min_frames`` before they are measured
    and written: the measures' STFTs and filters cost far less per sample on
    longer blocks, and the numbers do not depend on the block sizes.
    """

    def __init__(self, stems: tuple[str, ...], sample_rate: int, writers: Mapping[str, StemWriter],
                 residual_stem: str | None, *, min_frames: int) -> None:
        self.stems = stems
        self.writers = writers
        self.residual_stem = residual_stem
        self.min_frames = min_frames
        self.quality = QualityAccumulator(stems, sample_rate, residual_stem=residual_stem)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_frames = 0

    def take(self, mixture: np.ndarray, block: np.ndarray) -> None:
        """One finished block: ``mixture`` ``[2, n]``, ``block`` ``[stems, 2, n]`` (rows in ``stems`` order)."""
        self._pending.append((mixture, block))
        self._pending_frames += mixture.shape[-1]
        if self._pending_frames >= self.min_frames:
            self.flush()

    def flush(self) -> None:
        """Measure and write what is gathered."""
        if not self._pending:
            return
        mixture = np.concatenate([m for m, _ in self._pending], axis=-1)
        block = np.concatenate([b for _, b in self._pending], axis=-1)
        self._pending, self._pending_frames = [], 0
        stems = {stem: block[row] for row, stem in enumerate(self.stems)}
        try:
            self.quality.push(mixture, stems)
        except Exception as e:
            raise StreamStepError("measure", e) from e
        if self.residual_stem is not None:
            residual = mixture.astype(np.float32, copy=True)
            for audio in stems.values():
                residual -= audio
            stems[self.residual_stem] = stems[self.residual_stem] + residual
        try:
            for stem, writer in self.writers.items():
                writer.write(stems[stem])
        except Exception as e:
            raise StreamStepError("finish", e) from e


def _drain(sink: _Sink, blocks: queue.Queue[tuple[np.ndarray, np.ndarray] | None], failure: list[BaseException],
           stop: threading.Event) -> None:
    """Run on the sink thread until the end marker (``None``); the first error stops it and is kept."""
    while True:
        item = blocks.get()
        if item is None:
            if not failure:
                try:
                    sink.flush()
                except BaseException as e:  # noqa: BLE001 - re-raised on the model thread
                    failure.append(e)
            return
        if failure:
            continue  # keep taking blocks so the model thread never waits on a dead sink
        try:
            sink.take(*item)
        except BaseException as e:  # noqa: BLE001 - re-raised on the model thread
            failure.append(e)
            stop.set()


def separate_streamed(
    separator: Separator,
    source: StreamedSource,
    *,
    folder: Path,
    stem_format: AudioFormat,
    bit_depth: int,
    residual_stem: str | None = None,
) -> StreamedResult:
    """Separate ``source`` block by block into one encoded file per stem under ``folder`` (module docstring).

    The stems are the separator's ``stems`` (as :meth:`Separator.separate` returns them).

    Raises:
        StreamStepError: measuring or encoding failed (the step and the original error).
        StemflowError: decoding or separating failed.
        Every file written is removed before raising.
    """
    check_streamable(separator, source)
    started = time.perf_counter()
    stems = tuple(separator.stems)
    rows = [separator.all_stems.index(stem) for stem in stems]
    writers: dict[str, StemWriter] = {}
    try:
        for stem in stems:
            writers[stem] = open_stem_writer(folder / f"{stem}.{stem_format}", separator.sample_rate,
                                             format=stem_format, bit_depth=bit_depth,  # type: ignore[arg-type]
                                             name=f"{source.name}/{stem}")
        sink = _Sink(stems, separator.sample_rate, writers, residual_stem,
                     min_frames=max(1, round(SINK_SECONDS * separator.sample_rate)))
        _run(separator, source, sink, rows)
        separated = time.perf_counter()
        try:
            encoded = {stem: writer.close() for stem, writer in writers.items()}
        except Exception as e:
            raise StreamStepError("finish", e) from e
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    per_stem, per_track = sink.quality.result()
    track = source.track
    return StreamedResult(
        name=source.name, sample_rate=separator.sample_rate, num_samples=track.num_samples,
        source_sample_rate=track.source_sample_rate, source_channels=track.source_channels,
        files={stem: folder / f"{stem}.{stem_format}" for stem in stems}, encoded=encoded,
        stem_quality=per_stem, track_quality=per_track, residual_stem=residual_stem,
        timings_s={"separate": separated - started, "encode": time.perf_counter() - separated},
    )


def _run(separator: Separator, source: StreamedSource, sink: _Sink, rows: list[int]) -> None:
    """The model thread: separate block by block, hand each block to ``sink`` on its thread; re-raise its error."""
    blocks: queue.Queue[tuple[np.ndarray, np.ndarray] | None] = queue.Queue(maxsize=QUEUE_BLOCKS)
    failure: list[BaseException] = []
    stop = threading.Event()
    thread = threading.Thread(target=_drain, args=(sink, blocks, failure, stop), name="stemflow-sink", daemon=True)
    thread.start()
    reader = FileSource(source.track, block_frames=max(1, round(BLOCK_SECONDS * separator.sample_rate)),
                        name=source.name)
    try:
        for block in separator.iter_blocks(reader):
            stop_at = block.start + block.stems.shape[-1]
            mixture = reader.read(block.start, stop_at).numpy().copy()
            blocks.put((mixture, block.stems[rows].numpy()))
            if stop.is_set():
                break
    finally:
        blocks.put(None)
        thread.join()
    if failure:
        raise failure[0]


def check_streamable(separator: Separator, source: StreamedSource) -> None:
    """Refuse a streamed source the separator cannot take (wrong rate).

    Raises:
        StemflowError: naming the source.
    """
    if source.track.sample_rate != separator.sample_rate:
        raise StemflowError(f"{source.name}: opened at {source.track.sample_rate} Hz, the model runs at "
                            f"{separator.sample_rate} Hz")
