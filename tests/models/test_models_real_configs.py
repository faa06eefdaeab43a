"""The published (real-size) configs build with the reference's parameter counts.

Expected counts come from instantiating the MSST reference classes (commit
ccc011a) once, outside this repository, with each config's ``model:`` section:
``sum(p.numel() for p in model.parameters())`` (shared rotary ``freqs`` counted
once) and the total number of values in ``state_dict()`` (``freqs`` counted
under every attention layer, as checkpoints store it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stemflow.models import build_model
from stemflow.models.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"

# file -> (model_type, parameters, state-dict values, state-dict tensors)
REFERENCE_COUNTS = {
    "model_bs_roformer_ep_317_sdr_12.9755.yaml": ("bs_roformer", 159_758_092, 159_758_796, 699),
    "model_mel_band_roformer_ep_3005_sdr_11.4360.yaml": ("mel_band_roformer", 251_869_636, 251_870_340, 828),
    "config_musdb18_bs_roformer.yaml": ("bs_roformer", 24_591_340, 24_591_660, 567),
    "config_vocals_mel_band_roformer_kj.yaml": ("mel_band_roformer", 228_202_852, 228_203_172, 684),
    "model_bs_roformer_ep_937_sdr_10.5309.yaml": ("bs_roformer", 98_194_828, 98_195_532, 699),
    "config_bs_roformer_384_8_2_485100.yaml": ("bs_roformer", 131_704_164, 131_704_612, 1355),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_real_config_has_reference_parameter_count(name: str) -> None:
    model_type, parameters, values, tensors = REFERENCE_COUNTS[name]
    config = load_config(CONFIGS / name)
    assert config.model_type == model_type
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        model = build_model(config)
    assert sum(p.numel() for p in model.parameters()) == parameters
    state = model.state_dict()
    assert (sum(t.numel() for t in state.values()), len(state)) == (values, tensors)


def test_small_real_config_runs_a_chunk() -> None:
    config = load_config(CONFIGS / "config_musdb18_bs_roformer.yaml")
    torch.manual_seed(0)
    model = build_model(config).eval()
    hop = config.model["stft_hop_length"]
    x = 0.1 * torch.randn(1, 2, 16 * hop)
    with torch.inference_mode():
        y = model.separate_chunks(x)
    assert y.shape == (1, 1, 2, 16 * hop)
    assert torch.isfinite(y).all()


@pytest.mark.slow
def test_large_mel_config_runs_a_chunk() -> None:
    config = load_config(CONFIGS / "model_mel_band_roformer_ep_3005_sdr_11.4360.yaml")
    torch.manual_seed(0)
    model = build_model(config).eval()
    x = 0.1 * torch.randn(1, 2, 11025)  # a quarter second: runs the full depth, cheaply
    with torch.inference_mode():
        y = model.separate_chunks(x)
    assert y.shape == (1, 1, 2, 11025)
    assert torch.isfinite(y).all()
