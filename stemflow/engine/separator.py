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

from stemflow.engine.chunking import Chunk, ChunkPlan, chunk_source_indices, plan_chunks
from stemflow.engine.overlap_add import SeparatedBlock, TensorSource, TrackJob, TrackSource, check_finite
from stemflow.errors import AudioDecodeError, ConfigError, StemflowError
from stemflow.models.config import ModelConfig

logger = logging.getLogger(__name__)


PRECISIONS: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
"""Precision name -> the autocast dtype (``"float32"`` runs without autocast)."""


class Separator:
    """Separates stereo tracks with one model, by chunked overlap-add.

    ``model``: see the module docstring; it is put in eval mode and moved to
    ``device``. ``chunk_size`` / ``num_overlap`` / ``batch_size`` default to the
    config's ``audio.chunk_size``, ``inference.num_overlap`` and
    ``inference.batch_size``. ``precision``: "float32", or "bfloat16" /
    "float16" autocast (bfloat16 also on CPU; float16 only on CUDA); sums are
    always float32. ``stems``: the stems to return (default: all of
    ``config.stems``, i.e. the model's plus the complement ``mixture - target``
    of a single-target model). ``sample_rate``: the rate the model runs at
    (default: ``config.audio.sample_rate``); inputs must already be at it.
    ``compile``: run ``separate_chunks`` through ``torch.compile`` (worth it on
    GPUs for long jobs: the first batches pay the compilation); if compilation
    fails the separator falls back to eager mode and logs a warning.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "cpu",
        chunk_size: int | None = None,
        num_overlap: int | None = None,
        batch_size: int | None = None,
        precision: str = "float32",
        stems: Sequence[str] | None = None,
        sample_rate: int | None = None,
        compile: bool = False,
    ) -> None:
        config = _model_config(model)
        self.config = config
        self.device = torch.device(device)
        self.chunk_size = _positive("chunk_size", chunk_size, config.audio.chunk_size)
        self.num_overlap = _positive("num_overlap", num_overlap, config.inference.num_overlap)
        self.batch_size = _positive("batch_size", batch_size, config.inference.batch_size)
        self.sample_rate = _positive("sample_rate", sample_rate, config.audio.sample_rate)
        plan_chunks(1, self.chunk_size, self.num_overlap)  # validates the geometry early
        self.precision = _checked_precision(precision, self.device)
        self.model_stems: tuple[str, ...] = config.model_stems
        self.all_stems: tuple[str, ...] = config.stems
        self.stems: tuple[str, ...] = _selected_stems(stems, self.all_stems)
        self.model = model.eval().to(self.device)
        self._batch: torch.Tensor | None = None
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self.model.separate_chunks
        self.compiled = False
        if compile:
            try:
                self._forward = torch.compile(self.model.separate_chunks, dynamic=False)
                self.compiled = True
            except Exception as e:  # noqa: BLE001 - any backend failure falls back to eager
                logger.warning("torch.compile is not available (%s); running eagerly", e)

    def plan(self, num_samples: int) -> ChunkPlan:
        """The chunk plan of a track of ``num_samples`` samples with this separator's settings."""
        return plan_chunks(num_samples, self.chunk_size, self.num_overlap)

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
            used = indices[: chunk.valid] if chunk.tail_pad == "zeros" else indices
            first, stop = int(used.min()), int(used.max()) + 1
            window = job.source.read(first, stop)
            slot[:, : used.shape[0]] = window.index_select(1, used - first)
            slot[:, used.shape[0] :] = 0
        return self._batch[: len(batch)]

    def run_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """Run the model on chunks ``[B, 2, chunk_size]``; returns float32 CPU ``[B, S, 2, chunk_size]``."""
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])
            if self.precision != "float32"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            x = batch.to(self.device, non_blocking=True)
            y = self._run_model(x)
        expected = (batch.shape[0], len(self.model_stems), 2, batch.shape[-1])
        if tuple(y.shape) != expected:
            raise StemflowError(f"model returned shape {tuple(y.shape)}, expected {expected} [B, S, 2, L]")
        return y.to(device="cpu", dtype=torch.float32)

    def _run_model(self, x: torch.Tensor) -> torch.Tensor:
        """The model's ``separate_chunks``, compiled if asked; a compile failure falls back to eager once."""
        if not self.compiled:
            return self.model.separate_chunks(x)
        rows = x.shape[0]
        if rows < self.batch_size:  # keep one static shape: a short tail batch would recompile
            x = torch.cat([x, x.new_zeros((self.batch_size - rows, *x.shape[1:]))])
        try:
            return self._forward(x)[:rows]
        except Exception as e:  # noqa: BLE001 - compilation errors surface at the first call
            logger.warning("torch.compile failed (%s: %s); falling back to eager", type(e).__name__, e)
            self.compiled = False
            self._forward = self.model.separate_chunks
            return self.model.separate_chunks(x[:rows])


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


def _checked_precision(precision: str, device: torch.device) -> str:
    """``precision`` if it is a key of :data:`PRECISIONS` usable on ``device``; else a :class:`ConfigError`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "float16" and device.type != "cuda":
        raise ConfigError("precision 'float16' needs a CUDA device; use 'bfloat16' or 'float32' on CPU")
    return precision


def _selected_stems(stems: Sequence[str] | None, all_stems: tuple[str, ...]) -> tuple[str, ...]:
    """The requested stems (default: all) in the model's order; unknown or no stems are a :class:`ConfigError`."""
    requested = tuple(stems) if stems is not None else all_stems
    unknown = [s for s in requested if s not in all_stems]
    if unknown or not requested:
        raise ConfigError(f"unknown stems {unknown or requested}; this model gives {list(all_stems)}")
    return tuple(s for s in all_stems if s in requested)
