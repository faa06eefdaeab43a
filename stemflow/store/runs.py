"""The run manifest: one JSON object per run at ``<out>/runs/<run_id>.json``.

A flow writes its run manifest when the run starts (``status="running"``) and
rewrites it, atomically, as the run progresses and when it ends: what was
processed (``inputs``), the settings that shaped the output, software versions,
counts and the final status. It is a summary for people and tools; the truth of
what is done stays in the commit markers (:mod:`stemflow.store.commit`) and the
rows in the Parquet records (:mod:`stemflow.store.records`).

The stored keys are part of the storage contract: manifests written by earlier
versions read back unchanged (e.g. the output URL is stored under
``inputs["out_url"]``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stemflow.errors import StorageError
from stemflow.store.objects import read_bytes, write_atomic
from stemflow.store.paths import StorageOptions, check_component, filesystem, join_url
from stemflow.store.redact import redact

_SAFE_RUN_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}\.json")

RUN_STATUSES: tuple[str, ...] = ("running", "succeeded", "failed", "partial", "cancelled", "crashed")
"""Values of :attr:`RunManifest.status`: ``partial`` = finished with error rows; ``cancelled`` = stopped
on request (SIGTERM/SIGINT), nothing half-committed; ``crashed`` = found dead by a later run's
recovery, which recorded what it had committed."""

FINISHED_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "partial", "cancelled", "crashed"})
"""Statuses of runs that will write nothing more."""


@dataclass(frozen=True)
class RunManifest:
    """Contents of ``runs/<run_id>.json``; rewritten (atomically) as the run progresses.

    Attributes:
        run_id: the run.
        status: one of :data:`RUN_STATUSES`.
        started_at / finished_at: ISO 8601 UTC; ``finished_at`` is None while running.
        inputs: what was processed (``catalogue_url``, ``out_url`` = the output URL, ``model``…).
        settings: settings that shaped the output (chunk, overlap, precision, format…).
        versions: software versions (stemflow, torch, …).
        counts: integers (``planned``, ``committed``, ``skipped``, ``errors``, ``shards``…).
        progress: rewritten during the run: ``done``, ``planned``, ``planning_done``,
            ``tracks_per_hour``, ``eta_s``, ``updated_at`` (the run's heartbeat)…
        summary: what an operator needs at the end: ``errors_by_type``, ``quarantine``…
    """

    run_id: str
    status: str
    started_at: str
    finished_at: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    settings: Mapping[str, Any] = field(default_factory=dict, hash=False)
    versions: Mapping[str, Any] = field(default_factory=dict, hash=False)
    counts: Mapping[str, int] = field(default_factory=dict, hash=False)
    progress: Mapping[str, Any] = field(default_factory=dict, hash=False)
    summary: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        check_component(self.run_id, "run_id")
        if self.status not in RUN_STATUSES:
            raise StorageError(f"run status must be one of {RUN_STATUSES}, got {self.status!r}")
        bad = {k: v for k, v in self.counts.items() if not isinstance(v, int) or isinstance(v, bool)}
        if bad:
            raise StorageError(f"run counts must be integers, got {bad}")

    def to_json(self) -> bytes:
        """UTF-8 JSON with sorted keys."""
        body = {
            "run_id": self.run_id,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "inputs": dict(self.inputs),
            "settings": dict(self.settings),
            "versions": dict(self.versions),
            "counts": dict(self.counts),
        }
        body.update({k: dict(v) for k, v in (("progress", self.progress), ("summary", self.summary)) if v})
        body = redact(body)  # no secret from the settings (storage options, runtime_env) reaches the output
        try:
            return json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise StorageError(f"run manifest {self.run_id!r} is not JSON-serialisable: {e}") from e

    @classmethod
    def from_json(cls, data: bytes) -> RunManifest:
        """Parse :meth:`to_json` output.

        Raises:
            StorageError: malformed manifest.
        """
        try:
            body = json.loads(data.decode("utf-8"))
            return cls(**{k: body[k] for k in _RUN_MANIFEST_KEYS if k in body})
        except (ValueError, TypeError, KeyError) as e:
            raise StorageError(f"malformed run manifest: {e}") from e


_RUN_MANIFEST_KEYS: Sequence[str] = (
    "run_id", "status", "started_at", "finished_at", "inputs", "settings", "versions", "counts", "progress",
    "summary",
)


def run_manifest_url(output_url: str, run_id: str) -> str:
    """``<out>/runs/<run_id>.json``."""
    return join_url(output_url, "runs", f"{check_component(run_id, 'run_id')}.json")


def write_run_manifest(output_url: str, manifest: RunManifest, *, storage_options: StorageOptions = None) -> str:
    """Write (or replace) ``runs/<run_id>.json`` atomically; returns its URL."""
    url = run_manifest_url(output_url, manifest.run_id)
    write_atomic(url, manifest.to_json(), storage_options)
    return url


def iter_run_ids(output_url: str, *, storage_options: StorageOptions = None) -> Iterator[str]:
    """The ids of the runs with a manifest under ``<out>/runs/``, sorted (run ids start with their UTC time).

    Raises:
        StorageError: the listing failed.
    """
    fs, path = filesystem(join_url(output_url, "runs"), storage_options)
    try:
        names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) if fs.exists(path) else []
    except OSError as e:
        raise StorageError(f"cannot list the runs of {output_url!r}: {e}") from e
    fs.invalidate_cache(path)
    for name in names:
        if name.endswith(".json") and _SAFE_RUN_FILE.fullmatch(name):
            yield name[: -len(".json")]


def read_run_manifest(output_url: str, run_id: str, *, storage_options: StorageOptions = None) -> RunManifest:
    """Read ``runs/<run_id>.json``.

    Raises:
        FileNotFoundError: no manifest for ``run_id``.
        StorageError: malformed manifest.
    """
    return RunManifest.from_json(read_bytes(run_manifest_url(output_url, run_id), storage_options))

