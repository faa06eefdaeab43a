"""Chunk geometry for overlap-add separation: pure functions, no model, no I/O.

A track of ``num_samples`` samples is cut into chunks of ``chunk_size`` samples
that overlap, the model runs on each chunk, and the chunk outputs are
cross-faded back together. The recipe is the community's (the ``demix``
function of Music-Source-Separation-Training, "generic" mode), with one
deliberate change: whether a chunk fades in or out depends on the chunk alone,
never on how chunks were grouped into batches.

Geometry, with ``C = chunk_size`` and ``K = num_overlap``:

- ``step = C // K`` samples between consecutive chunk starts;
- ``border = C - step``;
- ``fade = C // 10`` samples of linear fade at each end of the window;
- if ``num_samples > 2 * border`` and ``border > 0``, the whole track is
  reflect-padded by ``border`` on both sides (``torch.nn.functional.pad``
  "reflect": the edge sample is not repeated); otherwise it is not padded;
- chunks start at ``0, step, 2 * step, ...`` while the start is inside the
  (padded) track; a chunk's *valid* part is what lies inside the track;
- a chunk shorter than ``C`` is completed at its tail: by reflecting its own
  valid part if that part is longer than ``C // 2``, else with zeros;
- the window is ``torch.linspace(0, 1, fade)`` over the first ``fade`` samples,
  ``torch.linspace(1, 0, fade)`` over the last ``fade``, ones elsewhere; the
  first chunk has no fade-in, the last chunk no fade-out (for ``K >= 2`` the
  last chunk's valid part ends before its fade-out anyway; the reference's
  batch dependence comes from removing the fade-out of *every* chunk of the
  last batch, which we never do). With ``K == 1``
  chunks do not overlap and no chunk fades at all (the reference fades them and
  so zeroes the samples at chunk edges; we do not);
- each output sample is the window-weighted sum of the chunk outputs covering
  it divided by the summed window, NaN mapped to 0, and the border cropped.

With batch size 1 this is exactly the reference. The plan is a list of chunk
descriptors so that chunks of several tracks can be packed into one batch.

A model may declare another recipe (:mod:`stemflow.models.segmentation`):
:func:`plan_frame_segments` plans Spleeter's, whose segments are spans of STFT
frames, zero-padded (a ``lead`` of zeros before the track, zeros after it),
never windowed, and whose outputs are *summed* (``ChunkPlan.summed``): each
is the segment's share of one overlap-added inverse STFT. :func:`plan_for`
picks the planner of a declaration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from stemflow.errors import ConfigError
from stemflow.models.segmentation import CrossfadeChunks, FrameSegments, Segmentation

TailPad = Literal["none", "reflect", "zeros"]
PadMode = Literal["reflect", "zeros"]


def chunk_step(chunk_size: int, num_overlap: int) -> int:
    """Samples between consecutive chunk starts: ``chunk_size // num_overlap``."""
    _check_geometry(chunk_size, num_overlap)
    return chunk_size // num_overlap


def chunk_border(chunk_size: int, num_overlap: int) -> int:
    """Reflect padding added at each end of a long enough track: ``chunk_size - step``."""
    return chunk_size - chunk_step(chunk_size, num_overlap)


def fade_size(chunk_size: int) -> int:
    """Length of the linear fade at each end of the window: ``chunk_size // 10``."""
    return chunk_size // 10


def fade_window(chunk_size: int, *, fade_in: bool = True, fade_out: bool = True) -> torch.Tensor:
    """The cross-fade window of one chunk, float32 ``[chunk_size]``.

    ``linspace(0, 1, fade)`` at the start (if ``fade_in``), ``linspace(1, 0, fade)``
    at the end (if ``fade_out``), ones elsewhere. ``fade = chunk_size // 10``
    never lets the two fades meet; below 10 samples there is no fade.
    """
    if chunk_size <= 0:
        raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
    fade = fade_size(chunk_size)
    window = torch.ones(chunk_size, dtype=torch.float32)
    if fade > 0:
        if fade_out:
            window[chunk_size - fade :] = torch.linspace(1, 0, fade)
        if fade_in:
            window[:fade] = torch.linspace(0, 1, fade)
    return window


@dataclass(frozen=True)
class Chunk:
    """One chunk of a plan; positions are in padded-track coordinates.

    ``start``: first sample; ``valid``: samples inside the padded track
    (``1 <= valid <= chunk_size``); ``tail_pad``: how the remaining
    ``chunk_size - valid`` samples are filled; ``fade_in`` / ``fade_out``:
    whether the window fades at that end.
    """

    index: int
    start: int
    valid: int
    tail_pad: TailPad
    fade_in: bool
    fade_out: bool

    @property
    def stop(self) -> int:
        """One past the last valid sample (padded coordinates)."""
        return self.start + self.valid


@dataclass(frozen=True)
class ChunkPlan:
    """How one track is cut into chunks.

    ``num_samples``: the track's length; ``pad``: padding before the track
    (``border`` or 0 for the cross-fade recipe); ``end_pad``: padding after it
    (``None``: as much as before); padded sample ``j`` is track sample
    ``j - pad`` in the middle. ``pad_mode``: the padding mirrors the track
    (``"reflect"``) or is silence (``"zeros"``). ``summed``: chunk outputs add
    up as they are (no window, no normalisation) instead of being cross-faded
    and divided by the summed window. ``chunks`` are ordered by start.
    """

    num_samples: int
    chunk_size: int
    num_overlap: int
    step: int
    border: int
    fade: int
    pad: int
    chunks: tuple[Chunk, ...]
    pad_mode: PadMode = "reflect"
    summed: bool = False
    end_pad: int | None = None

    @property
    def padded_length(self) -> int:
        """Length of the padded track."""
        return self.num_samples + self.pad + (self.pad if self.end_pad is None else self.end_pad)

    def final_before(self, index: int) -> int:
        """Padded position below which the output is final once chunks ``0..index`` are added."""
        if index + 1 < len(self.chunks):
            return self.chunks[index + 1].start
        return self.padded_length

    def window(self, chunk: Chunk) -> torch.Tensor:
        """The cross-fade window of ``chunk``, float32 ``[chunk_size]`` (ones for a summed plan)."""
        if self.summed:
            return torch.ones(self.chunk_size, dtype=torch.float32)
        return fade_window(self.chunk_size, fade_in=chunk.fade_in, fade_out=chunk.fade_out)


def _check_geometry(chunk_size: int, num_overlap: int) -> None:
    for name, value in (("chunk_size", chunk_size), ("num_overlap", num_overlap)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if num_overlap > chunk_size:
        raise ConfigError(
            f"num_overlap ({num_overlap}) must not exceed chunk_size ({chunk_size}): the step would be 0"
        )


def plan_chunks(num_samples: int, chunk_size: int, num_overlap: int) -> ChunkPlan:
    """Cut a track of ``num_samples`` samples into overlapping chunks (see the module docstring)."""
    _check_geometry(chunk_size, num_overlap)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
        raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")
    step = chunk_size // num_overlap
    border = chunk_size - step
    pad = border if (num_samples > 2 * border and border > 0) else 0
    padded_length = num_samples + 2 * pad
    overlapping = border > 0
    starts = range(0, padded_length, step)
    chunks = []
    for index, start in enumerate(starts):
        valid = min(chunk_size, padded_length - start)
        if valid == chunk_size:
            tail: TailPad = "none"
        elif valid > chunk_size // 2:
            tail = "reflect"
        else:
            tail = "zeros"
        chunks.append(
            Chunk(
                index=index,
                start=start,
                valid=valid,
                tail_pad=tail,
                fade_in=overlapping and start > 0,
                fade_out=overlapping and start + step < padded_length,
            )
        )
    return ChunkPlan(
        num_samples=num_samples,
        chunk_size=chunk_size,
        num_overlap=num_overlap,
        step=step,
        border=border,
        fade=fade_size(chunk_size),
        pad=pad,
        chunks=tuple(chunks),
    )


def plan_frame_segments(num_samples: int, segmentation: FrameSegments) -> ChunkPlan:
    """Cut a track into :class:`~stemflow.models.segmentation.FrameSegments` (Spleeter's recipe).

    Padded coordinates start ``lead`` zeros before the track; segment ``k``
    covers frames ``[k T, (k + 1) T)``, i.e. padded samples ``[k T hop, k T hop
    + segment_samples)``; the padded track ends with the last segment, and
    everything outside the track reads as zeros. Outputs are summed.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
        raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")
    span, step = segmentation.segment_samples, segmentation.segment_step
    count = segmentation.num_segments(num_samples)
    chunks = tuple(Chunk(index=k, start=k * step, valid=span, tail_pad="none", fade_in=False, fade_out=False)
                   for k in range(count))
    padded_length = (count - 1) * step + span
    return ChunkPlan(
        num_samples=num_samples, chunk_size=span, num_overlap=1, step=step, border=span - step, fade=0,
        pad=segmentation.lead, chunks=chunks, pad_mode="zeros", summed=True,
        end_pad=padded_length - segmentation.lead - num_samples,
    )


def plan_for(num_samples: int, segmentation: Segmentation) -> ChunkPlan:
    """The plan of a track under a model's declared segmentation."""
    if isinstance(segmentation, FrameSegments):
        return plan_frame_segments(num_samples, segmentation)
    if isinstance(segmentation, CrossfadeChunks):
        return plan_chunks(num_samples, segmentation.chunk_size, segmentation.num_overlap)
    raise ConfigError(f"unknown segmentation {segmentation!r}")


def padded_to_track(positions: torch.Tensor, num_samples: int, pad: int) -> torch.Tensor:
    """Map padded-track positions to track positions under reflect padding by ``pad``.

    ``positions``: int64 ``[n]`` in ``[0, num_samples + 2 * pad)``. Requires
    ``pad < num_samples`` when ``pad > 0`` (as :func:`plan_chunks` guarantees).
    """
    idx = positions - pad
    idx = torch.where(idx < 0, -idx, idx)
    last = num_samples - 1
    return torch.where(idx > last, 2 * last - idx, idx)


def chunk_source_indices(plan: ChunkPlan, chunk: Chunk) -> torch.Tensor:
    """Track sample index feeding each of the chunk's ``chunk_size`` samples, int64.

    ``-1`` marks a zero-padded sample. The chunk's model input is
    ``track[:, idx]`` with zeros where ``idx == -1``: this equals slicing the
    padded track and padding the tail as the reference does.
    """
    local = torch.arange(plan.chunk_size, dtype=torch.int64)
    if plan.pad_mode == "zeros":
        indices = local + (chunk.start - plan.pad)
        return torch.where((indices >= 0) & (indices < plan.num_samples), indices, -1)
    if chunk.tail_pad == "reflect":
        # torch reflect pad of the valid part: sample valid + i mirrors valid - 2 - i.
        local = torch.where(local >= chunk.valid, 2 * (chunk.valid - 1) - local, local)
    indices = padded_to_track(local + chunk.start, plan.num_samples, plan.pad)
    if chunk.tail_pad == "zeros":
        indices[chunk.valid :] = -1
    return indices


def chunk_track_span(plan: ChunkPlan, chunk: Chunk) -> tuple[int, int]:
    """``(first, stop)``: the range of track samples a chunk reads (``stop`` exclusive)."""
    indices = chunk_source_indices(plan, chunk)
    used = indices[indices >= 0]
    return int(used.min()), int(used.max()) + 1


def first_track_reads(plan: ChunkPlan) -> list[int]:
    """For each chunk index ``i``: the lowest track sample that any chunk ``>= i`` reads.

    Once chunk ``i - 1`` has run, input before ``first_track_reads(plan)[i]`` is
    never read again and can be freed. Tail samples a chunk fills by reflection
    repeat its valid part, so only the valid part counts.
    """
    starts = torch.tensor([chunk.start for chunk in plan.chunks], dtype=torch.int64)
    if plan.pad_mode == "zeros":  # chunk i reads from track sample start - pad on (chunks are in order)
        lowest = (starts - plan.pad).clamp(0, plan.num_samples)
        return [int(i) for i in torch.flip(torch.cummin(torch.flip(lowest, dims=[0]), dim=0).values, dims=[0])]
    lasts = torch.tensor([chunk.stop - 1 for chunk in plan.chunks], dtype=torch.int64)
    # padded -> track is piecewise monotone: its minimum over a chunk sits at an end, or at `pad` (track sample 0).
    lowest = torch.minimum(
        padded_to_track(starts, plan.num_samples, plan.pad), padded_to_track(lasts, plan.num_samples, plan.pad)
    )
    lowest = torch.where((starts <= plan.pad) & (plan.pad <= lasts), torch.zeros_like(lowest), lowest)
    suffix_min = torch.flip(torch.cummin(torch.flip(lowest, dims=[0]), dim=0).values, dims=[0])
    return [int(i) for i in suffix_min.tolist()]
