"""Building models from configs: registry, argument validation, and the full option space.

``expected_state_shapes`` re-derives the reference state-dict layout from the
MSST source (models/bs_roformer/{bs_roformer,mel_band_roformer}.py at ccc011a)
independently of our modules; it is checked against the fixtures' recorded
layouts first, then used for option combinations no fixture covers.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from stemflow.errors import ConfigError
from stemflow.models import (
    ARCHITECTURES,
    BSRoformer,
    MelBandRoformer,
    build_model,
    constructor_arguments,
    get_architecture,
    register_architecture,
)
from stemflow.models.bs_roformer import DEFAULT_FREQS_PER_BANDS
from stemflow.models.config import config_from_dict, load_config
from stemflow.models.mel_bands import mel_band_membership

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "roformer"
TINY_BANDS = (1,) * 8 + (2,) * 4 + (4,) * 2 + (9,)  # 33 bins = stft_n_fft 64


def expected_state_shapes(model_type: str, kw: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The reference's state-dict keys and shapes for constructor arguments ``kw``."""
    is_mel = model_type == "mel_band_roformer"
    dim, heads, dim_head = kw["dim"], kw.get("heads", 8), kw.get("dim_head", 64)
    channels = 2 if kw.get("stereo", False) else 1
    inner = heads * dim_head
    out: dict[str, tuple[int, ...]] = {}

    def transformer(prefix: str, depth: int, linear: bool) -> None:
        for layer in range(depth):
            attn = f"{prefix}layers.{layer}.0."
            if linear:  # LinearAttention: temperature, norm, to_qkv Sequential[0], to_out Sequential[1]
                out[attn + "temperature"] = (heads, 1, 1)
                out[attn + "norm.gamma"] = (dim,)
                out[attn + "to_qkv.0.weight"] = (3 * inner, dim)
                out[attn + "to_out.1.weight"] = (dim, inner)
            else:
                if kw.get("use_pope", False):  # PoPE_pytorch.PoPE: learned key phase bias, saved inv_freqs
                    out[attn + "pope_embed.bias"] = (heads, dim_head)
                    out[attn + "pope_embed.inv_freqs"] = (dim_head,)
                else:
                    out[attn + "rotary_embed.freqs"] = (dim_head // 2,)
                out[attn + "norm.gamma"] = (dim,)
                out[attn + "to_qkv.weight"] = (3 * inner, dim)
                out[attn + "to_gates.weight"] = (heads, dim)
                out[attn + "to_gates.bias"] = (heads,)
                out[attn + "to_out.0.weight"] = (dim, inner)
            ff = f"{prefix}layers.{layer}.1.net."
            out.update({ff + "0.gamma": (dim,), ff + "1.weight": (4 * dim, dim), ff + "1.bias": (4 * dim,)})
            out.update({ff + "4.weight": (dim, 4 * dim), ff + "4.bias": (dim,)})
        if is_mel:  # Mel transformers end with their own norm; BS passes norm_output=False
            out[prefix + "norm.gamma"] = (dim,)

    linear_depth = kw.get("linear_transformer_depth", 0)
    for block in range(kw["depth"]):
        index = 0
        if linear_depth > 0:
            transformer(f"layers.{block}.0.", linear_depth, linear=True)
            index = 1
        transformer(f"layers.{block}.{index}.", kw.get("time_transformer_depth", 2), linear=False)
        transformer(f"layers.{block}.{index + 1}.", kw.get("freq_transformer_depth", 2), linear=False)
    if not is_mel:
        out["final_norm.gamma"] = (dim,)

    if is_mel:
        membership = mel_band_membership(kw.get("sample_rate", 44100), kw.get("stft_n_fft", 2048), kw.get("num_bands", 60))
        bins_per_band = membership.sum(axis=1).tolist()
    else:
        bins_per_band = list(kw["freqs_per_bands"])
    features = [2 * bins * channels for bins in bins_per_band]
    for band, width in enumerate(features):
        out[f"band_split.to_features.{band}.0.gamma"] = (width,)
        out[f"band_split.to_features.{band}.1.weight"] = (dim, width)
        out[f"band_split.to_features.{band}.1.bias"] = (dim,)

    depth = kw.get("mask_estimator_depth", 1 if is_mel else 2)
    hidden = dim * kw.get("mlp_expansion_factor", 4)
    num_hidden = depth if is_mel else max(depth - 1, 0)  # Mel MLP: one Linear more than BS
    for stem in range(kw.get("num_stems", 1)):
        for band, width in enumerate(features):
            dims = [dim] + [hidden] * num_hidden + [2 * width]
            for layer, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
                prefix = f"mask_estimators.{stem}.to_freqs.{band}.0.{2 * layer}."
                out[prefix + "weight"] = (d_out, d_in)
                out[prefix + "bias"] = (d_out,)
    return out


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("fixture", sorted(p for p in FIXTURES.glob("*") if (p / "config.yaml").is_file()), ids=lambda p: p.name)
def test_layout_derivation_matches_fixture(fixture: Path) -> None:
    config = load_config(fixture / "config.yaml")
    meta = json.loads((fixture / "meta.json").read_text())
    recorded = {k: tuple(int(n) for n in v.split("x")) for k, v in meta["state_dict_shapes"].items()}
    assert expected_state_shapes(config.model_type, dict(config.model)) == recorded


BS_BASE: dict[str, Any] = dict(
    dim=8, depth=2, heads=2, dim_head=8, stereo=True, time_transformer_depth=1, freq_transformer_depth=1,
    freqs_per_bands=TINY_BANDS, stft_n_fft=64, stft_hop_length=16, stft_win_length=64,
)
MEL_BASE: dict[str, Any] = dict(
    dim=8, depth=2, heads=2, dim_head=8, stereo=True, time_transformer_depth=1, freq_transformer_depth=1,
    num_bands=8, sample_rate=16000, stft_n_fft=256, stft_hop_length=64, stft_win_length=256,
)
VARIANTS: list[dict[str, Any]] = [
    dict(skip_connection=True, depth=3),
    dict(zero_dc=False),
    dict(zero_dc=True),
    dict(linear_transformer_depth=1),
    dict(linear_transformer_depth=2, num_stems=3),
    dict(stereo=False),
    dict(num_stems=2),
    dict(mask_estimator_depth=1),
    dict(mask_estimator_depth=3),
    dict(mlp_expansion_factor=4),
    dict(use_torch_checkpoint=True),
    dict(flash_attn=False, linear_transformer_depth=1),
    dict(time_transformer_depth=2, freq_transformer_depth=0),
    dict(use_pope=True),
    dict(use_pope=True, linear_transformer_depth=1, flash_attn=False),
    dict(stft_win_length=64, stft_window_fn="hamming_window", stft_normalized=True),
    dict(attn_dropout=0.1, ff_dropout=0.1, multi_stft_resolution_loss_weight=1.0,
         multi_stft_resolutions_window_sizes=(4096, 2048), multi_stft_hop_size=147, multi_stft_normalized=False),
]


@pytest.mark.parametrize("model_type", ["bs_roformer", "mel_band_roformer"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={v[k]}" for k in v)[:60])
def test_option_space_builds_runs_and_has_reference_layout(model_type: str, variant: dict[str, Any]) -> None:
    kw = {**(BS_BASE if model_type == "bs_roformer" else MEL_BASE), **variant}
    torch.manual_seed(0)
    model = get_architecture(model_type)(**kw).eval()
    assert _shapes(model) == expected_state_shapes(model_type, kw)

    channels = 2 if kw["stereo"] else 1
    length = 37 * kw["stft_hop_length"]
    x = torch.randn(2, channels, length) * 0.3
    with torch.inference_mode():
        y = model(x)
    stems = kw.get("num_stems", 1)
    if model_type == "mel_band_roformer" and stems == 1:
        assert y.shape == (2, channels, length)
    else:
        assert y.shape == (2, stems, channels, length)
    assert torch.isfinite(y).all() and y.abs().amax() > 0
    with torch.inference_mode():
        chunks = model.separate_chunks(torch.randn(3, 2, length + 5))
    assert chunks.shape == (3, stems, 2, length + 5)


def test_mono_input_without_channel_axis() -> None:
    model = BSRoformer(**{**BS_BASE, "stereo": False}).eval()
    x = torch.randn(2, 40 * 16)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), model(x[:, None]), rtol=0, atol=0)
        # a mono model separates each channel of a stereo chunk on its own
        both = model.separate_chunks(torch.stack([x, 2 * x], dim=1))
        torch.testing.assert_close(both[:, :, 1], model(2 * x)[:, :, 0], rtol=0, atol=1e-6)


def test_zero_dc_only_removes_the_lowest_band() -> None:
    """zero_dc zeroes the DC bin before the inverse STFT: the outputs with and without it
    differ only by a component within the Hann window's DC main lobe (|f| < 2 bins)."""
    torch.manual_seed(0)
    kw = {**BS_BASE, "depth": 1}
    n_fft, length = kw["stft_n_fft"], 128 * kw["stft_hop_length"]
    x = 0.3 + 0.2 * torch.randn(1, 2, length)
    with torch.inference_mode():
        on = BSRoformer(**kw, zero_dc=True).eval()
        off = BSRoformer(**kw, zero_dc=False).eval()
        off.load_state_dict(on.state_dict())
        difference = (off(x) - on(x))[..., n_fft:-n_fft]
    power = torch.fft.rfft(difference, dim=-1).abs().square()
    lobe = 2 * difference.shape[-1] // n_fft + 1
    assert power.sum() > 1e-6
    assert power[..., :lobe].sum() / power.sum() > 0.99


def test_torch_checkpoint_only_in_training_and_same_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    import stemflow.models.roformer_base as base

    calls: list[str] = []
    real_checkpoint = base.checkpoint

    def counting_checkpoint(function, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(type(function).__name__)
        return real_checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(base, "checkpoint", counting_checkpoint)
    model = BSRoformer(**BS_BASE, use_torch_checkpoint=True)
    x = torch.randn(1, 2, 32 * 16)
    with torch.inference_mode():
        model.eval()(x)
    assert calls == []  # never in eval mode
    model.train()(x).sum().backward()
    # band split, 2 blocks x (time, freq) transformers, one mask estimator
    assert calls == ["BandSplit"] + ["Transformer"] * 4 + ["MaskEstimator"]


def test_torch_checkpoint_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = BSRoformer(**BS_BASE)
    checkpointed = BSRoformer(**BS_BASE, use_torch_checkpoint=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 2, 32 * 16)
    for model in (plain, checkpointed):
        model.train()
        torch.manual_seed(1)  # same dropout masks
        model(x).square().sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_registry_lists_roformers_and_rejects_unknown_names() -> None:
    assert ARCHITECTURES["bs_roformer"] is BSRoformer
    assert ARCHITECTURES["mel_band_roformer"] is MelBandRoformer
    with pytest.raises(ConfigError, match="unknown architecture 'demucs'.*bs_roformer.*mel_band_roformer"):
        get_architecture("demucs")


class _Identity(nn.Module):
    def __init__(self, *, num_stems: int = 1, gain: float = 1.0) -> None:
        super().__init__()
        self.num_output_stems = num_stems
        self.gain = gain


def test_register_architecture_then_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stemflow.models.ARCHITECTURES", dict(ARCHITECTURES))
    import stemflow.models as models

    register_architecture("identity", _Identity)
    assert models.ARCHITECTURES["identity"] is _Identity
    register_architecture("identity", _Identity)  # same class again: fine
    with pytest.raises(ConfigError, match="already registered"):
        register_architecture("identity", BSRoformer)
    config = config_from_dict(
        {"model_type": "identity", "audio": {"chunk_size": 8}, "model": {"gain": 2.0}, "training": {"instruments": ["a"]}}
    )
    assert build_model(config).gain == 2.0
    with pytest.raises(ConfigError, match="must be an nn.Module subclass"):
        register_architecture("bad", dict)  # type: ignore[arg-type]


def _config(model: dict[str, Any], model_type: str = "bs_roformer"):
    return config_from_dict(
        {"model_type": model_type, "audio": {"chunk_size": 512}, "model": model, "training": {"instruments": ["v"]}},
        source="cfg.yaml",
    )


SHARED_ARGUMENTS = {
    "dim": None, "depth": None, "stereo": False, "num_stems": 1, "time_transformer_depth": 2,
    "freq_transformer_depth": 2, "linear_transformer_depth": 0, "dim_head": 64, "heads": 8, "flash_attn": True,
    "dim_freqs_in": 1025, "stft_n_fft": 2048, "stft_hop_length": 512, "stft_win_length": 2048,
    "stft_normalized": False, "stft_window_fn": None, "zero_dc": True, "multi_stft_resolution_loss_weight": 1.0,
    "multi_stft_resolutions_window_sizes": (4096, 2048, 1024, 512, 256), "multi_stft_hop_size": 147,
    "multi_stft_normalized": False, "multi_stft_window_fn": None, "mlp_expansion_factor": 4,
    "use_torch_checkpoint": False, "skip_connection": False, "use_pope": False,
}
BS_ARGUMENTS = {**SHARED_ARGUMENTS, "attn_dropout": 0.0, "ff_dropout": 0.0, "mask_estimator_depth": 2,
                "freqs_per_bands": DEFAULT_FREQS_PER_BANDS}
MEL_ARGUMENTS = {**SHARED_ARGUMENTS, "attn_dropout": 0.1, "ff_dropout": 0.1, "mask_estimator_depth": 1,
                 "num_bands": 60, "sample_rate": 44100, "match_input_audio_length": False}


@pytest.mark.parametrize(("cls", "arguments"), [(BSRoformer, BS_ARGUMENTS), (MelBandRoformer, MEL_ARGUMENTS)])
def test_constructors_take_the_reference_arguments_and_defaults(
    cls: type[nn.Module], arguments: dict[str, Any]
) -> None:
    """The MSST constructor arguments, as the signature shows them (config validation reads it)."""
    parameters = inspect.signature(cls).parameters
    defaults = {name: None if p.default is inspect.Parameter.empty else p.default for name, p in parameters.items()}
    assert defaults == arguments
    assert parameters["dim"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert constructor_arguments(cls) == (set(arguments), {"dim", "depth"}, False)
    with pytest.raises(TypeError, match="bogus"):
        cls(8, depth=1, bogus=1)


def test_unknown_model_keys_are_listed_with_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        build_model(_config({**BS_BASE, "num_band": 3, "sample_rate": 44100}))
    message = str(info.value)
    assert "cfg.yaml" in message and "['num_band', 'sample_rate']" in message  # BS takes no sample_rate
    assert "freqs_per_bands" in message and "skip_connection" in message


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"depth": None}, "missing required \\['depth'\\]"),
        ({"freqs_per_bands": (1, 2, 3)}, "must add up to 33"),
        ({"freqs_per_bands": (33,)}, "at least 2 bands"),
        ({"stft_window_fn": "nuttall"}, "stft_window_fn 'nuttall'"),
        ({"heads": 0}, "heads must be an integer >= 1"),
        ({"dim": 8.5}, "dim must be an integer"),
        ({"attn_dropout": 2.0}, "attn_dropout"),
        ({"stft_win_length": 128}, "stft_hop_length <= stft_win_length <= stft_n_fft"),
        ({"stft_win_length": 8}, "stft_hop_length <= stft_win_length <= stft_n_fft"),
    ],
)
def test_invalid_values_raise_config_error(change: dict[str, Any], pattern: str) -> None:
    model = {k: v for k, v in {**BS_BASE, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=pattern):
        build_model(_config(model))


def test_yaml_lists_are_accepted_as_tuples() -> None:
    model = build_model(_config({**BS_BASE, "freqs_per_bands": list(TINY_BANDS)}))
    assert isinstance(model, BSRoformer) and model.freqs_per_bands == TINY_BANDS
