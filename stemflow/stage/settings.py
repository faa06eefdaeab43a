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

DEFAULT_STREAM_ABOVE_BYTES = 128 << 20
"""Decoded (or source) size above which a track streams (128 MiB: about 6 min at 44.1 kHz stereo float32)."""

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

    Keeping the accelerator busy: each actor takes ``batches_in_flight`` calls at
    once; while one call's tracks are on the model, the next call's are fetched
    and decoded (``io_threads``) and the previous one's are measured, encoded,
    uploaded and committed (``cpu_threads``). ``None`` sizes the pools from the
    actor's CPUs. A track whose worker process dies ``max_worker_crashes`` times
    becomes an error row ("crashed its worker N times") and the run goes on.
    ``stop_grace_s``: on a stop request, how long in-flight tracks may finish
    before their actors are killed (nothing is half-committed either way).
    Memory per track: a track whose source object or decoded size (model rate,
    stereo float32) is above ``stream_above_bytes`` (default 128 MiB, about six
    minutes at 44.1 kHz), or whose header does not tell its length, is decoded,
    separated, measured and encoded block by block from a local copy
    (:mod:`stemflow.stage.streamed`), so no track length grows a worker's memory;
    shorter ones are held whole and share the model's batches. ``None``: every
    track in memory. ``max_duration_s``/``max_source_bytes``/``max_decoded_bytes``
    refuse a track outright (an error row).
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
    batches_in_flight: int = 3
    model_threads: int = 2
    io_threads: int | None = None
    cpu_threads: int | None = None
    max_pending_uploads: int = 2
    max_worker_crashes: int = 3
    stop_grace_s: float = 20.0
    progress_interval_s: float = 5.0
    index_flush_tracks: int = 20_000
    stem_format: str = "flac"
    bit_depth: int = 24
    show_progress: bool = False
    runtime_env: Mapping[str, Any] | None = None
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S
    max_source_bytes: int | None = DEFAULT_MAX_SOURCE_BYTES
    max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES
    stream_above_bytes: int | None = DEFAULT_STREAM_ABOVE_BYTES
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
        counts = {"tracks_per_call": self.tracks_per_call, "max_pending_uploads": self.max_pending_uploads,
                  "batches_in_flight": self.batches_in_flight, "max_worker_crashes": self.max_worker_crashes,
                  "model_threads": self.model_threads,
                  "index_flush_tracks": self.index_flush_tracks, "io_threads": self.io_threads or 1,
                  "cpu_threads": self.cpu_threads or 1}
        small = sorted(name for name, value in counts.items() if value < 1)
        if small:
            raise ConfigError(f"{', '.join(small)} must be >= 1")
        if self.stop_grace_s < 0 or self.progress_interval_s <= 0:
            raise ConfigError("stop_grace_s must be >= 0 and progress_interval_s > 0")
        if any(limit is not None and limit <= 0
               for limit in (self.max_duration_s, self.max_source_bytes, self.max_decoded_bytes,
                             self.stream_above_bytes)):
            raise ConfigError("max_duration_s, max_source_bytes, max_decoded_bytes and stream_above_bytes must be "
                              "> 0 (or None for no limit)")
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
    """One track's result as the driver sees it: small, JSON-able.

    ``error_type``: for an error, its class (:data:`stemflow.store.records.ERROR_TYPES`).
    """

    track_id: str
    source_url: str
    status: str
    error: str | None
    rows: tuple[Mapping[str, Any], ...]
    seconds: float
    error_type: str | None = None


@dataclass(frozen=True)
class ShardResult:
    """All outcomes of one shard, plus wall time and the resources it ran on."""

    outcomes: tuple[TrackOutcome, ...]
    wall_s: float
    workers: int

    def errors_by_type(self) -> dict[str, int]:
        """Error outcomes counted by ``error_type``."""
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            if outcome.status == STATUS_ERROR:
                key = outcome.error_type or "internal"
                counts[key] = counts.get(key, 0) + 1
        return counts

    def count(self, status: str) -> int:
        """Number of tracks that ended with ``status``."""
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def rows(self) -> list[Mapping[str, Any]]:
        """The Parquet rows of this shard: committed tracks' stems plus error rows."""
        return [row for o in self.outcomes if o.status != STATUS_SKIPPED for row in o.rows]

