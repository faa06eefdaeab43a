"""Counting the aten operators a forward calls: the proxy for GPU kernel launches.

On a GPU every aten call of an eager forward is (at least) one kernel launch
plus its Python and dispatcher overhead, so for small kernels the count, not
the arithmetic, sets the time. :class:`OpCounter` is a ``TorchDispatchMode``
that counts each call by operator (views included: they cost dispatch time
too). The count of a Roformer forward does not depend on the model width,
only on its structure (depth, bands, stems) and on which code path runs, so
:func:`count_config_ops` counts a registry config with a narrow width
(``dim`` and ``dim_head`` replaced) to keep it cheap on a CPU.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from stemflow.models.config import load_config


class OpCounter(TorchDispatchMode):
    """Counts every aten operator call made while it is active: ``counts[name]``, :attr:`total`."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """All calls counted so far."""
        return sum(self.counts.values())


def count_ops(function: Callable[..., Any], *args: Any) -> Counter[str]:
    """Operator calls of one ``function(*args)`` under ``torch.inference_mode`` (after one warm-up call)."""
    with torch.inference_mode():
        function(*args)  # caches (rotary tables, grouped kernels) are filled outside the count
        with OpCounter() as counter:
            function(*args)
    return counter.counts


def count_config_ops(config_path: str | Path, *, seconds: float = 1.0, dim: int = 16, dim_head: int = 8,
                     batch: int = 1) -> Counter[str]:
    """Operator calls of one ``separate_chunks`` of a config's model on ``seconds`` of stereo audio.

    Built with random weights at width ``dim`` (heads of ``dim_head``): the
    same operators as at full width, at a fraction of the cost.
    """
    from stemflow.models import build_model  # the registry imports this package's models

    config = load_config(config_path)
    model_arguments = {**dict(config.model), "dim": dim, "dim_head": dim_head}
    model = build_model(dataclasses.replace(config, model=model_arguments)).eval()
    samples = round(seconds * config.audio.sample_rate)
    audio = torch.zeros(batch, 2, samples).uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(0))
    return count_ops(model.separate_chunks, audio)
