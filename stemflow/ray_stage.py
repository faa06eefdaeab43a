"""The Ray stage: separate one shard of tracks on a pool of model-holding actors.

This is the only module that imports :mod:`ray`. The flows in ``pipelines/``
plan and shard a catalogue, then call :func:`run_shard` once per shard; the CLI
and tests may call it directly.

Data path (one Ray Data pipeline per shard)::

    from_items(small track records: url, track_id, size)
      -> map_batches(_SeparateActor, ActorPoolStrategy(min, max), num_gpus=1 | CPUs)
           per actor: model loaded once in __init__
           per call:  fetch + decode (I/O threads, prefetched)
                      ||  separate (caller thread; the call's tracks share batches: pack_tracks)
                      ||  encode + upload stems + create-only commit marker (I/O threads)
      -> small outcome records back to the driver (status, error, Parquet rows as JSON)

Only URLs and small records travel through the object store; decoded audio and
stems live inside one actor for the time one track takes. Memory per actor is
bounded by ``tracks_per_call`` decoded sources plus ``max_pending_uploads``
tracks of stems being encoded; ``max_tasks_in_flight_per_actor=1`` keeps Ray Data
from queueing more work than that on an actor.

Exactly once: stems are written first, the ``_COMMITTED.json`` marker last with
a create-only write (:func:`stemflow.commit.commit_track`). A track whose marker
already exists is ``skipped`` (no Parquet rows, so two racing runs never both
record it), unless this same run committed it in an earlier attempt of the
shard: then its rows are rebuilt from the marker, which carries them. Each track's failure becomes an ``error``
outcome; a batch is never dropped for one bad track.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import ray
import ray.data
import torch

import stemflow
from stemflow.commit import CommitMarker, commit_track, read_marker, stem_url, write_stem
from stemflow.audio import DecodedAudio, probe
from stemflow.errors import AudioDecodeError, ConfigError, StemflowError, StorageError
from stemflow.loading import LoadedModel, load_custom, load_registered
from stemflow.records import error_row, stem_rows
from stemflow.separate import Separator
from stemflow.retry import DEFAULT_RETRY, RetryPolicy
from stemflow.storage import object_info, read_bytes
from stemflow.track import TrackResult, decode_track, encode_stems, measure_track, separate_decoded

logger = logging.getLogger(__name__)

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
        if (self.max_duration_s is not None and self.max_duration_s <= 0) or (
                self.max_source_bytes is not None and self.max_source_bytes <= 0):
            raise ConfigError("max_duration_s and max_source_bytes must be > 0 (or None for no limit)")
        self.retry_policy()  # validates the retry fields

    def retry_policy(self) -> RetryPolicy:
        """The storage retry policy of the workers (:mod:`stemflow.retry`; botocore's is in storage options)."""
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


def connect_ray(settings: StageSettings) -> None:
    """Join the configured Ray cluster, or start a local one on demand (idempotent)."""
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"runtime_env": dict(settings.runtime_env)} if settings.runtime_env else {}
    if settings.ray_address:
        if not settings.ray_address.startswith("ray://"):  # Ray Client takes fewer options
            kwargs["configure_logging"] = False
        ray.init(address=settings.ray_address, **kwargs)
        logger.info("joined Ray cluster at %s", settings.ray_address)
    else:
        num_cpus = settings.local_num_cpus or os.cpu_count() or 1
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, configure_logging=False,
                 **kwargs)
        logger.info("started a local Ray with %d CPUs", num_cpus)


def _actor_resources(settings: StageSettings) -> tuple[float, float, int]:
    """(num_cpus, num_gpus, torch threads) for one actor."""
    if settings.gpus_per_worker > 0:
        cpus = settings.cpus_per_worker if settings.cpus_per_worker is not None else 1.0
        return cpus, settings.gpus_per_worker, settings.torch_threads or max(1, int(cpus))
    total = ray.cluster_resources().get("CPU", 1.0)
    cpus = settings.cpus_per_worker
    if cpus is None:
        cpus = max(1.0, float(int(total // settings.workers)))
    return cpus, 0.0, settings.torch_threads or max(1, int(cpus))


@dataclass(frozen=True)
class ModelSpec:
    """How an actor builds its :class:`stemflow.separate.Separator`; small and picklable.

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
    precision: str = "float32"
    chunk_size: int | None = None
    num_overlap: int | None = None

    def __post_init__(self) -> None:
        if (self.name is None) == (self.config_path is None):
            raise ConfigError("a ModelSpec needs exactly one of name or config_path")


def load_spec(spec: ModelSpec) -> LoadedModel:
    """Load the model named by ``spec`` (weights verified; see :mod:`stemflow.loading`)."""
    if spec.config_path is not None:
        if spec.checkpoint_path is None:
            raise ConfigError(f"model config {spec.config_path!r} given without a checkpoint")
        return load_custom(spec.config_path, spec.checkpoint_path)
    if spec.cache_dir is None:
        raise ConfigError(f"model {spec.name!r} needs a weights cache folder (cache_dir)")
    return load_registered(str(spec.name), spec.cache_dir, offline=spec.offline)


def build_separator(spec: ModelSpec, torch_threads: int | None = None) -> Separator:
    """Load the model of ``spec`` once and wrap it in a :class:`Separator`."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    loaded = load_spec(spec)
    return Separator(loaded.model, device=spec.device, batch_size=spec.batch_size,
                     precision=spec.precision, chunk_size=spec.chunk_size, num_overlap=spec.num_overlap)


@dataclass
class _Fetched:
    decoded: DecodedAudio | None
    error: BaseException | None
    seconds: float
    decode_s: float = 0.0


@dataclass
class _Separated:
    track_id: str
    source_url: str
    started: float
    result: TrackResult | None = None
    error: BaseException | None = None
    recorded: tuple[Mapping[str, Any], ...] | None = None  # already committed: its rows, if ours


class TrackWorker:
    """Fetch + decode, separate, then encode, upload and commit: the steps of
    :func:`stemflow.track.separate_track` (the same functions: ``decode_track``,
    ``Separator.separate``/``separate_many``, ``measure_track``), split so they overlap.

    The steps are separate methods so an actor can fetch and finish on I/O
    threads while its caller thread separates. None of them raises for a bad
    track: failures travel as values and end as ``error`` outcomes. The marker's
    ``extra["record"]`` keeps the track's record columns, so rows lost to a
    crash between commit and Parquet can be rebuilt without the audio
    (:func:`rows_from_marker`).

    Memory per track is bounded before anything big is read: a source larger
    than ``max_source_bytes`` (one HEAD) is refused unread, and one whose header
    claims more than ``max_duration_s`` is refused undecoded; both become error
    rows that name the limit. ``None`` disables a limit.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        job: ShardJob,
        stem_format: str = "flac",
        bit_depth: int = 24,
        torch_threads: int | None = None,
        max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
        max_source_bytes: int | None = DEFAULT_MAX_SOURCE_BYTES,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.separator = build_separator(spec, torch_threads)
        self.retry = retry
        self.max_duration_s = max_duration_s
        self.max_source_bytes = max_source_bytes
        self.device = spec.device
        self.job = job
        self.stem_format = stem_format
        self.bit_depth = bit_depth

    def fetch(self, url: str) -> _Fetched:
        """Read and decode the source object (never raises). Runs on an I/O thread, so the
        next tracks are read and decoded while the model separates the current one."""
        started = time.perf_counter()
        try:
            if self.max_source_bytes is not None:
                size = object_info(url, self.job.storage_options, retry=self.retry).size
                if size > self.max_source_bytes:
                    raise AudioDecodeError(
                        f"{url}: the source is {size} bytes, over max_source_bytes={self.max_source_bytes}; "
                        "not read (raise the limit in the stage settings to process it)")
            data = read_bytes(url, self.job.storage_options, retry=self.retry)
            self._check_duration(data, url)
            decode_started = time.perf_counter()
            decoded = decode_track(self.separator, data, name=url)
            self.separator.check_audio(decoded.samples, decoded.sample_rate)
        except Exception as e:  # noqa: BLE001 - becomes this track's error row
            return _Fetched(None, e, time.perf_counter() - started)
        done = time.perf_counter()
        return _Fetched(decoded, None, done - started, decode_s=done - decode_started)

    def separate(self, track_id: str, url: str, fetched: Future[_Fetched] | _Fetched) -> _Separated:
        """Separate and measure one fetched source, unless already committed (never raises)."""
        sep, got = self._prepare(track_id, url, fetched)
        if got is not None and got.decoded is not None:
            try:
                started = time.perf_counter()
                stems = self.separator.separate(got.decoded.samples, got.decoded.sample_rate)
                timings = {"decode": got.decode_s, "separate": time.perf_counter() - started}
                sep.result = measure_track(got.decoded, stems, name=url, timings_s=timings)
            except Exception as e:  # noqa: BLE001 - becomes this track's error row
                sep.error = e
        return sep

    def separate_packed(self, items: Sequence[tuple[str, str, Future[_Fetched] | _Fetched]]) -> list[_Separated]:
        """Like :meth:`separate` for several ``(track_id, url, fetched)`` at once: their chunks share
        the model's batches (:func:`stemflow.track.separate_decoded`), so no batch runs part empty
        but the very last. Never raises; a batch-wide failure falls back to one track at a time."""
        prepared = [self._prepare(track_id, url, fetched) for track_id, url, fetched in items]
        ready = [(sep, got) for sep, got in prepared if got is not None and got.decoded is not None]
        if len(ready) > 1:
            try:
                results = separate_decoded(
                    self.separator, [(got.decoded, sep.source_url, got.decode_s) for sep, got in ready])
            except Exception as e:  # noqa: BLE001 - e.g. out of memory for the packed batch
                logger.warning("packed separation of %d tracks failed (%s); one at a time", len(ready), e)
            else:
                for (sep, _), result in zip(ready, results):
                    sep.result = result
                return [sep for sep, _ in prepared]
        return [self.separate(sep.track_id, sep.source_url, got) if got is not None else sep for sep, got in prepared]

    def _prepare(self, track_id: str, url: str, fetched: Future[_Fetched] | _Fetched
                 ) -> tuple[_Separated, _Fetched | None]:
        """The track's record so far, and its decoded audio when it is to be separated (``None``:
        already committed, or failed to fetch or decode, with the error set)."""
        got = fetched.result() if isinstance(fetched, Future) else fetched
        sep = _Separated(track_id, url, started=time.perf_counter() - got.seconds)
        try:
            job = self.job
            marker = read_marker(job.output_url, job.model_id, track_id, storage_options=job.storage_options,
                                 retry=self.retry)
            if marker is not None:
                sep.recorded = tuple(rows_from_marker(marker, job)) if marker.run_id == job.run_id else ()
                return sep, None
            if got.error is not None:
                raise got.error
        except Exception as e:  # noqa: BLE001 - becomes this track's error row
            sep.error = e
            return sep, None
        return sep, got

    def _check_duration(self, data: bytes, url: str) -> None:
        """Refuse a source whose header claims more than ``max_duration_s`` (before decoding it)."""
        if self.max_duration_s is None or not data:
            return
        try:
            duration_s = probe(data, name=url).duration_s
        except StemflowError:
            return  # undecodable: decode_track raises the decoder's own clear error
        if duration_s is not None and duration_s > self.max_duration_s:
            raise AudioDecodeError(
                f"{url}: the source is {duration_s:.0f} s long, over max_duration_s={self.max_duration_s:g}; "
                "not decoded (raise the limit in the stage settings to process it)")

    def finish(self, sep: _Separated) -> TrackOutcome:
        """Encode and store the stems write-once, then create the marker (never raises)."""
        if sep.recorded is not None:  # committed before: by this run (a retried shard) or another
            return self._outcome(sep, STATUS_OK if sep.recorded else STATUS_SKIPPED, None, sep.recorded)
        if sep.error is None:
            try:
                return self._store_and_commit(sep)
            except Exception as e:  # noqa: BLE001 - becomes this track's error row
                sep.error = e
        message = f"{type(sep.error).__name__}: {sep.error}"
        row = error_row(self._track_columns(sep), message)
        return self._outcome(sep, STATUS_ERROR, message, (row,))

    def _store_and_commit(self, sep: _Separated) -> TrackOutcome:
        job, result = self.job, sep.result
        if result is None:
            raise StemflowError(f"track {sep.track_id!r} has no separation to store")
        started = time.perf_counter()
        stems: dict[str, dict[str, Any]] = {}
        stored = []
        for stem, encoded in encode_stems(result, format=self.stem_format, bit_depth=self.bit_depth).items():
            obj = write_stem(job.output_url, job.model_id, sep.track_id, stem, self.stem_format,
                             encoded.data, storage_options=job.storage_options, retry=self.retry)
            stored.append(obj)
            stems[stem] = {
                **result.stem_quality.get(stem, {}),
                "stem_url": stem_url(job.output_url, job.model_id, sep.track_id, stem, self.stem_format),
                "stem_bytes": obj.size,
                "stem_sha256": obj.sha256,
            }
        track = {**self._track_columns(sep), "encode_s": time.perf_counter() - started}
        track["processing_s"] = time.perf_counter() - sep.started
        won = commit_track(job.output_url, job.model_id, sep.track_id, stored, source_url=sep.source_url,
                           run_id=job.run_id, extra={"record": {"track": track, "stems": stems}},
                           storage_options=job.storage_options, retry=self.retry)
        if not won:
            return self._outcome(sep, STATUS_SKIPPED, None, ())
        rows = stem_rows({**track, **_partition(job)}, stems)
        return self._outcome(sep, STATUS_OK, None, tuple(rows))

    def _track_columns(self, sep: _Separated) -> dict[str, Any]:
        columns: dict[str, Any] = {
            "track_id": sep.track_id, "source_url": sep.source_url, "device": self.device,
            "stemflow_version": stemflow.__version__,
            "processing_s": time.perf_counter() - sep.started,
        }
        result = sep.result
        if result is not None:
            columns.update(result.track_quality)
            columns.update({
                "duration_s": result.duration_s, "sample_rate": result.sample_rate,
                "source_sample_rate": result.decoded.source_sample_rate,
                "channels_in": result.decoded.source_channels,
                "decode_s": result.timings_s.get("decode"), "separate_s": result.timings_s.get("separate"),
                "quality_s": result.timings_s.get("quality"),
            })
        return columns

    def _outcome(self, sep: _Separated, status: str, error: str | None,
                 rows: tuple[Mapping[str, Any], ...]) -> TrackOutcome:
        return TrackOutcome(sep.track_id, sep.source_url, status, error, tuple(rows),
                            time.perf_counter() - sep.started)


def _partition(job: ShardJob) -> dict[str, str]:
    return {"model_id": job.model_id, "run_date": job.run_date, "run_id": job.run_id}


def rows_from_marker(marker: CommitMarker, job: ShardJob) -> list[dict[str, Any]]:
    """The ``ok`` rows of a committed track, rebuilt from its marker, for the run of ``job``.

    Raises:
        StorageError: the marker holds no record columns (not written by this stage).
    """
    record = marker.extra.get("record")
    if not isinstance(record, Mapping) or not record.get("stems"):
        raise StorageError(f"the marker of track {marker.track_id!r} holds no record columns")
    order = [s.stem for s in marker.stems if s.stem in record["stems"]]  # the marker keeps commit order
    return stem_rows({**record["track"], **_partition(job)}, {s: record["stems"][s] for s in order})


class _SeparateActor:
    """A Ray Data callable class: loads the model once, then separates batches of tracks."""

    def __init__(
        self,
        model_spec: ModelSpec,
        job: ShardJob,
        settings: StageSettings,
        torch_threads: int,
    ) -> None:
        if settings.gpus_per_worker > 0 and model_spec.device == "cpu":
            model_spec = replace(model_spec, device="cuda")  # Ray sets CUDA_VISIBLE_DEVICES per actor
        self._worker = TrackWorker(
            model_spec, job=job, stem_format=settings.stem_format, bit_depth=settings.bit_depth,
            torch_threads=torch_threads, max_duration_s=settings.max_duration_s,
            max_source_bytes=settings.max_source_bytes, retry=settings.retry_policy(),
        )
        self._io = ThreadPoolExecutor(settings.io_threads, thread_name_prefix="stemflow-io")
        self._max_pending = settings.max_pending_uploads
        self._pack = settings.pack_tracks

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
        """Separate every track of ``batch`` (columns url, track_id); one outcome row each."""
        urls = [str(u) for u in batch["url"]]
        track_ids = [str(t) for t in batch["track_id"]]
        fetches = [self._io.submit(self._worker.fetch, url) for url in urls]
        pending: list[Future[TrackOutcome]] = []
        outcomes: list[TrackOutcome] = []
        if self._pack:
            for separated in self._worker.separate_packed(list(zip(track_ids, urls, fetches))):
                pending.append(self._io.submit(self._worker.finish, separated))
        else:
            for url, track_id, fetched in zip(urls, track_ids, fetches):
                while len(pending) >= self._max_pending:
                    outcomes.append(pending.pop(0).result())
                separated = self._worker.separate(track_id, url, fetched)
                pending.append(self._io.submit(self._worker.finish, separated))
        outcomes.extend(f.result() for f in pending)
        return {
            "track_id": [o.track_id for o in outcomes],
            "source_url": [o.source_url for o in outcomes],
            "status": [o.status for o in outcomes],
            "error": [o.error or "" for o in outcomes],
            "rows_json": [json.dumps(list(o.rows), default=_json_default) for o in outcomes],
            "seconds": [o.seconds for o in outcomes],
        }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_shard(
    tracks: Sequence[Mapping[str, Any]],
    model_spec: ModelSpec,
    job: ShardJob,
    settings: StageSettings = StageSettings(),
) -> ShardResult:
    """Separate ``tracks`` (records with ``url`` and ``track_id``) on a Ray actor pool.

    Returns one :class:`TrackOutcome` per input track, in no particular order.
    Raises :class:`StemflowError` only if the Ray pipeline itself fails (actors
    cannot start, the cluster goes away); a bad track is an ``error`` outcome.
    """
    started = time.perf_counter()
    if not tracks:
        return ShardResult(outcomes=(), wall_s=0.0, workers=0)
    connect_ray(settings)
    num_cpus, num_gpus, threads = _actor_resources(settings)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = settings.show_progress
    ctx.print_on_execution_start = settings.show_progress
    workers = min(settings.workers, len(tracks))
    min_workers = min(settings.min_workers or workers, workers)
    items = [{"url": str(t["url"]), "track_id": str(t["track_id"])} for t in tracks]
    dataset = ray.data.from_items(items).map_batches(
        _SeparateActor,
        batch_size=settings.tracks_per_call,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            min_size=min_workers, max_size=workers, max_tasks_in_flight_per_actor=1
        ),
        fn_constructor_kwargs={
            "model_spec": model_spec,
            "job": job,
            "settings": settings,
            "torch_threads": threads,
        },
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
    try:
        outcomes = tuple(_outcome_from_row(row) for row in dataset.iter_rows())
    except Exception as e:  # noqa: BLE001 - Ray wraps everything; surface one type
        raise StemflowError(f"the Ray stage failed on a shard of {len(tracks)} tracks: {e}") from e
    _check_complete(items, outcomes)
    wall_s = time.perf_counter() - started
    logger.info("shard of %d tracks done in %.1f s on %d workers", len(items), wall_s, workers)
    return ShardResult(outcomes=outcomes, wall_s=wall_s, workers=workers)


def _outcome_from_row(row: Mapping[str, Any]) -> TrackOutcome:
    return TrackOutcome(
        track_id=str(row["track_id"]),
        source_url=str(row["source_url"]),
        status=str(row["status"]),
        error=str(row["error"]) or None,
        rows=tuple(json.loads(str(row["rows_json"]))),
        seconds=float(row["seconds"]),
    )


def _check_complete(items: Sequence[Mapping[str, str]], outcomes: Sequence[TrackOutcome]) -> None:
    """Every input track must come back exactly once; anything else is a stage bug."""
    sent = sorted(i["track_id"] for i in items)
    got = sorted(o.track_id for o in outcomes)
    if sent != got:
        raise StemflowError(f"the Ray stage returned {len(got)} outcomes for {len(sent)} tracks")

