"""The model registry: which published checkpoints stemflow knows by name.

``configs/models/registry.yaml`` lists each model once: architecture, stems,
config file, where its weights come from (download URLs with mirrors, or a
Python package), their sha256 where the source publishes one, the license as
the source states it, and the SDR its authors report and on which data set.
This module reads that file into frozen dataclasses and answers the three
questions demucs' model repository answers (``has_model``, ``get_model``,
``list_models``). Downloading and caching the weights is
:mod:`stemflow.hub.cache`'s job.

Validation is strict: an unknown key, a missing field, a malformed sha256 or a
name that is not ``[a-z0-9._-]`` (names start every ``model_id``, which must be
safe in file names, S3 keys and hive partitions) is a :class:`ConfigError`
naming the entry and the key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from stemflow.bundled_configs import model_configs_dir, registry_path
from stemflow.errors import ConfigError
from stemflow.hub.aliases import AmbiguousModelError, UnknownModelError, build_index, known_as, resolve_name
from stemflow.models.config import parse_yaml

__all__ = ["AmbiguousModelError", "ModelEntry", "Registry", "UnknownModelError", "load_registry"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")

WeightsSource = Literal["url", "package"]

_TOP_LEVEL_KEYS = frozenset({"schema_version", "models"})
_REQUIRED_KEYS = frozenset(
    {"name", "architecture", "stems", "config", "source", "license", "reported_sdr"}
)
_OPTIONAL_KEYS = frozenset(
    {
        "urls",
        "filename",
        "sha256",
        "pin_on_first_download",
        "size_bytes",
        "stem_aliases",
        "notes",
        "package",
        "aliases",
    }
)
_SDR_KEYS = frozenset({"value", "metric", "dataset"})


def default_configs_dir() -> Path:
    """``configs/models/`` as installed (the registry and the YAML configs; :mod:`stemflow.bundled_configs`)."""
    return model_configs_dir()


def default_registry_path() -> Path:
    """``configs/models/registry.yaml`` as installed (the wheel's copy, or the checkout's)."""
    return registry_path()


@dataclass(frozen=True)
class ReportedSdr:
    """A score as the model's authors report it: value in dB, which SDR, on which data set."""

    value: float
    metric: str
    dataset: str

    def describe(self) -> str:
        """One line for tables, e.g. ``10.87 dB (SDR vocals, Multisong (MVSep))``."""
        return f"{self.value:.2f} dB ({self.metric}, {self.dataset})"


@dataclass(frozen=True)
class ModelEntry:
    """One registry entry. ``stems`` are canonical names (after ``stem_aliases``)."""

    name: str
    architecture: str
    stems: tuple[str, ...]
    config: str
    config_path: Path
    source: WeightsSource
    license: str
    reported_sdr: ReportedSdr | None
    urls: tuple[str, ...] = ()
    filename: str | None = None
    sha256: str | None = None
    pin_on_first_download: bool = False
    size_bytes: int | None = None
    stem_aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    notes: str = ""
    package: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def known_as(self) -> tuple[str, ...]:
        """Other names this model answers to (explicit aliases, checkpoint and config file names)."""
        return known_as(self)

    def canonical_stem(self, stem: str) -> str:
        """The stemflow name of a stem the model (or its config) calls ``stem``."""
        return self.stem_aliases.get(stem, stem)

    @property
    def downloadable(self) -> bool:
        """True when the weights come from URLs (and so live in the weights cache)."""
        return self.source == "url"


@dataclass(frozen=True)
class Registry:
    """A loaded registry: entries by name, in file order."""

    entries: Mapping[str, ModelEntry]
    source: Path
    configs_dir: Path
    index: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not self.index:
            object.__setattr__(self, "index", build_index(self.entries.values(), source=self.source))

    def list_models(self) -> tuple[str, ...]:
        """Registry names, in file order."""
        return tuple(self.entries)

    def has_model(self, name: str) -> bool:
        """True when ``name`` is a registry name or designates exactly one model by an alias."""
        return isinstance(name, str) and len(self.index.get(name.strip().casefold(), ())) == 1

    def resolve(self, name: str) -> str:
        """The registry name of ``name`` (a registry name or an alias; :mod:`stemflow.hub.aliases`).

        Raises:
            UnknownModelError: unknown (valid names listed) or ambiguous (:class:`AmbiguousModelError`).
        """
        return resolve_name(name, self.index, self.entries, source=self.source)

    def get_model(self, name: str) -> ModelEntry:
        """The entry ``name`` designates (registry name or alias); unknown names raise :class:`UnknownModelError`."""
        return self.entries[self.resolve(name)]

    def missing_configs(self) -> tuple[str, ...]:
        """Names of entries whose config file is absent from ``configs_dir``."""
        return tuple(e.name for e in self.entries.values() if not e.config_path.is_file())


def _where(index: int, data: Mapping[str, Any]) -> str:
    name = data.get("name")
    return f"models[{index}] ({name})" if isinstance(name, str) else f"models[{index}]"


def _string(value: Any, key: str, where: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ConfigError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _string_list(value: Any, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key!r} must be a list of non-empty strings, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: {key!r} has duplicates: {list(value)}")
    return tuple(value)


def _parse_sdr(value: Any, where: str) -> ReportedSdr | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: 'reported_sdr' must be a mapping {{value, metric, dataset}} or null")
    keys = set(value)
    if keys != _SDR_KEYS:
        raise ConfigError(
            f"{where}: 'reported_sdr' needs exactly {sorted(_SDR_KEYS)}; "
            f"missing {sorted(_SDR_KEYS - keys)}, unknown {sorted(keys - _SDR_KEYS)}"
        )
    number = value["value"]
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise ConfigError(f"{where}: reported_sdr.value must be a number (dB), got {number!r}")
    return ReportedSdr(
        value=float(number),
        metric=_string(value["metric"], "reported_sdr.metric", where),
        dataset=_string(value["dataset"], "reported_sdr.dataset", where),
    )


def _parse_aliases(value: Any, where: str) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()
    ):
        raise ConfigError(f"{where}: 'stem_aliases' must map stem names to stem names, got {value!r}")
    return MappingProxyType(dict(value))


def _parse_weights(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The weights-related fields, checked against the entry's ``source``."""
    source = data["source"]
    urls = _string_list(data.get("urls") or [], "urls", where)
    sha256 = data.get("sha256")
    pin = data.get("pin_on_first_download", False)
    size = data.get("size_bytes")
    filename = data.get("filename")
    package = data.get("package")
    if not isinstance(pin, bool):
        raise ConfigError(f"{where}: 'pin_on_first_download' must be true or false, got {pin!r}")
    if sha256 is not None and (not isinstance(sha256, str) or not SHA256_PATTERN.match(sha256)):
        raise ConfigError(f"{where}: 'sha256' must be 64 lowercase hex digits or null, got {sha256!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise ConfigError(f"{where}: 'size_bytes' must be a positive integer or null, got {size!r}")

    if source == "url":
        if not urls:
            raise ConfigError(f"{where}: source 'url' needs at least one entry in 'urls'")
        bad = [u for u in urls if not u.startswith(("https://", "http://"))]
        if bad:
            raise ConfigError(f"{where}: 'urls' must be http(s) URLs, got {bad}")
        filename = _string(filename, "filename", where)
        if "/" in filename or "\\" in filename or filename.startswith("."):
            raise ConfigError(f"{where}: 'filename' must be a plain file name, got {filename!r}")
        if sha256 is None and not pin:
            raise ConfigError(
                f"{where}: no published sha256, so 'pin_on_first_download: true' is required "
                "(otherwise the download could never be verified)"
            )
        if package is not None:
            raise ConfigError(f"{where}: 'package' only applies to source 'package'")
    elif source == "package":
        package = _string(package, "package", where)
        if urls or filename is not None or sha256 is not None or pin:
            raise ConfigError(
                f"{where}: source 'package' takes its weights from {package!r}; "
                "leave urls/filename/sha256 empty and pin_on_first_download false"
            )
    else:
        raise ConfigError(f"{where}: 'source' must be 'url' or 'package', got {source!r}")
    return {
        "urls": urls,
        "filename": filename,
        "sha256": sha256,
        "pin_on_first_download": pin,
        "size_bytes": size,
        "package": package,
    }


def entry_from_dict(data: Mapping[str, Any], *, configs_dir: Path, index: int = 0) -> ModelEntry:
    """Validate one registry entry (a parsed YAML mapping) and build its :class:`ModelEntry`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"models[{index}]: each entry must be a mapping, got {type(data).__name__}")
    where = _where(index, data)
    keys = set(data)
    unknown = keys - _REQUIRED_KEYS - _OPTIONAL_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {sorted(unknown)}; valid keys are "
            f"{sorted(_REQUIRED_KEYS | _OPTIONAL_KEYS)}"
        )
    missing = _REQUIRED_KEYS - keys
    if missing:
        raise ConfigError(f"{where}: missing required keys {sorted(missing)}")

    name = _string(data["name"], "name", where)
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"{where}: 'name' must match {NAME_PATTERN.pattern} (it starts every model_id)")
    config = _string(data["config"], "config", where)
    if Path(config).is_absolute() or ".." in Path(config).parts:
        raise ConfigError(f"{where}: 'config' must be a file name relative to {configs_dir}")
    aliases = _parse_aliases(data.get("stem_aliases"), where)
    stems = _string_list(data["stems"], "stems", where)
    if not stems:
        raise ConfigError(f"{where}: 'stems' must not be empty")
    notes = data.get("notes") or ""
    other_names = _string_list(data.get("aliases") or [], "aliases", where)
    return ModelEntry(
        name=name,
        architecture=_string(data["architecture"], "architecture", where),
        stems=stems,
        config=config,
        config_path=configs_dir / config,
        source=data["source"],
        license=_string(data["license"], "license", where),
        reported_sdr=_parse_sdr(data["reported_sdr"], where),
        stem_aliases=aliases,
        notes=_string(notes, "notes", where, allow_empty=True).strip(),
        aliases=other_names,
        **_parse_weights(data, where),
    )


def registry_from_dict(
    data: Mapping[str, Any], *, source: Path, configs_dir: Path
) -> Registry:
    """Validate a parsed registry file and build a :class:`Registry`."""
    unknown = set(data) - _TOP_LEVEL_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown top-level keys {sorted(unknown)}; valid: {sorted(_TOP_LEVEL_KEYS)}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError(f"{source}: schema_version must be {SCHEMA_VERSION}, got {version!r}")
    models = data.get("models")
    if not isinstance(models, Sequence) or isinstance(models, str) or not models:
        raise ConfigError(f"{source}: 'models' must be a non-empty list of entries")
    entries: dict[str, ModelEntry] = {}
    for index, item in enumerate(models):
        try:
            entry = entry_from_dict(item, configs_dir=configs_dir, index=index)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from e
        if entry.name in entries:
            raise ConfigError(f"{source}: models[{index}]: duplicate name {entry.name!r}")
        entries[entry.name] = entry
    return Registry(entries=MappingProxyType(entries), source=source, configs_dir=configs_dir)


def load_registry(path: str | Path | None = None, *, configs_dir: str | Path | None = None) -> Registry:
    """Read and validate a registry file.

    ``path`` defaults to :func:`default_registry_path`; config files are looked up
    in ``configs_dir``, by default the registry file's own folder.
    """
    registry_path = Path(path) if path is not None else default_registry_path()
    folder = Path(configs_dir) if configs_dir is not None else registry_path.parent
    try:
        text = registry_path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{registry_path}: cannot read the model registry: {e}") from e
    data = parse_yaml(text, source=str(registry_path))
    registry = registry_from_dict(data, source=registry_path, configs_dir=folder)
    logger.debug("loaded %d models from %s", len(registry.entries), registry_path)
    return registry


def list_models(registry: Registry | None = None) -> tuple[str, ...]:
    """Registry names, in file order."""
    return (registry or load_registry()).list_models()


def has_model(name: str, registry: Registry | None = None) -> bool:
    """True when ``name`` is in the registry."""
    return (registry or load_registry()).has_model(name)


def get_model_entry(name: str, registry: Registry | None = None) -> ModelEntry:
    """The entry called ``name``; unknown names raise :class:`UnknownModelError` listing valid ones."""
    return (registry or load_registry()).get_model(name)
