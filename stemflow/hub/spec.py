"""How a worker names the model it should load: :class:`ModelSpec`, and :func:`load_spec`.

A flow or the CLI decides which model a run uses; the workers (Ray actors,
possibly on other machines) each load it themselves. A :class:`ModelSpec` is
the small, picklable description that travels to them: a registry name plus
the weights cache folder, or a community config plus checkpoint, and the
settings of the :class:`stemflow.engine.separator.Separator` built around it.

``weights_sha256`` pins the weights: the driver, having loaded the model once
to compute the run's ``model_id``, sets it to the hash of the bytes it loaded
(``dataclasses.replace(spec, weights_sha256=loaded.weights_sha256)``), or to
the 12 hex digits of a ``model_id``. Every :func:`load_spec` then verifies the
bytes it loads against it, so a worker whose cache or checkpoint path holds
other weights refuses them (:class:`~stemflow.errors.ChecksumError`) instead
of writing stems under a ``model_id`` they do not belong to.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from stemflow.errors import ChecksumError, ConfigError
from stemflow.hub.loading import LoadedModel, load_custom, load_registered
from stemflow.hub.model_id import parse_model_id
from stemflow.models.checkpoint import check_expected_sha256, verify_sha256


@dataclass(frozen=True)
class ModelSpec:
    """How an actor builds its :class:`stemflow.engine.separator.Separator`; small and picklable.

    Either ``config_path`` (+ ``checkpoint_path``) of a community-format model,
    or a registry ``name`` whose weights are resolved in ``cache_dir``.
    ``weights_sha256``: the sha256 (or a prefix of >= 12 hex digits) the loaded
    weights must have; ``None`` loads whatever verified weights are there.
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
    sum_to_mixture: bool = False  # residual into instrumental/other (stemflow.engine.track); changes the output
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        if (self.name is None) == (self.config_path is None):
            raise ConfigError("a ModelSpec needs exactly one of name or config_path")
        try:
            check_expected_sha256(self.weights_sha256)
        except ChecksumError as e:
            raise ConfigError(f"ModelSpec.weights_sha256: {e}") from e

    def for_model_id(self, model_id: str) -> ModelSpec:
        """This spec pinned to the weights a ``model_id`` names (its 12 hex digits of their sha256)."""
        return dataclasses.replace(self, weights_sha256=parse_model_id(model_id).weights_sha256_prefix)


def load_spec(spec: ModelSpec) -> LoadedModel:
    """Load the model named by ``spec``: weights verified, and refused unless they hash to ``spec.weights_sha256``.

    Raises:
        ChecksumError: the weights are not the ones the spec (the run's ``model_id``) names.
    """
    if spec.config_path is not None:
        if spec.checkpoint_path is None:
            raise ConfigError(f"model config {spec.config_path!r} given without a checkpoint")
        loaded = load_custom(spec.config_path, spec.checkpoint_path, expected_sha256=spec.weights_sha256)
    elif spec.cache_dir is None:
        raise ConfigError(f"model {spec.name!r} needs a weights cache folder (cache_dir)")
    else:
        loaded = load_registered(str(spec.name), spec.cache_dir, offline=spec.offline,
                                 expected_sha256=spec.weights_sha256)
    verify_sha256(loaded.weights_sha256, spec.weights_sha256, f"the weights of {loaded.name}")
    return loaded
