"""The backend of ``stemflow models list``: one row per registry model, with its other names and where its weights are.

Cheap to call: it reads the registry and looks for files and installed packages,
but never hashes or downloads anything. :meth:`ModelRow.as_dict` is the JSON
form (``stemflow models list --json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stemflow.hub.cache import is_cached, package_version, weights_path
from stemflow.hub.registry import Registry, load_registry


@dataclass(frozen=True)
class ModelRow:
    """One row of ``stemflow models list``."""

    name: str
    architecture: str
    stems: tuple[str, ...]
    reported_sdr: str
    license: str
    cached: bool
    location: str
    aliases: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form: tuples become lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def list_model_rows(cache_dir: str | Path, registry: Registry | None = None) -> list[ModelRow]:
    """Rows for ``stemflow models list``: name, architecture, stems, SDR, license, cached?, other names."""
    registry = registry or load_registry()
    rows = []
    for entry in registry.entries.values():
        if entry.source == "package":
            version = package_version(entry.package or "")
            location = f"package {entry.package} {version}" if version else f"package {entry.package} (not installed)"
        else:
            location = str(weights_path(entry, cache_dir))
        rows.append(
            ModelRow(
                name=entry.name,
                architecture=entry.architecture,
                stems=entry.stems,
                reported_sdr=entry.reported_sdr.describe() if entry.reported_sdr else "not reported",
                license=entry.license,
                cached=is_cached(entry, cache_dir),
                location=location,
                aliases=entry.known_as,
            )
        )
    return rows
