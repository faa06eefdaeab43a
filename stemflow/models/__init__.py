"""Model runtime: the architecture registry, model building and checkpoint loading.

``ARCHITECTURES`` maps an architecture name (a config's ``model_type``) to its
``nn.Module`` class, whose keyword arguments are the config's ``model:`` section,
verbatim. Another architecture joins with one line::

    register_architecture("spleeter", SpleeterModel)

Output contract for the separation engine: every registered class exposes
``num_output_stems`` and ``separate_chunks(x: [B, 2, L]) -> [B, S, 2, L]``
(stem axis always present, exactly ``L`` samples out). ``forward`` keeps the
reference implementation's behaviour, including its output-shape quirks.

Chunk lengths that are not a multiple of the STFT hop: the reference
Mel-Band-RoFormer ``forward`` returns only ``L' = hop * floor(L / hop)``
samples, and the reference ``demix`` then assigns ``x[j, ..., :seg_len]`` into a
``seg_len``-long slot, which fails (shape mismatch) whenever ``seg_len > L'``,
i.e. for every full chunk; the published configs avoid it by choosing chunk
sizes that are multiples of the hop. ``separate_chunks`` instead runs the
inverse STFT with ``length=L`` (as BS-RoFormer always does), which returns the
real reconstruction of the last ``L - L'`` samples rather than padding; for
``L`` a multiple of the hop it equals ``forward`` exactly.

Modules:

- ``config``: community-format YAML configs (tuple-aware safe loader) into :class:`ModelConfig`.
- ``checkpoint``: reading checkpoints without unpickling objects, strict loading.
- ``roformer_options``: the Roformer constructor arguments, declared once and validated.
- ``roformer_base``: the STFT front end, axial transformer stack and output contract both Roformers share.
- ``bs_roformer`` / ``mel_band_roformer``: the two Roformers, with the reference's state-dict layout.
- ``layers``, ``band_layers``, ``mel_bands``: their building blocks (attention, band split, mask estimators, mel bands).
- ``spleeter``: Spleeter's U-Net and the conversion of its TensorFlow checkpoint.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

from torch import Tensor, nn

from stemflow.errors import ConfigError
from stemflow.models.bs_roformer import BSRoformer
from stemflow.models.checkpoint import load_checkpoint_state, load_state_strict
from stemflow.models.config import ModelConfig, load_config
from stemflow.models.mel_band_roformer import MelBandRoformer
from stemflow.models.spleeter.model import SpleeterUNetSeparator

logger = logging.getLogger(__name__)

ARCHITECTURES: dict[str, type[nn.Module]] = {}


def register_architecture(name: str, cls: type[nn.Module]) -> None:
    """Add ``cls`` to :data:`ARCHITECTURES` under ``name``; a name already taken by another class is an error."""
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ConfigError(f"architecture {name!r} must be an nn.Module subclass, got {cls!r}")
    existing = ARCHITECTURES.get(name)
    if existing is not None and existing is not cls:
        raise ConfigError(f"architecture {name!r} is already registered as {existing.__qualname__}")
    ARCHITECTURES[name] = cls


register_architecture("bs_roformer", BSRoformer)
register_architecture("mel_band_roformer", MelBandRoformer)
register_architecture("spleeter", SpleeterUNetSeparator)


def get_architecture(name: str) -> type[nn.Module]:
    """The class registered as ``name``; ConfigError listing the valid names otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError as e:
        raise ConfigError(f"unknown architecture {name!r}; valid: {', '.join(sorted(ARCHITECTURES))}") from e


def constructor_arguments(cls: type[nn.Module]) -> tuple[set[str], set[str], bool]:
    """``(accepted, required, takes_any)`` keyword names of ``cls.__init__`` (``self`` excluded)."""
    accepted: set[str] = set()
    required: set[str] = set()
    takes_any = False
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            takes_any = True
        elif parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            accepted.add(parameter.name)
            if parameter.default is inspect.Parameter.empty:
                required.add(parameter.name)
    return accepted, required, takes_any


def build_model(config: ModelConfig) -> nn.Module:
    """Instantiate ``config.model_type`` with ``config.model`` as keyword arguments (random weights).

    Unknown or missing keys and invalid values raise ConfigError naming the
    config file; unknown keys are listed with the valid ones.
    """
    cls = get_architecture(config.model_type)
    accepted, required, takes_any = constructor_arguments(cls)
    kwargs = dict(config.model)
    unknown = sorted(key for key in kwargs if key not in accepted)
    if unknown and not takes_any:
        raise ConfigError(
            f"{config.source}: unknown {config.model_type} model settings {unknown}; "
            f"valid: {', '.join(sorted(accepted))}"
        )
    missing = sorted(required - kwargs.keys())
    if missing:
        raise ConfigError(f"{config.source}: {config.model_type} model settings missing required {missing}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{config.source}: invalid {config.model_type} model settings: {e}") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{config.source}: cannot build {config.model_type}: {e}") from e


def load_model(
    config_path: str | Path, checkpoint_path: str | Path | None = None, *, model_type: str | None = None
) -> nn.Module:
    """Build the model of a config file, load its weights strictly (if given), and set eval mode.

    The config is attached as ``model.config`` (a :class:`ModelConfig`) for the
    separation engine (stems, chunk size, overlap).
    """
    config = load_config(config_path, model_type=model_type)
    model = build_model(config)
    if checkpoint_path is not None:
        state: dict[str, Tensor] = load_checkpoint_state(checkpoint_path)
        load_state_strict(model, state, checkpoint_path)
        logger.info("loaded %s weights from %s", config.model_type, checkpoint_path)
    model.eval()
    model.config = config
    return model


__all__ = [
    "ARCHITECTURES",
    "BSRoformer",
    "MelBandRoformer",
    "build_model",
    "get_architecture",
    "load_checkpoint_state",
    "load_model",
    "load_state_strict",
    "register_architecture",
]
