"""Hashes pinned on first download, for weights whose source publishes no sha256.

``<cache>/pins.json`` records, per registry name, the sha256 of the first file
downloaded (or placed by hand) for that entry, with its file name, the URL it
came from and when; from then on every copy must match it. The file is
rewritten atomically under a lock, so concurrent processes keep each other's
pins. An unreadable pins file is an error, never silently ignored: ignoring it
would accept any file.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stemflow.errors import StorageError
from stemflow.files import write_file_atomic
from stemflow.hub.locks import file_lock
from stemflow.hub.registry import ModelEntry

logger = logging.getLogger(__name__)

PINS_FILENAME = "pins.json"


def load_pins(cache_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The pinned hashes, by registry name: ``{name: {sha256, filename, url, pinned_at}}``."""
    path = Path(cache_dir) / PINS_FILENAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise StorageError(f"{path}: unreadable pins file ({e}); fix or delete it") from e
    pins = data.get("pins") if isinstance(data, dict) else None
    if not isinstance(pins, dict):
        raise StorageError(f"{path}: not a stemflow pins file (no 'pins' mapping)")
    return pins


def pinned_sha256(entry: ModelEntry, cache_dir: str | Path) -> str | None:
    """The hash pinned for ``entry`` (same file name) or None."""
    pin = load_pins(cache_dir).get(entry.name)
    if isinstance(pin, dict) and pin.get("filename") == entry.filename:
        return str(pin["sha256"])
    return None


def record_pin(entry: ModelEntry, cache_dir: str | Path, sha256: str, url: str | None) -> None:
    """Record ``sha256`` as the pinned hash of ``entry`` in ``<cache>/pins.json``."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    with file_lock(cache / (PINS_FILENAME + ".lock")):
        pins = load_pins(cache)
        pins[entry.name] = {
            "sha256": sha256,
            "filename": entry.filename,
            "url": url,
            "pinned_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_file_atomic(cache / PINS_FILENAME, json.dumps({"version": 1, "pins": pins}, indent=2) + "\n")
    logger.info("pinned %s sha256 %s in %s", entry.name, sha256, cache / PINS_FILENAME)


def expected_sha256(entry: ModelEntry, cache_dir: str | Path) -> str | None:
    """The published sha256, else the pinned one, else None (not pinned yet)."""
    return entry.sha256 or pinned_sha256(entry, cache_dir)
