"""The CPU side of overlap-add: where chunk inputs come from and where chunk outputs are summed.

A :class:`TrackSource` gives random access to a stereo track read mostly front
to back (:class:`TensorSource` for a tensor in memory; the streaming path has a
file-backed one, :class:`stemflow.engine.streaming.FileSource`). An
:class:`OverlapAdd` accumulator sums window-weighted chunk outputs of one track
over a sliding span and hands out finished samples as :class:`SeparatedBlock`
s; a :class:`TrackJob` ties a track's plan, source and accumulator together
while the :class:`stemflow.engine.separator.Separator` runs its chunks.

Nothing here touches the model or the device: sums are float32 on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from stemflow.engine.chunking import Chunk, ChunkPlan, first_track_reads
from stemflow.errors import AudioDecodeError, StemflowError


def check_finite(audio: torch.Tensor, *, where: str = "input") -> None:
    """Raise :class:`AudioDecodeError` if ``audio`` holds NaN or infinite samples."""
    if not bool(torch.isfinite(audio).all()):
        bad = int((~torch.isfinite(audio)).sum())
        raise AudioDecodeError(f"{where}: {bad} sample(s) are NaN or infinite; cannot separate")


class TrackSource(Protocol):
    """Random access to a stereo track, read mostly front to back.

    ``read(start, stop)`` returns float32 ``[2, stop - start]`` on the CPU;
    ``release(before)`` promises that samples before ``before`` are not read again.
    """

    @property
    def num_samples(self) -> int: ...

    def read(self, start: int, stop: int) -> torch.Tensor: ...

    def release(self, before: int) -> None: ...


class TensorSource:
    """A :class:`TrackSource` over a tensor already in memory (reads are views)."""

    def __init__(self, audio: torch.Tensor) -> None:
        self._audio = audio

    @property
    def num_samples(self) -> int:
        return int(self._audio.shape[-1])

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self._audio[:, start:stop]

    def release(self, before: int) -> None:
        """Nothing to free: the caller owns the tensor."""


@dataclass(frozen=True)
class SeparatedBlock:
    """Finished output for track samples ``[start, start + n)``: ``stems`` float32 ``[S, 2, n]``."""

    start: int
    stems: torch.Tensor


class OverlapAdd:
    """Window-weighted sum of chunk outputs for one track, over a sliding span.

    Holds ``[num_stems, 2, span]`` sums and ``[span]`` window totals on the CPU,
    where ``span`` covers only chunks not yet finished (a few chunks long).
    Chunks must be added in plan order; :meth:`pop` hands out finished samples.
    The buffers are allocated at the first :meth:`add` and freed once the
    track is finished, so many planned tracks cost nothing until they run.
    """

    def __init__(self, plan: ChunkPlan, num_stems: int, *, span: int | None = None) -> None:
        self.plan = plan
        self.offset = 0  # padded position of buffer index 0
        self._used = 0
        self._size = min(span or plan.chunk_size * 2, plan.padded_length)
        self._sums = torch.zeros(num_stems, 2, 0, dtype=torch.float32)
        self._weights = torch.zeros(0, dtype=torch.float32)
        self._windows: dict[tuple[bool, bool], torch.Tensor] = {}

    def _window(self, chunk: Chunk) -> torch.Tensor:
        """The chunk's cross-fade window (one per fade combination, cached)."""
        key = (chunk.fade_in, chunk.fade_out)
        if key not in self._windows:
            self._windows[key] = self.plan.window(chunk)
        return self._windows[key]

    def add(self, chunk: Chunk, output: torch.Tensor) -> None:
        """Add one chunk's model output, float32 ``[num_stems, 2, chunk_size]``."""
        if chunk.start < self.offset:
            raise StemflowError(f"chunk {chunk.index} starts before the finished part; add chunks in order")
        begin, end = chunk.start - self.offset, chunk.stop - self.offset
        if end > self._weights.shape[0]:
            self._grow(max(end, self._size))
        if self.plan.summed:  # each output is its share of the track's result: add it as it is
            self._sums[..., begin:end] += output[..., : chunk.valid]
        else:
            window = self._window(chunk)[: chunk.valid]
            self._sums[..., begin:end] += output[..., : chunk.valid] * window
            self._weights[begin:end] += window
        self._used = max(self._used, end)

    def _grow(self, needed: int) -> None:
        """Reallocate the buffers to at least ``needed`` samples, keeping what is in use."""
        size = max(needed, min(2 * self._weights.shape[0], self.plan.padded_length))
        sums = torch.zeros(*self._sums.shape[:2], size, dtype=torch.float32)
        weights = torch.zeros(size, dtype=torch.float32)
        sums[..., : self._used] = self._sums[..., : self._used]
        weights[: self._used] = self._weights[: self._used]
        self._sums, self._weights = sums, weights

    def pop(self, stop: int) -> SeparatedBlock:
        """Finish padded samples ``[offset, stop)`` and return them cropped to the track.

        Each sample is its weighted sum over its window total (0/0 -> 0, as the
        reference's ``nan_to_num``), or the plain sum for a summed plan; the
        padded border is dropped.
        """
        count = stop - self.offset
        if self.plan.summed:
            done = self._sums[..., :count].clone()
        else:
            done = torch.nan_to_num(self._sums[..., :count] / self._weights[:count], nan=0.0)
        rest = self._used - count
        if rest > 0:
            self._sums[..., :rest] = self._sums[..., count : self._used].clone()
            self._weights[:rest] = self._weights[count : self._used].clone()
        self._sums[..., max(rest, 0) : self._used] = 0
        self._weights[max(rest, 0) : self._used] = 0
        self._used = max(rest, 0)
        pad, length = self.plan.pad, self.plan.num_samples
        first = min(max(self.offset - pad, 0), length)
        last = min(max(stop - pad, 0), length)
        block = done[..., first + pad - self.offset : last + pad - self.offset]
        self.offset = stop
        if stop >= self.plan.padded_length:  # finished: free the buffers
            self._sums = torch.zeros(*self._sums.shape[:2], 0, dtype=torch.float32)
            self._weights = torch.zeros(0, dtype=torch.float32)
        return SeparatedBlock(start=first, stems=block)


@dataclass
class TrackJob:
    """One track in flight: its plan, its input, its accumulator, and what it still reads.

    ``first_reads[i]`` is the lowest track sample chunks ``>= i`` read
    (:func:`stemflow.engine.chunking.first_track_reads`).
    """

    plan: ChunkPlan
    source: TrackSource
    accumulator: OverlapAdd
    first_reads: list[int]

    @classmethod
    def start(cls, plan: ChunkPlan, source: TrackSource, num_stems: int, batch_size: int) -> TrackJob:
        """A job whose accumulator spans the chunks one batch can leave open (``chunk + batch * step``)."""
        span = plan.chunk_size + batch_size * plan.step
        return cls(plan, source, OverlapAdd(plan, num_stems, span=span), first_track_reads(plan))

    def release_after(self, chunk: Chunk, unwritten: int) -> None:
        """Free input no chunk after ``chunk`` reads and no block from ``unwritten`` on needs."""
        after = chunk.index + 1
        needed = self.first_reads[after] if after < len(self.first_reads) else self.plan.num_samples
        self.source.release(min(needed, unwritten))
