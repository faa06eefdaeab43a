"""Typed flow parameters: what Prefect renders as a form and validates when a flow run starts.

The flows' dict parameters are pydantic models (pydantic ships with Prefect):
``stage`` is :class:`StageParameters` (the fields of
:class:`stemflow.stage.settings.StageSettings`, with their defaults) and
``model_settings`` is :class:`ModelSettings`. Unknown keys are refused, so a
typo such as ``{"tracks_per_cal": 4}`` fails at the flow's start with an error
naming the field, never as a ``TypeError`` deep in a worker; a plain dict with
the same keys as before still works (Prefect and :func:`stage_settings`
validate it into the model).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from stemflow.errors import ConfigError
from stemflow.stage.settings import StageSettings


def _fields_of(cls: type) -> dict[str, Any]:
    """Pydantic field definitions for a frozen settings dataclass: its types and defaults."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        fields[f.name] = (hints[f.name] | None if default is None else hints[f.name], default)
    return fields


StageParameters: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "StageParameters",
    __config__=ConfigDict(extra="forbid", frozen=True),
    __doc__="How the Ray stage runs (stemflow.stage.settings.StageSettings); unknown keys are refused.",
    **_fields_of(StageSettings),
)
"""The ``stage`` flow parameter: :class:`StageSettings` fields, validated, unknown keys refused."""


class ModelSettings(BaseModel):
    """The ``model_settings`` flow parameter: how the model is loaded and run.

    ``chunk_size``, ``num_overlap``, ``precision`` and ``sum_to_mixture`` change the output (so the
    ``model_id``); ``batch_size``, ``device``, ``cache_dir`` and ``offline`` do not.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cache_dir: str | None = Field(None, description="weights cache (default $STEMFLOW_CACHE or ~/.cache/stemflow)")
    offline: bool = Field(False, description="never download weights")
    device: str | None = Field(None, description="cpu, cuda, cuda:1 (GPU actors use cuda)")
    batch_size: int | None = Field(None, ge=1, description="chunks per forward pass (no effect on the output)")
    precision: Literal["auto", "float32", "bfloat16", "float16"] | None = Field(
        None, description="inference precision (default auto: float16 autocast on CUDA, float32 elsewhere)")
    chunk_size: int | None = Field(None, ge=1, description="chunk length in samples (default: the config's)")
    num_overlap: int | None = Field(None, ge=1, description="chunks covering each sample")
    sum_to_mixture: bool | None = Field(None, description="add the residual to instrumental/other so the stems "
                                                          "sum to the mixture (changes the output)")


def _validated(model: type[BaseModel], value: BaseModel | Mapping[str, Any] | None, what: str) -> BaseModel:
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(dict(value or {}) if not isinstance(value, BaseModel) else value.model_dump())
    except ValidationError as e:
        problems = "; ".join(f"{what}.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid {what}: {problems}") from e


def stage_overrides(value: BaseModel | Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``stage`` keys the caller set (validated), as a dict over :class:`StageSettings` defaults.

    Raises:
        ConfigError: an unknown key or a value of the wrong type (the message names the field).
    """
    return _validated(StageParameters, value, "stage").model_dump(exclude_unset=True)


def model_overrides(value: BaseModel | Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``model_settings`` keys the caller set (validated), as a dict.

    Raises:
        ConfigError: an unknown key or a value of the wrong type (the message names the field).
    """
    return _validated(ModelSettings, value, "model_settings").model_dump(exclude_unset=True, exclude_none=True)
