"""Precision policy: what 'auto' means per device, validation, and the float32 rerun of an overflowing batch."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from stemflow.engine.separator import Separator
from stemflow.errors import ConfigError
from stemflow.models.config import config_from_dict
from stemflow.models.precision import AUTO_PRECISION, resolve_precision


def test_auto_is_float16_on_cuda_and_float32_elsewhere() -> None:
    assert resolve_precision("auto", "cuda") == resolve_precision("auto", "cuda:1") == "float16"
    assert AUTO_PRECISION == {"cuda": "float16"}
    assert resolve_precision("auto", "cpu") == resolve_precision("auto", torch.device("meta")) == "float32"
    assert resolve_precision("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_precision("float16", "cpu")
    with pytest.raises(ConfigError, match="auto"):  # the message lists 'auto' among the choices
        resolve_precision("fp8", "cuda")


class _Overflowing(nn.Module):
    """Gain 1 in float32; its output overflows (inf) in bfloat16 autocast, as a real overflow would."""

    def __init__(self) -> None:
        super().__init__()
        self.config = config_from_dict({
            "model_type": "test", "audio": {"chunk_size": 64, "sample_rate": 44100},
            "model": {}, "training": {"instruments": ["a"], "target_instrument": None},
            "inference": {"batch_size": 2, "num_overlap": 2}}, source="overflowing", model_type="test")
        self.num_output_stems = 1

    def separate_chunks(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled("cpu"):
            return torch.full_like(x, float("inf"))[:, None]
        return x[:, None].clone()


def test_separator_resolves_auto_and_reruns_an_overflowing_batch_in_float32(caplog) -> None:
    assert Separator(_Overflowing(), precision="auto").precision == "float32"
    separator = Separator(_Overflowing(), precision="bfloat16")
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 300)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        stems = separator.separate(audio, 44100)
    np.testing.assert_allclose(stems["a"], audio, atol=1e-6)
    assert "running it again in float32" in caplog.text
    assert separator.output_settings == {"chunk_size": 64, "num_overlap": 2, "precision": "bfloat16"}
