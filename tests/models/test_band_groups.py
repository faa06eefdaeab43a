"""Grouped band kernels: same numbers as the per-band modules, MSST's layout, never stale, few operators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stemflow.models import BSRoformer, MelBandRoformer, load_model
from stemflow.models.band_groups import group_bands
from stemflow.models.bs_roformer import DEFAULT_FREQS_PER_BANDS
from stemflow.models.mel_bands import mel_band_membership
from stemflow.models.op_count import count_config_ops

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "roformer"
CONFIGS = ROOT / "configs" / "models"
FIXTURE_NAMES = ["bs_roformer_4stem", "mel_roformer_vocals"]

TINY_BS: dict[str, Any] = dict(
    dim=8, depth=1, heads=2, dim_head=8, stereo=True, time_transformer_depth=1, freq_transformer_depth=1,
    freqs_per_bands=(1,) * 8 + (2,) * 4 + (4,) * 2 + (9,), stft_n_fft=64, stft_hop_length=16, stft_win_length=64,
)
TINY_MEL: dict[str, Any] = dict(
    dim=8, depth=1, heads=2, dim_head=8, stereo=True, time_transformer_depth=1, freq_transformer_depth=1,
    num_bands=8, sample_rate=16000, stft_n_fft=256, stft_hop_length=64, stft_win_length=256,
)


def _per_band(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference's per-band path on the same weights."""
    model.grouped_band_kernels = False
    try:
        with torch.inference_mode():
            return model.separate_chunks(x)
    finally:
        model.grouped_band_kernels = True


def _grouped(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model.separate_chunks(x)
    assert model._grouped_ready, "the grouped kernels did not run"
    return out


def test_bs_default_bands_form_six_groups_by_width() -> None:
    widths = [4 * f for f in DEFAULT_FREQS_PER_BANDS]  # stereo x (re, im)
    groups = group_bands(widths)
    assert [g.width for g in groups] == [8, 16, 48, 96, 192, 516]
    assert groups[-1].bands == (60, 61) and groups[-1].widths == (512, 516)  # 128 and 129 bins share a group
    assert sorted(b for g in groups for b in g.bands) == list(range(62))


def test_mel_groups_pad_little_and_cover_every_band_once() -> None:
    widths = [4 * int(n) for n in mel_band_membership(44100, 2048, 60).sum(axis=1)]
    groups = group_bands(widths)
    assert sorted(b for g in groups for b in g.bands) == list(range(60))
    for group in groups:
        assert len(group.bands) * group.width <= 1.25 * sum(group.widths)
    assert len(groups) <= 10
    assert len(group_bands(widths, max_padding=0.0)) == len(set(widths))  # no padding: one group per width


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_grouped_kernels_match_the_golden_forward(name: str) -> None:
    model = load_model(FIXTURES / name / "config.yaml", FIXTURES / name / "model.ckpt")
    x = torch.from_numpy(np.load(FIXTURES / name / "forward_input.npy"))
    reference = torch.from_numpy(np.load(FIXTURES / name / "forward_output.npy"))
    grouped = _grouped(model, x)
    assert (grouped.reshape(reference.shape) - reference).abs().max().item() <= 1e-5
    assert (grouped - _per_band(model, x)).abs().max().item() <= 1e-6


@pytest.mark.parametrize("cls,base", [(BSRoformer, TINY_BS), (MelBandRoformer, TINY_MEL)], ids=["bs", "mel"])
@pytest.mark.parametrize("variant", [
    {}, {"stereo": False}, {"num_stems": 3}, {"mask_estimator_depth": 0}, {"mask_estimator_depth": 3},
    {"mlp_expansion_factor": 1, "num_stems": 2},
], ids=lambda v: ",".join(f"{k}={v[k]}" for k in v) or "base")
def test_grouped_kernels_match_per_band_modules_over_the_option_space(cls, base, variant) -> None:
    torch.manual_seed(0)
    model = cls(**{**base, **variant}).eval()
    with torch.no_grad():  # random, non-trivial norms and biases
        for name, parameter in model.named_parameters():
            if name.startswith(("band_split", "mask_estimators")):
                parameter.uniform_(-0.5, 0.5)
    x = 0.3 * torch.randn(2, 2, 23 * base["stft_hop_length"])
    torch.testing.assert_close(_grouped(model, x), _per_band(model, x), rtol=0, atol=1e-6)


def test_parameters_are_views_so_loads_edits_and_moves_are_never_stale() -> None:
    name = "bs_roformer_4stem"
    model = load_model(FIXTURES / name / "config.yaml", FIXTURES / name / "model.ckpt")
    x = torch.from_numpy(np.load(FIXTURES / name / "forward_input.npy"))
    first = _grouped(model, x)
    # a load writes into the stacked storage: the grouped kernels see it without any rebuild
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["mask_estimators.2.to_freqs.61.0.2.weight"].mul_(3.0)
    state["band_split.to_features.0.0.gamma"].fill_(0.5)
    model.load_state_dict(state)
    assert model.grouped_bands.is_current(model.band_split, model.mask_estimators)
    loaded = _grouped(model, x)
    assert (loaded - first).abs().max().item() > 1e-4
    torch.testing.assert_close(loaded, _per_band(model, x), rtol=0, atol=1e-6)
    # an optimizer step (training) updates them too
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).square().sum().backward()
    optimizer.step()
    model.eval()
    torch.testing.assert_close(_grouped(model, x), _per_band(model, x), rtol=0, atol=1e-6)
    # a new Parameter object, or a cast of the whole model: re-attached before the next forward
    estimator_layer = model.mask_estimators[0].to_freqs[5][0][0]
    estimator_layer.weight = torch.nn.Parameter(torch.randn_like(estimator_layer.weight))
    torch.testing.assert_close(_grouped(model, x), _per_band(model, x), rtol=0, atol=1e-6)
    model.double()
    torch.testing.assert_close(_grouped(model, x.double()), _per_band(model, x.double()), rtol=0, atol=1e-12)


def test_layout_and_parameter_count_are_msst_and_nothing_is_held_twice() -> None:
    name = "mel_roformer_vocals"
    model = load_model(FIXTURES / name / "config.yaml", FIXTURES / name / "model.ckpt")
    state = torch.load(FIXTURES / name / "model.ckpt", map_location="cpu", weights_only=True)
    assert list(model.state_dict()) == list(state)  # same keys, same order: no grouped-kernel entries
    stacked = {t.untyped_storage().data_ptr() for g in model.grouped_bands.groups for t in g.storages()}
    for key, parameter in model.named_parameters():
        if key.startswith(("band_split", "mask_estimators")):
            assert parameter.untyped_storage().data_ptr() in stacked, key


def test_training_and_grad_mode_use_the_per_band_modules() -> None:
    torch.manual_seed(0)
    model = BSRoformer(**TINY_BS)
    x = torch.randn(1, 2, 20 * 16)
    model.eval()(x).sum().backward()  # grad enabled: per-band path, gradients reach every band's weights
    for band in range(1, 15):  # band 0 is the DC bin, which zero_dc removes: no gradient there
        for key in ("band_split.to_features.{}.1.weight", "mask_estimators.0.to_freqs.{}.0.2.weight"):
            grad = model.get_parameter(key.format(band)).grad
            assert grad is not None and bool(grad.abs().sum() > 0), key.format(band)


@pytest.mark.parametrize(("config", "most"), [
    ("config_bs_roformer_384_8_2_485100.yaml", 800),  # BS-RoFormer 4-stem (registry bs-roformer-musdb18-4stem)
    ("config_vocals_mel_band_roformer_kj.yaml", 700),  # Mel-RoFormer vocals (registry mel-roformer-kj-vocals)
])
def test_operator_count_per_forward_of_the_registry_configs(config: str, most: int) -> None:
    counts = count_config_ops(CONFIGS / config)  # one 1 s chunk
    total = sum(counts.values())
    assert total <= most, counts.most_common(10)
    # the count is a property of the structure, not of the width
    assert sum(count_config_ops(CONFIGS / config, dim=32, dim_head=16).values()) == total
    assert counts["aten.linear"] + counts["aten.baddbmm"] < 130  # 62 or 60 bands x stems used to be 300-640


REGISTRY_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name not in ("registry.yaml", "spleeter_2stems.yaml"))


@pytest.mark.parametrize("config", REGISTRY_CONFIGS)
def test_every_registry_band_layout_loads_strictly_into_the_grouped_kernels(config: str, tmp_path: Path) -> None:
    """Each registry config's band layout (its bands, widths and stems; the model narrowed to ``dim`` 16):
    an MSST-layout checkpoint of new weights loads strictly, and the grouped kernels then compute with them."""
    import dataclasses

    from stemflow.models import build_model
    from stemflow.models.checkpoint import load_state_strict
    from stemflow.models.config import load_config

    loaded = load_config(CONFIGS / config)
    narrow = dataclasses.replace(loaded, model={**dict(loaded.model), "dim": 16, "dim_head": 8, "depth": 1})
    torch.manual_seed(0)
    model = build_model(narrow).eval()
    x = torch.zeros(1, 2, loaded.audio.sample_rate // 4).uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(1))
    _grouped(model, x)  # the grouped kernels are built (and cached) on the first weights
    generator = torch.Generator().manual_seed(2)
    state = {k: v + 0.01 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "model.ckpt")  # the checkpoint a community fine-tune of this layout would be
    keys = [k for k in state if k.startswith(("band_split.", "mask_estimators."))]
    assert keys and all(".to_features." in k or ".to_freqs." in k for k in keys)  # MSST names, no grouped entries
    load_state_strict(model, torch.load(tmp_path / "model.ckpt", weights_only=True), tmp_path / "model.ckpt")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    torch.testing.assert_close(_grouped(model, x), _per_band(model, x), rtol=0, atol=1e-5)
