"""The engine on CUDA: pinned-memory transfers, float32 equal to the CPU reference, bf16/fp16 autocast close."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stemflow.engine.separator import Separator
from stemflow.models import load_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "roformer"
SETS = ["bs_roformer_4stem", "mel_roformer_vocals"]


def _sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2)))


@pytest.mark.parametrize("name", SETS)
def test_cuda_float32_matches_reference_for_any_batch_size(name):
    folder = FIXTURES / name
    model = load_model(folder / "config.yaml", folder / "model.ckpt")
    mix = np.load(folder / "demix_input.npy")
    expected = np.load(folder / "demix_output.npy")
    for batch_size in (1, 2, 4):
        out = Separator(model, device="cuda", batch_size=batch_size).separate(mix, 44100)
        got = np.stack([out[s] for s in model.config.model_stems])
        assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", SETS)
def test_cuda_autocast_is_close_to_float32(name, precision):
    folder = FIXTURES / name
    model = load_model(folder / "config.yaml", folder / "model.ckpt")
    mix = np.load(folder / "demix_input.npy")
    expected = np.load(folder / "demix_output.npy")
    out = Separator(model, device="cuda", batch_size=2, precision=precision).separate(mix, 44100)
    for i, stem in enumerate(model.config.model_stems):
        assert out[stem].dtype == np.float32
        sdr = _sdr(expected[i], out[stem])
        assert sdr > 20, f"{stem}: {sdr:.1f} dB"
        assert np.abs(out[stem] - expected[i]).max() > 0  # really ran in reduced precision
