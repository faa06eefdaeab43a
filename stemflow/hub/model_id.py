"""``model_id``: the name under which a model's stems and records are stored.

A ``model_id`` identifies everything that changes the separated audio::

    <registry name>-<first 12 hex of the weights' sha256>-s<8 hex of the settings hash>
    e.g. bs-roformer-viperx-1297-3c1a2b4d5e6f-s9a8b7c6d

* the registry name says which published model it is;
* the weights hash tells apart two files published under the same name (a
  re-upload, a fine-tune) -- 12 hex digits (48 bits) make an accidental clash
  between the few checkpoints of one name practically impossible;
* the settings hash covers the separation settings that change the output:
  ``chunk_size``, ``num_overlap``, ``precision`` (resolved: never ``"auto"``,
  see :func:`output_settings`) and any other setting the caller passes. Pass only settings that change output: ``batch_size`` does not
  (the engine's output is identical whatever the batch size), so it must not
  be part of the id, or re-running with a different batch size would redo the
  whole catalogue.

The settings are hashed as canonical JSON: keys sorted, no whitespace, ASCII,
tuples as lists, integral floats as integers (``4.0`` and ``4`` name the same
setting), NaN/inf rejected. The result uses only ``[a-z0-9._-]``, so it is safe
as a folder name, an S3 key segment and a hive partition value
(``model_id=<m>``). A new model or new settings is a new ``model_id``: that is
what makes reprocessing a catalogue work.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from stemflow.errors import ConfigError
from stemflow.models.precision import AUTO, resolve_precision

WEIGHTS_HASH_CHARS = 12
SETTINGS_HASH_CHARS = 8
OUTPUT_SETTINGS = ("chunk_size", "num_overlap", "precision")
"""Settings every caller should pass; others (e.g. ``stft_window``) may be added."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_MODEL_ID = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._-]*)-(?P<weights>[0-9a-f]{12})-s(?P<settings>[0-9a-f]{8})$")


class ModelIdParts(NamedTuple):
    """The three parts of a ``model_id``."""

    name: str
    weights_sha256_prefix: str
    settings_hash: str


def _canonical(value: Any, path: str) -> Any:
    """A JSON-ready copy of ``value`` with one spelling per meaning."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"setting {path} must be finite, got {value!r}")
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"setting names must be strings, got {key!r} in {path or 'settings'}")
            out[key] = _canonical(item, f"{path}.{key}" if path else key)
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise ConfigError(
        f"setting {path} has type {type(value).__name__}; use str, int, float, bool, None, lists or mappings"
    )


def canonical_settings_json(settings: Mapping[str, Any]) -> str:
    """The settings as canonical JSON (the exact text that gets hashed)."""
    if not isinstance(settings, Mapping):
        raise ConfigError(f"settings must be a mapping, got {type(settings).__name__}")
    return json.dumps(
        _canonical(settings, ""), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def settings_hash(settings: Mapping[str, Any]) -> str:
    """First 8 hex digits of the sha256 of :func:`canonical_settings_json`."""
    digest = hashlib.sha256(canonical_settings_json(settings).encode("ascii")).hexdigest()
    return digest[:SETTINGS_HASH_CHARS]


def output_settings(
    *, chunk_size: int, num_overlap: int, precision: str, device: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The settings mapping for :func:`model_id`, with the three every id should carry.

    ``precision`` enters the id resolved (:func:`stemflow.models.precision.resolve_precision`):
    ``"auto"`` needs the ``device`` it runs on, and becomes what it means there
    (float16 on CUDA, float32 elsewhere), so the same stems always get the same id.
    """
    if precision == AUTO and device is None:
        raise ConfigError("precision 'auto' depends on the device: pass device= to resolve it for the model_id")
    resolved = resolve_precision(precision, device) if device is not None else precision
    return {"chunk_size": chunk_size, "num_overlap": num_overlap, "precision": resolved, **extra}


def model_id(registry_name: str, weights_sha256: str, settings: Mapping[str, Any]) -> str:
    """``<registry_name>-<sha256[:12]>-s<settings hash>``; see the module docstring."""
    if not isinstance(registry_name, str) or not _NAME.match(registry_name):
        raise ConfigError(
            f"registry name {registry_name!r} must match {_NAME.pattern} to be safe in paths and partitions"
        )
    if not isinstance(weights_sha256, str) or not _SHA256.match(weights_sha256):
        raise ConfigError(f"weights_sha256 must be 64 hex digits, got {weights_sha256!r}")
    prefix = weights_sha256.lower()[:WEIGHTS_HASH_CHARS]
    return f"{registry_name}-{prefix}-s{settings_hash(settings)}"


def parse_model_id(value: str) -> ModelIdParts:
    """Split a ``model_id`` into its parts; anything else raises :class:`ConfigError`."""
    match = _MODEL_ID.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            f"{value!r} is not a model_id (<name>-<12 hex>-s<8 hex>, characters [a-z0-9._-])"
        )
    return ModelIdParts(match["name"], match["weights"], match["settings"])
