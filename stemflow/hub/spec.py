"""How a worker names the model it should load: :class:`ModelSpec`, and :func:`load_spec`.

A flow or the CLI decides which model a run uses; the workers (Ray actors,
possibly on other machines) each load it themselves. A :class:`ModelSpec` is
the small, picklable description that travels to them: a registry name plus
the weights cache folder, or a community config plus checkpoint, and the
settings of the :class:`stemflow.engine.separator.Separator` built around it.
"""

from __future__ import annotations

from dataclasses import dataclass

from stemflow.errors import ConfigError
from stemflow.hub.loading import LoadedModel, load_custom, load_registered


@dataclass(frozen=True)
class ModelSpec:
    """How an actor builds its :class:`stemflow.engine.separator.Separator`; small and picklable.

    Either ``config_path`` (+ ``checkpoint_path``) of a community-format model,
    or a registry ``name`` whose weights are resolved in ``cache_dir``.
    """

    name: str | None = None
    config_path: str | None = None
    checkpoint_path: str | None = None
    cache_dir: str | None = None
    offline: bool = False
    device: str = "cpu"
    batch_size: int | None = None
    precision: str = "auto"
    chunk_size: int | None = None
    num_overlap: int | None = None

    def __post_init__(self) -> None:
        if (self.name is None) == (self.config_path is None):
            raise ConfigError("a ModelSpec needs exactly one of name or config_path")


def load_spec(spec: ModelSpec) -> LoadedModel:
    """Load the model named by ``spec`` (weights verified; see :mod:`stemflow.hub.loading`)."""
    if spec.config_path is not None:
        if spec.checkpoint_path is None:
            raise ConfigError(f"model config {spec.config_path!r} given without a checkpoint")
        return load_custom(spec.config_path, spec.checkpoint_path)
    if spec.cache_dir is None:
        raise ConfigError(f"model {spec.name!r} needs a weights cache folder (cache_dir)")
    return load_registered(str(spec.name), spec.cache_dir, offline=spec.offline)
