"""The separator: chunked overlap-add of a model over whole tracks.

The work splits in three steps, so that chunks of several tracks can
share a batch:

1. plan: :func:`stemflow.engine.chunking.plan_chunks` cuts the track into chunk
   descriptors (pure geometry);
2. run: chunks are gathered ``batch_size`` at a time into one tensor
   ``[B, 2, chunk_size]`` (in pinned memory on CUDA) and go through
   ``model.separate_chunks`` under ``torch.inference_mode()``;
3. scatter-add: each chunk's output, times its cross-fade window, is added to
   a per-track :class:`stemflow.engine.overlap_add.OverlapAdd` accumulator that
   lives on the CPU and only spans the chunks still open; finished samples are
   divided by the summed window and handed out block by block.

:meth:`Separator.separate_many` packs chunks of several tracks into the same
batches (the plan and the accumulator are per track, the batch is not).

Memory is bounded by the chunk and the batch, not the track: the in-memory
path (:meth:`Separator.separate`) holds the input and the output stems, the
streaming path (:mod:`stemflow.engine.streaming`) not even those. The output does not
depend on ``batch_size`` (to float rounding of the model, ~1e-8).

The model contract: an ``nn.Module`` with ``config`` (a
:class:`stemflow.models.config.ModelConfig`) and ``separate_chunks(x)`` mapping
``[B, 2, L]`` to ``[B, S, 2, L]`` with ``S = len(config.model_stems)``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from stemflow.engine.chunking import Chunk, ChunkPlan, chunk_source_indices, plan_for
from stemflow.engine.compiled import ModelForward
from stemflow.engine.overlap_add import SeparatedBlock, TensorSource, TrackJob, TrackSource, check_finite
from stemflow.errors import AudioDecodeError, ConfigError, StemflowError
from stemflow.models.config import ModelConfig
from stemflow.models.precision import PRECISIONS, resolve_precision
from stemflow.models.segmentation import CrossfadeChunks, FrameSegments, Segmentation

logger = logging.getLogger(__name__)


class Separator:
    """Separates stereo tracks with one model, by chunked overlap-add.

    ``model``: see the module docstring; it is put in eval mode and moved to
    ``device``. ``chunk_size`` / ``num_overlap`` / ``batch_size`` default to the
    config's ``audio.chunk_size``, ``inference.num_overlap`` and
    ``inference.batch_size``. ``precision``: "auto" (the default: float16
    autocast on CUDA, float32 elsewhere; :mod:`stemflow.models.precision`),
    "float32", or "bfloat16" / "float16" autocast (bfloat16 also on CPU; float16
    only on CUDA); sums are always float32. ``stems``: the stems to return (default: all of
    ``config.stems``, i.e. the model's plus the complement ``mixture - target``
    of a single-target model). ``sample_rate``: the rate the model runs at
    (default: ``config.audio.sample_rate``); inputs must already be at it.
    ``compile``: run the model through ``torch.compile`` (:mod:`stemflow.engine.compiled`:
    one compilation per model and batch shape, the short last batch padded;
    ``compile_mode`` "reduce-overhead" adds CUDA graphs); if compilation fails
    the separator falls back to eager mode and logs a warning.

    A model that declares its own segmentation (``model.segmentation()``,
    :mod:`stemflow.models.segmentation`) is run that way: Spleeter in segments of
    STFT frames whose outputs add up to the one-STFT result. For such a model
    ``chunk_size`` and ``num_overlap`` are fixed by the model (the segment span
    and 1); passing other values is a :class:`ConfigError`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "cpu",
        chunk_size: int | None = None,
        num_overlap: int | None = None,
        batch_size: int | None = None,
        precision: str = "auto",
        stems: Sequence[str] | None = None,
        sample_rate: int | None = None,
        compile: bool = False,
        compile_mode: str = "default",
    ) -> None:
        config = _model_config(model)
        self.config = config
        self.device = torch.device(device)
        self.segmentation: Segmentation = _segmentation(model, config, chunk_size, num_overlap)
        self.chunk_size, self.num_overlap = _chunk_settings(self.segmentation)
        self.batch_size = _positive("batch_size", batch_size, config.inference.batch_size)
        self.sample_rate = _positive("sample_rate", sample_rate, config.audio.sample_rate)
        self.precision = resolve_precision(precision, self.device)
        self.model_stems: tuple[str, ...] = config.model_stems
        self.all_stems: tuple[str, ...] = config.stems
        self.stems: tuple[str, ...] = _selected_stems(stems, self.all_stems)
        self.model = model.eval().to(self.device)
        self._batch: torch.Tensor | None = None
        entry_point = "separate_segments" if isinstance(self.segmentation, FrameSegments) else "separate_chunks"
        self._forward = ModelForward(self.model, entry_point, batch_size=self.batch_size, compile=compile,
                                     mode=compile_mode)

    @property
    def compiled(self) -> bool:
        """Whether batches run through ``torch.compile`` (False if not asked, or after a fallback)."""
        return self._forward.compiled

    @property
    def output_settings(self) -> dict[str, int | str]:
        """The settings that change the stems, for :func:`stemflow.hub.model_id.model_id` (precision resolved)."""
        return {"chunk_size": self.chunk_size, "num_overlap": self.num_overlap, "precision": self.precision}

    def plan(self, num_samples: int) -> ChunkPlan:
        """The chunk plan of a track of ``num_samples`` samples under this separator's segmentation."""
        return plan_for(num_samples, self.segmentation)

    def check_audio(self, audio: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Validate a mixture and return it as a float32 CPU tensor ``[2, N]`` (no copy if already so)."""
        if sample_rate != self.sample_rate:
            raise AudioDecodeError(
                f"input is at {sample_rate} Hz but the model runs at {self.sample_rate} Hz; "
                "resample it first (stemflow.audio)"
            )
        if isinstance(audio, np.ndarray):
            if not np.issubdtype(audio.dtype, np.floating):
                raise AudioDecodeError(f"input must be floating-point audio, got {audio.dtype}")
            native = np.ascontiguousarray(audio, dtype=np.float32)  # no copy if already float32
            tensor = torch.from_numpy(native if native.flags.writeable else native.copy())
        else:
            tensor = audio
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise AudioDecodeError(f"input must be floating-point audio, got {getattr(audio, 'dtype', type(audio))}")
        if tensor.ndim != 2 or tensor.shape[0] != 2:
            raise AudioDecodeError(
                f"input must be stereo [2, samples], got shape {tuple(tensor.shape)}; "
                "convert mono / multichannel first (stemflow.audio)"
            )
        if tensor.shape[1] == 0:
            raise AudioDecodeError("input is empty (0 samples)")
        tensor = tensor.detach().to(device="cpu", dtype=torch.float32)
        check_finite(tensor)
        return tensor

    def separate(
        self,
        audio: np.ndarray | torch.Tensor,
        sample_rate: int,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Separate one track.

        ``audio``: float ``[2, N]`` at :attr:`sample_rate`. Returns one float32
        ``[2, N]`` array per stem of :attr:`stems`, in that order.
        ``progress(done_samples, total_samples)`` is called after each finished block.
        """
        mixture = self.check_audio(audio, sample_rate)
        length = mixture.shape[1]
        outputs = {stem: np.empty((2, length), dtype=np.float32) for stem in self.stems}
        rows = [(stem, self.all_stems.index(stem)) for stem in self.stems]
        for block in self.iter_blocks(TensorSource(mixture)):
            stop = block.start + block.stems.shape[-1]
            for stem, row in rows:
                outputs[stem][:, block.start : stop] = block.stems[row].numpy()
            if progress is not None:
                progress(stop, length)
        return outputs

    def separate_many(
        self, tracks: Sequence[np.ndarray | torch.Tensor], sample_rate: int
    ) -> list[dict[str, np.ndarray]]:
        """Separate several tracks, packing chunks of different tracks into the same batches.

        Same output as :meth:`separate` on each track (chunks are independent);
        worth it for short tracks, whose last batch would otherwise run part
        empty. Holds every input and output in memory. The first invalid track
        raises: check each with :meth:`check_audio` first to isolate bad ones.
        """
        mixtures = [self.check_audio(audio, sample_rate) for audio in tracks]
        outputs = [{stem: np.empty((2, m.shape[1]), dtype=np.float32) for stem in self.stems} for m in mixtures]
        rows = [(stem, self.all_stems.index(stem)) for stem in self.stems]
        for track, block in self._iter_tracks([TensorSource(m) for m in mixtures]):
            stop = block.start + block.stems.shape[-1]
            for stem, row in rows:
                outputs[track][stem][:, block.start : stop] = block.stems[row].numpy()
        return outputs

    def iter_blocks(self, source: TrackSource) -> Iterator[SeparatedBlock]:
        """Separate ``source`` and yield its finished output front to back.

        Blocks are contiguous and cover ``[0, num_samples)``; ``stems`` rows are
        :attr:`all_stems` (the complement last, from the unpadded mixture).
        """
        for _, block in self._iter_tracks([source]):
            yield block

    def _iter_tracks(self, sources: Sequence[TrackSource]) -> Iterator[tuple[int, SeparatedBlock]]:
        """Plan every track, run their chunks in batches of ``batch_size``, yield ``(track, block)``."""
        jobs = [TrackJob.start(self.plan(source.num_samples), source, len(self.model_stems), self.batch_size)
                for source in sources]  # fmt: skip
        items = [(track, chunk) for track, job in enumerate(jobs) for chunk in job.plan.chunks]
        for begin in range(0, len(items), self.batch_size):
            batch = items[begin : begin + self.batch_size]
            outputs = self.run_batch(self._gather([(jobs[t], chunk) for t, chunk in batch]))
            last: dict[int, Chunk] = {}
            for (track, chunk), output in zip(batch, outputs):
                jobs[track].accumulator.add(chunk, output)
                last[track] = chunk
            for track, chunk in last.items():
                job = jobs[track]
                block = job.accumulator.pop(job.plan.final_before(chunk.index))
                if block.stems.shape[-1] > 0:
                    yield track, self._with_complement(block, job.source)
                job.release_after(chunk, block.start)

    def _with_complement(self, block: SeparatedBlock, source: TrackSource) -> SeparatedBlock:
        if self.config.complement_stem is None:
            return block
        mixture = source.read(block.start, block.start + block.stems.shape[-1])
        complement = (mixture - block.stems[0]).unsqueeze(0)
        return SeparatedBlock(start=block.start, stems=torch.cat([block.stems, complement], dim=0))

    def _gather(self, batch: Sequence[tuple[TrackJob, Chunk]]) -> torch.Tensor:
        """Model input for ``batch``: float32 ``[len(batch), 2, chunk_size]`` in a reused buffer."""
        if self._batch is None:
            buffer = torch.empty(self.batch_size, 2, self.chunk_size, dtype=torch.float32)
            self._batch = buffer.pin_memory() if self.device.type == "cuda" else buffer
        for slot, (job, chunk) in zip(self._batch, batch):
            indices = chunk_source_indices(job.plan, chunk)
            inside = indices >= 0  # the rest is zero padding (the tail, or silence around the track)
            used = indices[inside]
            first, stop = int(used.min()), int(used.max()) + 1
            window = job.source.read(first, stop)
            if bool(inside.all()):
                slot.copy_(window.index_select(1, indices - first))
            else:
                slot.zero_()
                slot[:, inside] = window.index_select(1, used - first)
        return self._batch[: len(batch)]

    def run_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """Run the model on chunks ``[B, 2, chunk_size]``; returns float32 CPU ``[B, S, 2, chunk_size]``.

        A half-precision batch whose output is not finite (an overflow) is run
        again in float32, with a warning.
        """
        y = self._run(batch, self.precision)
        if self.precision != "float32" and not bool(torch.isfinite(y).all()):
            logger.warning("%s output overflowed (NaN/inf) on a batch; running it again in float32", self.precision)
            y = self._run(batch, "float32")
        expected = (batch.shape[0], len(self.model_stems), 2, batch.shape[-1])
        if tuple(y.shape) != expected:
            raise StemflowError(f"model returned shape {tuple(y.shape)}, expected {expected} [B, S, 2, L]")
        return y.to(device="cpu", dtype=torch.float32)

    def _run(self, batch: torch.Tensor, precision: str) -> torch.Tensor:
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=PRECISIONS[precision])
            if precision != "float32"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            return self._forward(batch.to(self.device, non_blocking=True))


def _positive(name: str, value: int | None, default: int) -> int:
    """``value`` (``default`` when ``None``), which must be a positive ``int``; else a :class:`ConfigError`."""
    chosen = default if value is None else value
    if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {chosen!r}")
    return chosen


def _model_config(model: nn.Module) -> ModelConfig:
    """The model's :class:`ModelConfig`, after checking it honours the model contract (module docstring)."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise ConfigError("the model has no 'config' (a stemflow.models.config.ModelConfig); load it with load_model")
    if not callable(getattr(model, "separate_chunks", None)):
        raise ConfigError("the model has no separate_chunks(x) method")
    return config


def _segmentation(model: nn.Module, config: ModelConfig, chunk_size: int | None,
                  num_overlap: int | None) -> Segmentation:
    """The model's declared segmentation, or MSST's cross-fade chunks (config values unless overridden)."""
    declare = getattr(model, "segmentation", None)
    declared = declare() if callable(declare) else None
    if isinstance(declared, FrameSegments):
        if chunk_size not in (None, declared.segment_samples) or num_overlap not in (None, 1):
            raise ConfigError(
                f"this model runs as its authors run it: one STFT over the track in {declared.segment_frames}-frame "
                f"segments ({declared.segment_samples} samples, no overlap-add of chunks); chunk_size and "
                f"num_overlap do not apply (got {chunk_size}, {num_overlap})"
            )
        if not callable(getattr(model, "separate_segments", None)):
            raise ConfigError("a model declaring FrameSegments needs a separate_segments(x) method")
        return declared
    default = declared if isinstance(declared, CrossfadeChunks) else None
    return CrossfadeChunks(
        _positive("chunk_size", chunk_size, default.chunk_size if default else config.audio.chunk_size),
        _positive("num_overlap", num_overlap, default.num_overlap if default else config.inference.num_overlap),
    )


def _chunk_settings(segmentation: Segmentation) -> tuple[int, int]:
    """``(chunk_size, num_overlap)`` as the separator reports them (a frame segment's span, and 1)."""
    if isinstance(segmentation, FrameSegments):
        return segmentation.segment_samples, 1
    return segmentation.chunk_size, segmentation.num_overlap


def _selected_stems(stems: Sequence[str] | None, all_stems: tuple[str, ...]) -> tuple[str, ...]:
    """The requested stems (default: all) in the model's order; unknown or no stems are a :class:`ConfigError`."""
    requested = tuple(stems) if stems is not None else all_stems
    unknown = [s for s in requested if s not in all_stems]
    if unknown or not requested:
        raise ConfigError(f"unknown stems {unknown or requested}; this model gives {list(all_stems)}")
    return tuple(s for s in all_stems if s in requested)
