"""The model_id records the resolved precision: 'auto' never reaches an id."""

from __future__ import annotations

import hashlib

import pytest

from stemflow.errors import ConfigError
from stemflow.hub.model_id import model_id, output_settings

SHA = hashlib.sha256(b"weights").hexdigest()


def test_auto_is_resolved_for_the_device_before_hashing() -> None:
    on_gpu = output_settings(chunk_size=352800, num_overlap=2, precision="auto", device="cuda:0")
    on_cpu = output_settings(chunk_size=352800, num_overlap=2, precision="auto", device="cpu")
    assert on_gpu["precision"] == "float16" and on_cpu["precision"] == "float32"
    explicit = output_settings(chunk_size=352800, num_overlap=2, precision="float16")
    assert model_id("m", SHA, on_gpu) == model_id("m", SHA, explicit)  # same stems, same id
    assert model_id("m", SHA, on_cpu) != model_id("m", SHA, on_gpu)
    with pytest.raises(ConfigError, match="device"):
        output_settings(chunk_size=352800, num_overlap=2, precision="auto")
    with pytest.raises(ConfigError, match="CUDA"):
        output_settings(chunk_size=352800, num_overlap=2, precision="float16", device="cpu")


def test_the_default_precision_is_auto_and_keeps_the_float32_id_on_cpu(tiny_model) -> None:
    from pipelines.runtime import resolve_model
    from stemflow.engine.separator import Separator
    from stemflow.models import load_model

    spec, default_id = resolve_model(str(tiny_model.config), str(tiny_model.checkpoint), {})
    assert spec.precision == "auto"
    _, float32_id = resolve_model(str(tiny_model.config), str(tiny_model.checkpoint), {"precision": "float32"})
    assert default_id == float32_id  # CPU catalogues are not redone by the new default
    separator = Separator(load_model(tiny_model.config, tiny_model.checkpoint))
    assert separator.precision == "float32" and separator.output_settings["precision"] == "float32"
