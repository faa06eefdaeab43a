"""The model's forward, eager or through ``torch.compile``, always on one static batch shape when compiled.

:class:`ModelForward` is what the :class:`stemflow.engine.separator.Separator`
calls for each batch. Eagerly it is the model's entry point (``separate_chunks``
or, for a model run in STFT-frame segments, ``separate_segments``). Compiled,
it is that entry point through ``torch.compile(dynamic=False)``, and every
batch is padded with silent rows to ``batch_size`` rows (the extra rows are
dropped from the output), so the compiled graph sees one shape per model and
never recompiles across tracks of different lengths, short last batches
included: one compilation per model, batch size and chunk size.

``mode``: ``"default"`` (inductor kernels: fused norms, rotary, GLU and the
axial transposes), ``"reduce-overhead"`` (the same plus CUDA graphs: the whole
forward replayed as one graph launch; on a GPU only, and only because the
shapes are static) or ``"max-autotune"``. Before each compiled call the model's
``prepare_inference()`` (if it has one) brings derived inference tensors up to
date: code that checks them cannot run inside the graph. If compiling fails
(no C++ compiler, an unsupported op), the forward falls back to eager once and
logs a warning.

On the CPU with one torch thread, inductor writes the whole model's
overlap-add (the iSTFT's ``unfold_backward``, 4 000 small loops) as one serial
C++ function of 45 000 lines, which GCC had not built after 50 minutes at
``-O3``; with two or more threads the same loops are OpenMP regions, which GCC
outlines into small functions and builds in minutes (the tiny Mel-RoFormer
fixture: 427 s on 2 loaded cores, 3e-8 from eager). So a CPU compile generates
its kernels for at least :data:`MIN_CPU_COMPILE_THREADS` threads
(``torch._inductor.config.cpp.threads``, patched around the compiled calls).
GPUs keep the ``mode`` presets.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch
import torch._inductor.config as inductor_config
from torch import nn

from stemflow.errors import ConfigError

logger = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")

MIN_CPU_COMPILE_THREADS = 2
"""Fewest threads a CPU compile generates its kernels for (see the module docstring)."""


def _device_type(model: nn.Module) -> str:
    """Where the model's weights are (``"cpu"`` for a model without any)."""
    first = next(iter(model.parameters()), None)
    return first.device.type if first is not None else "cpu"


class ModelForward:
    """``forward(x [rows, 2, L]) -> [rows, S, 2, L]``: one model entry point, eager or compiled (module docstring)."""

    def __init__(self, model: nn.Module, entry_point: str, *, batch_size: int, compile: bool = False,
                 mode: str = "default") -> None:
        if mode not in COMPILE_MODES:
            raise ConfigError(f"compile mode must be one of {list(COMPILE_MODES)}, got {mode!r}")
        self.model = model
        self.batch_size = batch_size
        self.mode = mode
        self._eager: Callable[[torch.Tensor], torch.Tensor] = getattr(model, entry_point)
        self._prepare: Callable[[], object] | None = getattr(model, "prepare_inference", None)
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        if compile:
            try:
                self._compiled = torch.compile(self._eager, dynamic=False, mode=mode)
            except Exception as e:  # noqa: BLE001 - any backend failure falls back to eager
                logger.warning("torch.compile is not available (%s); running eagerly", e)

    def _inductor_settings(self) -> contextlib.AbstractContextManager[object]:
        """OpenMP kernels while a CPU model compiles (module docstring); nothing to change elsewhere."""
        if _device_type(self.model) == "cpu":
            return inductor_config.patch({"cpp.threads": max(MIN_CPU_COMPILE_THREADS, torch.get_num_threads())})
        return contextlib.nullcontext()

    @property
    def compiled(self) -> bool:
        """Whether batches go through the compiled graph (False after a fallback)."""
        return self._compiled is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._compiled is None:
            return self._eager(x)
        rows = x.shape[0]
        if rows < self.batch_size:  # one static shape: a short last batch would recompile
            x = torch.cat([x, x.new_zeros((self.batch_size - rows, *x.shape[1:]))])
        if self._prepare is not None:
            self._prepare()
        try:
            with self._inductor_settings():  # compilation happens inside the first call
                return self._compiled(x)[:rows]
        except Exception as e:  # noqa: BLE001 - compilation errors surface at the first call
            logger.warning("torch.compile failed (%s: %s); falling back to eager", type(e).__name__, e)
            self._compiled = None
            return self._eager(x[:rows])
