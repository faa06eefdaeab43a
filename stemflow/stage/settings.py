"""What the stage is told and what it reports: its settings, a shard's job, and the outcomes.

:class:`StageSettings` says how the Ray stage runs (cluster, actors, resources,
stem format, per-track limits, storage retries); :class:`ShardJob` says where one
shard writes and under which ids. :class:`TrackOutcome` and :class:`ShardResult`
are what comes back to the driver: small, JSON-able records, one per track, with
a status among :data:`STATUS_OK`, :data:`STATUS_ERROR` and :data:`STATUS_SKIPPED`.
Plain data only: no Ray, no torch, so the flows and the CLI validate settings
before anything starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stemflow.audio.blocks import DEFAULT_MAX_DECODED_BYTES
from stemflow.errors import ConfigError
from stemflow.store.retry import DEFAULT_RETRY, RetryPolicy

#: Outcome statuses, as they appear in :class:`ShardResult` and the ``status`` column.
STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_SKIPPED = "skipped"

DEFAULT_MAX_DURATION_S = 7200.0
"""Longest source a worker decodes (2 h): decoded at 44.1 kHz stereo float32 that is 2.5 GB."""

DEFAULT_MAX_SOURCE_BYTES = 2 << 30
"""Largest source object a worker reads into memory (2 GiB; a 2 h 16-bit stereo WAV is 1.3 GB)."""


@dataclass(frozen=True)
class StageSettings:
    """How the Ray stage runs: where Ray is, how many actors, what each one holds.

    ``ray_address`` None starts (or reuses) a local Ray with ``local_num_cpus``
    CPUs; ``"auto"`` or ``"ray://host:10001"`` joins an existing cluster (its
    workers need stemflow installed, or a ``runtime_env`` given here).
    ``gpus_per_worker`` > 0 gives each actor that many GPUs; 0 makes CPU actors
    with ``cpus_per_worker`` CPUs each, and torch uses that many threads.
    ``pack_tracks``: the ``tracks_per_call`` tracks an actor gets at once share
    the model's batches (short tracks and tails fill whole batches; same stems),
    at the cost of holding those tracks decoded together.
    """

    ray_address: str | None = None
    local_num_cpus: int | None = None
    workers: int = 1
    min_workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None
    torch_threads: int | None = None
    tracks_per_call: int = 2
    pack_tracks: bool = True
    io_threads: int = 2
    max_pending_uploads: int = 2
    stem_format: str = "flac"
    bit_depth: int = 24
    show_progress: bool = False
    runtime_env: Mapping[str, Any] | None = None
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S
    max_source_bytes: int | None = DEFAULT_MAX_SOURCE_BYTES
    max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES
    retry_attempts: int = DEFAULT_RETRY.attempts
    retry_base_delay_s: float = DEFAULT_RETRY.base_delay_s
    retry_max_delay_s: float = DEFAULT_RETRY.max_delay_s

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.min_workers is not None and not 1 <= self.min_workers <= self.workers:
            raise ConfigError(f"min_workers must be in 1..workers, got {self.min_workers}")
        if self.gpus_per_worker < 0:
            raise ConfigError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.tracks_per_call < 1 or self.io_threads < 1 or self.max_pending_uploads < 1:
            raise ConfigError("tracks_per_call, io_threads and max_pending_uploads must be >= 1")
        if any(limit is not None and limit <= 0
               for limit in (self.max_duration_s, self.max_source_bytes, self.max_decoded_bytes)):
            raise ConfigError("max_duration_s and max_source_bytes and max_decoded_bytes must be > 0 (or None for no "
                              "limit)")
        self.retry_policy()  # validates the retry fields

    def retry_policy(self) -> RetryPolicy:
        """The storage retry policy of the workers (:mod:`stemflow.store.retry`; botocore's is in storage options)."""
        return RetryPolicy(attempts=self.retry_attempts, base_delay_s=self.retry_base_delay_s,
                           max_delay_s=self.retry_max_delay_s)


@dataclass(frozen=True)
class ShardJob:
    """What one shard needs besides its tracks: where to write and under which ids."""

    output_url: str
    model_id: str
    run_id: str
    run_date: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackOutcome:
    """One track's result as the driver sees it: small, JSON-able."""

    track_id: str
    source_url: str
    status: str
    error: str | None
    rows: tuple[Mapping[str, Any], ...]
    seconds: float


@dataclass(frozen=True)
class ShardResult:
    """All outcomes of one shard, plus wall time and the resources it ran on."""

    outcomes: tuple[TrackOutcome, ...]
    wall_s: float
    workers: int

    def count(self, status: str) -> int:
        """Number of tracks that ended with ``status``."""
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def rows(self) -> list[Mapping[str, Any]]:
        """The Parquet rows of this shard: committed tracks' stems plus error rows."""
        return [row for o in self.outcomes if o.status != STATUS_SKIPPED for row in o.rows]

