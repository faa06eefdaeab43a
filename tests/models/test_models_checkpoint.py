"""Checkpoint reading (safe formats, wrappers) and strict loading with useful errors."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from stemflow.errors import CheckpointError
from stemflow.models import BSRoformer, load_checkpoint_state, load_model, load_state_strict

TINY_BANDS = (1,) * 8 + (2,) * 4 + (4,) * 2 + (9,)  # 33 bins = stft_n_fft 64
TINY_YAML = f"""
audio: {{chunk_size: 512, sample_rate: 44100}}
model:
  dim: 8
  depth: 2
  stereo: true
  num_stems: 2
  heads: 2
  dim_head: 8
  time_transformer_depth: 1
  freq_transformer_depth: 1
  freqs_per_bands: {list(TINY_BANDS)}
  stft_n_fft: 64
  stft_hop_length: 16
  stft_win_length: 64
training: {{instruments: [vocals, other]}}
"""


def _tiny_model() -> BSRoformer:
    torch.manual_seed(0)
    return BSRoformer(
        8, depth=2, stereo=True, num_stems=2, heads=2, dim_head=8, time_transformer_depth=1,
        freq_transformer_depth=1, freqs_per_bands=TINY_BANDS, stft_n_fft=64, stft_hop_length=16,
        stft_win_length=64,
    ).eval()


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path


def _state() -> dict[str, torch.Tensor]:
    # Perturb every weight so that a wrong or partial load would change outputs. The rotary
    # freqs stay as they are: one module per axis is shared by all layers (as in the reference).
    generator = torch.Generator().manual_seed(1)
    return {
        k: v if k.endswith("rotary_embed.freqs") else v + 0.1 * torch.randn(v.shape, generator=generator)
        for k, v in _tiny_model().state_dict().items()
    }


def _loaded_output(model: torch.nn.Module) -> torch.Tensor:
    x = torch.linspace(-0.5, 0.5, 2 * 2 * 512).reshape(2, 2, 512).sin()
    with torch.inference_mode():
        return model(x)


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s, "epoch": 7},
        lambda s: {"model_state_dict": s, "optimizer_state_dict": {"lr": 1e-4}},
        lambda s: {"state": s},
        lambda s: {"state": {"state_dict": s}},
        lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}},
    ],
    ids=["plain", "state_dict", "model_state_dict", "state", "nested", "dataparallel"],
)
def test_wrapped_checkpoints_load(tmp_path: Path, config_path: Path, wrap) -> None:
    state = _state()
    path = tmp_path / "model.ckpt"
    torch.save(wrap(state), path)
    _assert_same_state(load_checkpoint_state(path), state)
    model = load_model(config_path, path)
    _assert_same_state(model.state_dict(), state)
    reference = _tiny_model()
    reference.load_state_dict(state)
    torch.testing.assert_close(_loaded_output(model), _loaded_output(reference), rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_other_pickle_suffixes(tmp_path: Path, suffix: str) -> None:
    state = _state()
    torch.save(state, tmp_path / f"w{suffix}")
    _assert_same_state(load_checkpoint_state(tmp_path / f"w{suffix}"), state)


def test_safetensors_round_trip(tmp_path: Path, config_path: Path) -> None:
    state = _state()
    path = tmp_path / "model.safetensors"
    # safetensors refuses tensors sharing memory: the shared rotary freqs are cloned per key.
    save_file({k: v.clone().contiguous() for k, v in state.items()}, str(path))
    _assert_same_state(load_checkpoint_state(path), state)
    model = load_model(config_path, path)
    _assert_same_state(model.state_dict(), state)


class _Exploit:
    """Unpickling this runs ``exec`` (writes a marker file) unless the loader refuses it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="evil.ckpt") as info:
        load_checkpoint_state(path)
    assert "weights_only" in str(info.value)
    assert not marker.exists()


def test_unreadable_inputs_raise_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint_state(tmp_path / "absent.ckpt")
    (tmp_path / "weights.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        load_checkpoint_state(tmp_path / "weights.onnx")
    (tmp_path / "corrupt.ckpt").write_bytes(b"not a zip or a pickle")
    with pytest.raises(CheckpointError, match="corrupt.ckpt"):
        load_checkpoint_state(tmp_path / "corrupt.ckpt")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        load_checkpoint_state(tmp_path / "corrupt.safetensors")
    torch.save({"state_dict": {"w": torch.zeros(1), "step": 3}}, tmp_path / "mixed.ckpt")
    with pytest.raises(CheckpointError, match="not tensors: step"):
        load_checkpoint_state(tmp_path / "mixed.ckpt")


def test_missing_key_is_named(tmp_path: Path) -> None:
    state = _state()
    del state["final_norm.gamma"]
    with pytest.raises(CheckpointError) as info:
        load_state_strict(_tiny_model(), state, tmp_path / "w.ckpt")
    message = str(info.value)
    assert "w.ckpt" in message and "1 missing keys: final_norm.gamma" in message
    assert "unexpected" not in message and "shape" not in message


def test_unexpected_key_is_named() -> None:
    state = _state()
    state["layers.9.0.layers.0.0.norm.gamma"] = torch.ones(8)
    with pytest.raises(CheckpointError, match=r"1 unexpected keys: layers\.9\.0\.layers\.0\.0\.norm\.gamma") as info:
        load_state_strict(_tiny_model(), state, "ckpt-from-elsewhere")
    assert "ckpt-from-elsewhere" in str(info.value)


def test_shape_mismatch_is_named_with_both_shapes() -> None:
    state = _state()
    state["band_split.to_features.3.1.weight"] = torch.zeros(8, 5)
    with pytest.raises(CheckpointError) as info:
        load_state_strict(_tiny_model(), state, "w.ckpt")
    assert "band_split.to_features.3.1.weight: checkpoint (8, 5) vs model (8, 4)" in str(info.value)


def test_long_lists_are_truncated_with_counts() -> None:
    state = _state()
    dropped = [k for k in state if k.startswith("mask_estimators.1.")]
    for key in dropped:
        del state[key]
    with pytest.raises(CheckpointError) as info:
        load_state_strict(_tiny_model(), state, "w.ckpt")
    message = str(info.value)
    assert f"{len(dropped)} missing keys" in message
    assert f"({len(dropped) - 10} more)" in message
    assert message.count("mask_estimators.1.") == 10


def test_failed_load_leaves_model_untouched() -> None:
    model = _tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = _state()
    state["final_norm.gamma"] = torch.zeros(3)
    with pytest.raises(CheckpointError):
        load_state_strict(model, state, "w.ckpt")
    _assert_same_state(model.state_dict(), before)
