"""Settings of a karaoke dataset version: :class:`DatasetSettings` and ``configs/karaoke.yaml``.

The YAML has three sections: ``dataset`` (the fields of :class:`DatasetSettings`
except the two below), ``presence`` (:class:`PresenceSettings`, how the scores
detect a vocal) and ``thresholds`` (:class:`KaraokeThresholds`, when a track is
rejected). Unknown keys are reported, never ignored. Every setting enters the
version hash. The scores and verdicts these settings steer are
:mod:`stemflow.karaoke.scores`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from stemflow.bundled_configs import karaoke_config_path
from stemflow.errors import ConfigError


@dataclass(frozen=True)
class PresenceSettings:
    """How vocal presence is measured per window (:func:`stemflow.karaoke.scores.vocal_coverage`)."""

    window_s: float = 0.5
    presence_ratio_db: float = -20.0
    presence_level_dbfs: float = -50.0

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ConfigError(f"window_s must be positive, got {self.window_s}")


@dataclass(frozen=True)
class KaraokeThresholds:
    """Acceptance thresholds of :func:`stemflow.karaoke.scores.judge` (defaults as in ``configs/karaoke.yaml``).

    The rule each threshold sets is in the :mod:`stemflow.karaoke.scores` docstring.
    """

    instrumental_max_coverage: float = 0.10
    instrumental_max_vocal_share: float = 0.005
    max_vocal_share: float = 0.60
    max_vocal_to_backing_lu: float = 6.0
    max_vocal_residue_db: float = -10.0
    max_backing_clipped_ratio: float = 0.001
    max_backing_true_peak_dbtp: float = 2.0
    min_backing_lufs: float = -40.0
    min_duration_s: float = 1.0


def settings_from_mapping(cls: type, data: Mapping[str, Any] | None, where: str) -> Any:
    """Build the frozen dataclass ``cls`` (numeric fields only) from a mapping, reporting unknown keys and bad values.

    Raises:
        ConfigError: unknown keys (listed with the valid ones) or a non-numeric value.
    """
    data = dict(data or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; valid keys are {sorted(names)}")
    try:
        return cls(**{k: float(v) for k, v in data.items()})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


@dataclass(frozen=True)
class DatasetSettings:
    """Everything that shapes a dataset version (all of it enters the version hash)."""

    format: Literal["flac", "wav"] = "flac"
    bit_depth: Literal[16, 24, 32] = 24
    loudness_lufs: float | None = -14.0
    max_true_peak_dbtp: float = -1.0
    stems4: bool = False
    group_column: str = "artist"
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    residue: bool = True
    sum_to_mixture: bool = True
    include_rejected: bool = False
    webdataset: bool = False
    tracks_per_shard: int = 100
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    thresholds: KaraokeThresholds = field(default_factory=KaraokeThresholds)

    def __post_init__(self) -> None:
        if self.format not in ("flac", "wav"):
            raise ConfigError(f"format must be 'flac' or 'wav', got {self.format!r}")
        if self.bit_depth not in ((16, 24) if self.format == "flac" else (16, 24, 32)):
            raise ConfigError(
                f"bit_depth {self.bit_depth} is not available for {self.format} (flac: 16, 24; wav: 16, 24, 32)"
            )
        if len(self.splits) != 3 or any(not f >= 0 for f in self.splits) or not math.isclose(sum(self.splits), 1.0):
            raise ConfigError(f"splits must be 3 non-negative fractions summing to 1, got {self.splits}")
        if self.tracks_per_shard < 1:
            raise ConfigError(f"tracks_per_shard must be >= 1, got {self.tracks_per_shard}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (the card and the completion marker show it)."""
        return asdict(self)


_TOP_KEYS = {"dataset", "presence", "thresholds"}


def settings_from_dict(data: Mapping[str, Any] | None, *, where: str = "karaoke settings") -> DatasetSettings:
    """:class:`DatasetSettings` from ``{dataset: {...}, presence: {...}, thresholds: {...}}``.

    Raises:
        ConfigError: unknown keys (top level or per section) or invalid values.
    """
    data = dict(data or {})
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown sections {unknown}; valid: {sorted(_TOP_KEYS)}")
    base = dict(data.get("dataset") or {})
    known = {f for f in DatasetSettings.__dataclass_fields__ if f not in ("presence", "thresholds")}
    bad = sorted(set(base) - known)
    if bad:
        raise ConfigError(f"{where}: unknown dataset keys {bad}; valid: {sorted(known)}")
    if "splits" in base:
        base["splits"] = tuple(float(f) for f in base["splits"])
    try:
        return DatasetSettings(
            **base,
            presence=settings_from_mapping(PresenceSettings, data.get("presence"), f"{where}: presence"),
            thresholds=settings_from_mapping(KaraokeThresholds, data.get("thresholds"), f"{where}: thresholds"),
        )
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


def load_settings(path: str | Path | None = None, **overrides: Any) -> DatasetSettings:
    """Read ``configs/karaoke.yaml`` (or ``path``), then replace top-level dataset fields by ``overrides``.

    The default file is the installed one (the wheel's copy, or the checkout's:
    :func:`stemflow.bundled_configs.karaoke_config_path`).
    """
    path = Path(path) if path is not None else karaoke_config_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read karaoke settings {path}: {e}") from e
    settings = settings_from_dict(data, where=str(path))
    return replace(settings, **overrides) if overrides else settings
