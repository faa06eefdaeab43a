"""Fixtures of the engine tests: small stand-in models with known outputs.

``stand_ins`` gives ``make_config(chunk_size, num_overlap, stems, target)``,
``GainModel`` (stem ``s`` = ``gains[s] * x``), ``ConvModel`` (a deterministic,
nonlinear, position-dependent model: chunk edges and windows matter),
``random_mix(length, seed)`` and ``SAMPLE_RATE``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from stemflow.models.config import ModelConfig, config_from_dict

SAMPLE_RATE = 44100


def make_config(
    chunk_size: int, num_overlap: int, stems: tuple[str, ...] = ("vocals",), target: str | None = None
) -> ModelConfig:
    """A config for a stand-in model."""
    data = {
        "model_type": "test",
        "audio": {"chunk_size": chunk_size, "sample_rate": SAMPLE_RATE},
        "model": {},
        "training": {"instruments": list(stems), "target_instrument": target},
        "inference": {"num_overlap": num_overlap, "batch_size": 1},
    }
    return config_from_dict(data)


class GainModel(nn.Module):
    """``separate_chunks``: stem ``s`` is ``gains[s] * x`` (identity for gain 1)."""

    def __init__(self, config: ModelConfig, gains: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.config = config
        self.num_output_stems = len(config.model_stems)
        self.register_buffer("gains", torch.tensor(gains or (1.0,) * self.num_output_stems))

    def separate_chunks(self, x: torch.Tensor) -> torch.Tensor:
        return self.gains.view(1, -1, 1, 1) * x.unsqueeze(1)


class ConvModel(nn.Module):
    """A deterministic nonlinear, position-dependent stand-in: chunk edges and windows matter."""

    def __init__(self, config: ModelConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.num_output_stems = len(config.model_stems)
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv1d(2, 2 * self.num_output_stems, 9, padding=4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 0.3)
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=generator) * 0.01)

    def separate_chunks(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length = x.shape
        ramp = torch.linspace(0.5, 1.5, length, device=x.device)
        y = torch.tanh(self.conv(x)) * ramp
        return y.view(batch, self.num_output_stems, 2, length)


def random_mix(length: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.5 * rng.standard_normal((2, length))).astype(np.float32)


@pytest.fixture(scope="session")
def stand_ins() -> SimpleNamespace:
    """The stand-in models and helpers of this folder's tests."""
    return SimpleNamespace(SAMPLE_RATE=SAMPLE_RATE, make_config=make_config, GainModel=GainModel,
                           ConvModel=ConvModel, random_mix=random_mix)
