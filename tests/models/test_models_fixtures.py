"""The RoFormer runtime against the reference fixtures (MSST ccc011a outputs, float32 CPU).

Every folder under ``../shared/fixtures/roformer/`` is a set: config.yaml,
model.ckpt (plain state dict), forward_input/forward_output.npy and meta.json.
New sets are picked up automatically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stemflow.models import load_model
from stemflow.models.config import ModelConfig

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "roformer"
FIXTURE_SETS = sorted(p for p in FIXTURES.glob("*") if (p / "config.yaml").is_file())
FORWARD_TOLERANCE = 1e-5  # the fixtures' recommended bound; float32 noise is ~3e-8


def test_fixture_sets_are_present() -> None:
    names = {p.name for p in FIXTURE_SETS}
    assert {"bs_roformer_4stem", "mel_roformer_vocals"} <= names


def _meta(fixture: Path) -> dict:
    return json.loads((fixture / "meta.json").read_text())


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in str(text).split("x")) if str(text) else ()


@pytest.fixture(scope="module", params=FIXTURE_SETS, ids=[p.name for p in FIXTURE_SETS])
def fixture_set(request: pytest.FixtureRequest) -> tuple[Path, torch.nn.Module]:
    fixture: Path = request.param
    return fixture, load_model(fixture / "config.yaml", fixture / "model.ckpt")


def test_forward_matches_reference(fixture_set: tuple[Path, torch.nn.Module]) -> None:
    fixture, model = fixture_set
    x = torch.from_numpy(np.load(fixture / "forward_input.npy"))
    expected = np.load(fixture / "forward_output.npy")
    with torch.inference_mode():
        y = model(x).numpy()
    assert y.shape == expected.shape == tuple(_meta(fixture)["forward"]["output"]["shape"])
    diff = float(np.abs(y - expected).max())
    assert diff <= FORWARD_TOLERANCE, f"{fixture.name}: max |ours - reference| = {diff:.3g}"
    assert np.abs(expected).max() > 100 * FORWARD_TOLERANCE  # the comparison is not vacuous


def test_state_dict_layout_equals_reference(fixture_set: tuple[Path, torch.nn.Module]) -> None:
    fixture, model = fixture_set
    meta = _meta(fixture)
    expected = {key: _shape(shape) for key, shape in meta["state_dict_shapes"].items()}
    state = model.state_dict()
    assert list(state) == list(expected)  # same keys, same order
    assert {key: tuple(t.shape) for key, t in state.items()} == expected
    assert sum(t.numel() for t in state.values()) == meta["state_dict_num_values"]
    assert sum(p.numel() for p in model.parameters()) == meta["param_count"]


def test_model_carries_its_config(fixture_set: tuple[Path, torch.nn.Module]) -> None:
    fixture, model = fixture_set
    config = model.config
    assert isinstance(config, ModelConfig)
    assert config.model_type == _meta(fixture)["reference"]["model_type"]
    assert model.num_output_stems == len(config.model_stems)
    assert not model.training


def test_separate_chunks_keeps_stem_axis_and_length(fixture_set: tuple[Path, torch.nn.Module]) -> None:
    fixture, model = fixture_set
    x = torch.from_numpy(np.load(fixture / "forward_input.npy"))
    with torch.inference_mode():
        reference_layout = model(x)
        chunks = model.separate_chunks(x)
    batch, _, length = x.shape
    assert chunks.shape == (batch, model.num_output_stems, 2, length)
    if reference_layout.ndim == 3:  # Mel-Band-RoFormer squeezes a single stem
        reference_layout = reference_layout.unsqueeze(1)
    torch.testing.assert_close(chunks, reference_layout, rtol=0, atol=1e-7)


def test_separate_chunks_returns_exact_length_off_the_hop_grid(fixture_set: tuple[Path, torch.nn.Module]) -> None:
    fixture, model = fixture_set
    hop = model.stft_kwargs["hop_length"]
    x = torch.from_numpy(np.load(fixture / "forward_input.npy"))[..., : -hop // 3]
    length = x.shape[-1]
    assert length % hop != 0
    with torch.inference_mode():
        forward = model(x)
        chunks = model.separate_chunks(x)
    assert chunks.shape[-1] == length
    if forward.ndim == 3:
        forward = forward.unsqueeze(1)
    # The reference Mel forward stops at hop * floor(L / hop); up to there both agree,
    # and the tail is a real reconstruction (not zeros).
    shared = forward.shape[-1]
    assert shared == (length // hop * hop if fixture.name.startswith("mel") else length)
    torch.testing.assert_close(chunks[..., :shared], forward, rtol=0, atol=1e-6)
    if shared < length:
        assert chunks[..., shared:].abs().amax().item() > 1e-4


def test_batch_items_are_independent(fixture_set: tuple[Path, torch.nn.Module]) -> None:
    fixture, model = fixture_set
    x = torch.from_numpy(np.load(fixture / "forward_input.npy"))
    with torch.inference_mode():
        both = model.separate_chunks(x)
        first = model.separate_chunks(x[:1])
    torch.testing.assert_close(both[:1], first, rtol=0, atol=1e-6)


def test_float64_agrees_with_float32(fixture_set: tuple[Path, torch.nn.Module]) -> None:
    """float32 rounding noise only (the fixtures measured <= 2.7e-8 for the reference)."""
    fixture, model = fixture_set
    x = torch.from_numpy(np.load(fixture / "forward_input.npy"))
    expected = torch.from_numpy(np.load(fixture / "forward_output.npy")).double()
    double = load_model(fixture / "config.yaml", fixture / "model.ckpt").double()
    with torch.inference_mode():
        y = double(x.double())
    assert y.dtype == torch.float64
    assert (y - expected).abs().max().item() <= 1e-6
