"""The RoFormer runtime on CUDA: float32 matches the reference fixtures, bf16 autocast stays close."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stemflow.models import load_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "roformer"
FIXTURE_SETS = sorted(p for p in FIXTURES.glob("*") if (p / "config.yaml").is_file())


def _snr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((estimate - reference) ** 2)))


@pytest.mark.parametrize("fixture", FIXTURE_SETS, ids=[p.name for p in FIXTURE_SETS])
def test_cuda_float32_matches_reference(fixture: Path) -> None:
    model = load_model(fixture / "config.yaml", fixture / "model.ckpt").cuda()
    x = torch.from_numpy(np.load(fixture / "forward_input.npy")).cuda()
    expected = np.load(fixture / "forward_output.npy")
    with torch.inference_mode():
        y = model(x).cpu().numpy()
    assert float(np.abs(y - expected).max()) <= 1e-5


@pytest.mark.parametrize("fixture", FIXTURE_SETS, ids=[p.name for p in FIXTURE_SETS])
def test_cuda_bf16_autocast_is_close(fixture: Path) -> None:
    model = load_model(fixture / "config.yaml", fixture / "model.ckpt").cuda()
    x = torch.from_numpy(np.load(fixture / "forward_input.npy")).cuda()
    expected = np.load(fixture / "forward_output.npy")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        y = model.separate_chunks(x)
    assert y.dtype == torch.float32  # the inverse STFT runs in float32
    y_np = y.cpu().numpy()
    if expected.ndim == 3:
        expected = expected[:, None]
    assert _snr_db(y_np, expected) > 25.0
