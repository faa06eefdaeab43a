"""Model configs in the community's format (Music-Source-Separation-Training YAML).

A config has the sections ``audio`` (chunk size, sample rate, STFT hints),
``model`` (the constructor arguments, verbatim), ``training`` (of which only
``instruments`` and ``target_instrument`` matter at inference) and
``inference`` (``batch_size``, ``num_overlap``). Reference configs carry
``!!python/tuple`` tags, so they are read with a safe loader that knows that one
tag and nothing else: no YAML here can build arbitrary Python objects.

stemflow's own configs may add a top-level ``model_type`` (the architecture
name); community configs do not have one, so it is inferred from the ``model``
section (``num_bands`` -> Mel-Band-RoFormer, ``freqs_per_bands`` -> BS-RoFormer).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stemflow.errors import ConfigError

logger = logging.getLogger(__name__)

# Top-level sections seen in published configs that inference does not use.
_IGNORED_SECTIONS = frozenset(
    {"augmentations", "loss_multistft", "lora", "metrics", "loss", "valid", "data", "sage"}
)
_KNOWN_SECTIONS = frozenset({"audio", "model", "training", "inference", "model_type"}) | _IGNORED_SECTIONS


class _TupleSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus the ``!!python/tuple`` tag (read as a tuple)."""


def _construct_tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, ...]:
    return tuple(loader.construct_sequence(node, deep=True))


_TupleSafeLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple)


def parse_yaml(text: str, *, source: str = "<string>") -> dict[str, Any]:
    """Parse YAML text with the tuple-aware safe loader; the top level must be a mapping."""
    try:
        data = yaml.load(text, Loader=_TupleSafeLoader)  # noqa: S506 - safe loader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class AudioSettings:
    """The ``audio`` section: what the model expects and how long one chunk is."""

    chunk_size: int
    sample_rate: int = 44100
    num_channels: int = 2
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferenceSettings:
    """The ``inference`` section: chunks per forward pass, and chunks covering each sample."""

    batch_size: int = 1
    num_overlap: int = 4
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """One model's config, as read from a community-format YAML file."""

    model_type: str
    audio: AudioSettings
    model: Mapping[str, Any]
    instruments: tuple[str, ...]
    target_instrument: str | None
    inference: InferenceSettings
    source: str = "<string>"
    unknown_sections: tuple[str, ...] = ()

    @property
    def model_stems(self) -> tuple[str, ...]:
        """The stems the network itself outputs, in output order."""
        if self.target_instrument is not None:
            return (self.target_instrument,)
        return self.instruments

    @property
    def complement_stem(self) -> str | None:
        """Name of the stem derived as ``mixture - target`` for a single-target model."""
        if self.target_instrument is None:
            return None
        if self.target_instrument == "vocals":
            return "instrumental"
        return f"no_{self.target_instrument}"

    @property
    def stems(self) -> tuple[str, ...]:
        """Every stem a separation returns: the model's, plus the complement if single-target."""
        complement = self.complement_stem
        return self.model_stems + ((complement,) if complement else ())


def infer_model_type(model_section: Mapping[str, Any]) -> str | None:
    """Guess the architecture of a community config from its ``model`` keys."""
    if "num_bands" in model_section:
        return "mel_band_roformer"
    if "freqs_per_bands" in model_section:
        return "bs_roformer"
    return None


def _int(section: Mapping[str, Any], key: str, default: int | None, source: str) -> int:
    value = section.get(key, default)
    if value is None:
        raise ConfigError(f"{source}: missing required setting {key!r}")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{source}: {key!r} must be a positive integer, got {value!r}")
    return value


def _unknown_sections(data: Mapping[str, Any], source: str) -> tuple[str, ...]:
    """Top-level sections stemflow does not know (logged, then recorded in the config)."""
    unknown = tuple(sorted(str(k) for k in data if k not in _KNOWN_SECTIONS))
    if unknown:
        logger.warning("%s: ignoring unknown top-level sections %s", source, ", ".join(unknown))
    return unknown


def _model_section(data: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    model_section = data.get("model")
    if not isinstance(model_section, Mapping):
        raise ConfigError(f"{source}: missing 'model' section (the model's constructor arguments)")
    return model_section


def _architecture(
    data: Mapping[str, Any], model_section: Mapping[str, Any], model_type: str | None, source: str
) -> str:
    """The caller's ``model_type``, else the file's, else the one the ``model`` keys suggest."""
    kind = model_type or data.get("model_type") or infer_model_type(model_section)
    if not kind:
        raise ConfigError(
            f"{source}: cannot tell the architecture from the 'model' section; "
            "add a top-level 'model_type' (e.g. bs_roformer, mel_band_roformer)"
        )
    return str(kind)


def _section(data: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    """An optional section (absent or empty: ``{}``); anything but a mapping is an error."""
    section = data.get(name) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{source}: section {name!r} must be a mapping")
    return section


def _stems(training: Mapping[str, Any], source: str) -> tuple[tuple[str, ...], str | None]:
    """``(instruments, target_instrument)`` from the ``training`` section."""
    instruments = training.get("instruments")
    if not instruments or not isinstance(instruments, (list, tuple)):
        raise ConfigError(f"{source}: 'training.instruments' must list the stems")
    names = tuple(str(s) for s in instruments)
    target = training.get("target_instrument")
    if target is None:
        return names, None
    if str(target) not in names:
        raise ConfigError(
            f"{source}: training.target_instrument {str(target)!r} is not in training.instruments {list(names)}"
        )
    return names, str(target)


def _audio_settings(audio: Mapping[str, Any], model_section: Mapping[str, Any], source: str) -> AudioSettings:
    """The ``audio`` section; the sample rate falls back to the ``model`` section's, then 44100."""
    sample_rate = audio.get("sample_rate", model_section.get("sample_rate", 44100))
    return AudioSettings(
        chunk_size=_int(audio, "chunk_size", None, source),
        sample_rate=_int({"sample_rate": sample_rate}, "sample_rate", 44100, source),
        num_channels=_int(audio, "num_channels", 2, source),
        extra={k: v for k, v in audio.items() if k not in {"chunk_size", "sample_rate", "num_channels"}},
    )


def _inference_settings(inference: Mapping[str, Any], source: str) -> InferenceSettings:
    return InferenceSettings(
        batch_size=_int(inference, "batch_size", 1, source),
        num_overlap=_int(inference, "num_overlap", 4, source),
        extra={k: v for k, v in inference.items() if k not in {"batch_size", "num_overlap"}},
    )


def config_from_dict(
    data: Mapping[str, Any], *, source: str = "<string>", model_type: str | None = None
) -> ModelConfig:
    """Build a :class:`ModelConfig` from a parsed YAML mapping.

    ``model_type`` overrides the file's ``model_type`` and the inference from
    the ``model`` keys. Unknown top-level sections are logged and recorded in
    ``unknown_sections``; the ``model`` keys are checked by the model builder.
    """
    unknown = _unknown_sections(data, source)
    model_section = _model_section(data, source)
    kind = _architecture(data, model_section, model_type, source)
    audio, training, inference = (_section(data, name, source) for name in ("audio", "training", "inference"))
    instruments, target = _stems(training, source)
    return ModelConfig(
        model_type=kind,
        audio=_audio_settings(audio, model_section, source),
        model=dict(model_section),
        instruments=instruments,
        target_instrument=target,
        inference=_inference_settings(inference, source),
        source=source,
        unknown_sections=unknown,
    )


def load_config(path: str | Path, *, model_type: str | None = None) -> ModelConfig:
    """Read a community-format YAML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e}") from e
    return config_from_dict(parse_yaml(text, source=str(path)), source=str(path), model_type=model_type)
