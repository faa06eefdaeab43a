"""stemflow: catalogue-scale music source separation.

The public face, for notebooks and scripts::

    from stemflow import load_model, load_audio, Separator, save_audio

    model = load_model("config.yaml", "model.ckpt")
    audio = load_audio("song.flac", sample_rate=model.config.audio.sample_rate)
    stems = Separator(model).separate(audio.samples, audio.sample_rate)

The names below are imported on first use, so ``import stemflow`` stays cheap
(no torch until a model or the engine is asked for). The package is grouped by
concern, imports pointing down (``../shared/DESIGN.md``):

- ``stemflow.models``: the model runtime (BS-/Mel-Band-RoFormer, Spleeter, community configs);
- ``stemflow.hub``: registry, weights cache, loading, ``model_id``;
- ``stemflow.audio``: decoding, encoding, the format table, ffmpeg;
- ``stemflow.engine``: chunk plan, :class:`Separator`, streaming, the one-track path;
- ``stemflow.measures``: loudness, reference-free quality, metrics against references;
- ``stemflow.store``: object storage, retries, commit markers, Parquet records, run manifests;
- ``stemflow.catalogue``: listing, catalogue manifests, planning;
- ``stemflow.stage``: the track worker and the Ray adapter (the only module importing Ray);
- ``stemflow.evaluation`` and ``stemflow.karaoke``: evaluation reports and karaoke data sets.

Prefect lives in ``pipelines/`` only; the command line is :mod:`stemflow.cli`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_PUBLIC: dict[str, str] = {
    "load_model": "stemflow.models",
    "build_model": "stemflow.models",
    "load_config": "stemflow.models.config",
    "load_audio": "stemflow.audio.decode",
    "save_audio": "stemflow.audio.encode",
    "Separator": "stemflow.engine.separator",
    "separate_track": "stemflow.engine.track",
    "separate_file": "stemflow.engine.streaming",
    "load_registered": "stemflow.hub.loading",
    "load_custom": "stemflow.hub.loading",
    "StemflowError": "stemflow.errors",
}

__all__ = [
    "Separator", "StemflowError", "__version__", "build_model", "load_audio", "load_config", "load_custom",
    "load_model", "load_registered", "save_audio", "separate_file", "separate_track",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from stemflow.audio.decode import load_audio
    from stemflow.audio.encode import save_audio
    from stemflow.engine.separator import Separator
    from stemflow.engine.streaming import separate_file
    from stemflow.engine.track import separate_track
    from stemflow.errors import StemflowError
    from stemflow.hub.loading import load_custom, load_registered
    from stemflow.models import build_model, load_model
    from stemflow.models.config import load_config


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'stemflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
