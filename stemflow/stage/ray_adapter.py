"""The Ray adapter: one long-lived pool of model-holding actors per run, and Ray Jobs submission.

This is the only module that imports :mod:`ray`. The scheduling logic (what to
send where, crashes, shards, progress) is Ray-free in
:mod:`stemflow.stage.scheduler`; the work on each track is
:class:`stemflow.stage.worker.TrackWorker`'s, overlapped by
:class:`stemflow.stage.pipeline.BatchPipeline`. Here:

- :class:`RayPoolExecutor`: ``workers`` actors created once per run (the model
  loaded once per actor, ``num_gpus`` each on GPU nodes), each taking
  ``batches_in_flight`` calls at once (a threaded actor); batches go to the
  least-loaded actor. A dead actor process (a track that kills it, an OOM kill,
  a lost node) is restarted by Ray (``max_restarts=-1``) and its calls come back
  as :class:`~stemflow.stage.scheduler.WorkerCrash`; Ray never retries them
  itself (``max_task_retries=0``): the scheduler retries each track alone, a
  bounded number of times.
- :func:`run_stage`: a whole run through one pool; :func:`run_shard`: one list
  of tracks (the evaluation flow, tests).
- :func:`submit_job` / :func:`wait_for_job`: a run submitted to a cluster through
  the Ray Jobs API (long runs never go through Ray Client).

Only URLs and small records travel through Ray; decoded audio and stems live
inside one actor for the time its tracks take.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import ray
from ray.exceptions import RayError

from stemflow.catalogue.planning import Shard
from stemflow.catalogue.tracks import TrackRef
from stemflow.engine.separator import Separator
from stemflow.errors import StemflowError
from stemflow.hub.spec import ModelSpec
from stemflow.stage.pipeline import BatchPipeline
from stemflow.stage.progress import RunProgress
from stemflow.stage.scheduler import RunScheduler, RunSink, StageReport, WorkerCrash
from stemflow.stage.settings import ShardJob, ShardResult, StageSettings, TrackOutcome
from stemflow.stage.worker import TrackWorker

logger = logging.getLogger(__name__)

SeparatorFactory = Callable[[ModelSpec], Separator]
"""Builds an actor's separator instead of loading ``spec``'s model (a stand-in accelerator)."""


def connect_ray(settings: StageSettings) -> None:
    """Join the configured Ray cluster, or start a local one on demand (idempotent).

    Ray's core installs a fatal-signal handler for SIGTERM in the driver; the
    process's own Python handlers (a graceful stop) are put back afterwards.
    """
    if ray.is_initialized():
        return
    with _python_signal_handlers_kept():
        _init_ray(settings)


@contextlib.contextmanager
def _python_signal_handlers_kept() -> Iterator[None]:
    main = threading.current_thread() is threading.main_thread()
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if callable(handler):
                signal.signal(sig, handler)


def _init_ray(settings: StageSettings) -> None:
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


def actor_resources(settings: StageSettings, workers: int) -> tuple[float, float, int]:
    """(num_cpus, num_gpus, threads) of one actor, sized from the nodes when not set.

    GPU actors get the CPUs of their node's share per GPU (the smallest share
    among the GPU nodes alive; 1 if none is up yet, e.g. before the autoscaler
    starts one: then set ``cpus_per_worker``). CPU actors share the cluster's CPUs.
    """
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if settings.gpus_per_worker > 0:
        shares = [r.get("CPU", 0.0) / r["GPU"] for r in nodes if r.get("GPU")]
        default = max(1.0, math.floor(min(shares) * settings.gpus_per_worker)) if shares else 1.0
        cpus = settings.cpus_per_worker if settings.cpus_per_worker is not None else default
        return cpus, settings.gpus_per_worker, settings.torch_threads or 1
    total = sum(r.get("CPU", 0.0) for r in nodes) or 1.0
    cpus = settings.cpus_per_worker if settings.cpus_per_worker is not None else max(1.0, float(total // workers))
    return cpus, 0.0, settings.torch_threads or max(1, int(cpus))


class _PoolActor:
    """One worker of the pool: loads the model once, then processes batches (several at once)."""

    def __init__(self, model_spec: ModelSpec, job: ShardJob, settings: StageSettings, threads: int,
                 cpus: float, separator_factory: SeparatorFactory | None) -> None:
        if settings.gpus_per_worker > 0 and model_spec.device == "cpu":
            model_spec = replace(model_spec, device="cuda")  # Ray sets CUDA_VISIBLE_DEVICES per actor
        separator = separator_factory(model_spec) if separator_factory is not None else None
        worker = TrackWorker(model_spec, job=job, stem_format=settings.stem_format, bit_depth=settings.bit_depth,
                             torch_threads=threads, max_duration_s=settings.max_duration_s,
                             max_source_bytes=settings.max_source_bytes, retry=settings.retry_policy(),
                             max_decoded_bytes=settings.max_decoded_bytes,
                             stream_above_bytes=settings.stream_above_bytes, separator=separator)
        slots = max(1, int(cpus))
        self._pipeline = BatchPipeline(
            worker, io_threads=settings.io_threads or max(2, slots),
            cpu_threads=settings.cpu_threads or max(1, slots), pack=settings.pack_tracks,
            model_threads=settings.model_threads)

    def process(self, tracks: list[dict[str, Any]]) -> list[TrackOutcome]:
        """One batch: an outcome per track, in order."""
        return self._pipeline.process(tracks)

    def stats(self) -> dict[str, float]:
        """Seconds the model step was busy, and its calls (for the feed benchmark)."""
        return {"model_busy_s": self._pipeline.model_busy_s, "model_calls": self._pipeline.model_calls,
                "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


class RayPoolExecutor:
    """The scheduler's :class:`~stemflow.stage.scheduler.Executor` on a pool of Ray actors (see the module).

    An actor whose call failed is *down* until a ping answers (Ray restarts it and
    reloads the model): nothing is sent to it meanwhile, so only the batches that
    were running when its process died count as crashed, never the ones that
    would find it restarting.
    """

    def __init__(self, model_spec: ModelSpec, job: ShardJob, settings: StageSettings, *, workers: int,
                 separator_factory: SeparatorFactory | None = None) -> None:
        connect_ray(settings)
        cpus, gpus, threads = actor_resources(settings, workers)
        actor_class = ray.remote(_PoolActor).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=0,
            max_concurrency=settings.batches_in_flight)
        self.actors = [actor_class.remote(model_spec, job, settings, threads, cpus, separator_factory)
                       for _ in range(workers)]
        self._per_actor = settings.batches_in_flight
        self._load = [0] * workers
        self._up = [True] * workers
        self._refs: dict[Any, int] = {}
        self._pings: dict[Any, int] = {}
        self._ping_after: dict[int, float] = {}
        logger.info("pool of %d actors (%g CPUs, %g GPUs each), %d batches in flight each", workers, cpus, gpus,
                    self._per_actor)

    @property
    def capacity(self) -> int:
        """Batches the actors that are up can take at once."""
        return sum(self._up) * self._per_actor

    def submit(self, tracks: Sequence[Mapping[str, Any]]) -> Any:
        """Send a batch to the least-loaded actor that is up; its object ref."""
        index = min((i for i, up in enumerate(self._up) if up), key=self._load.__getitem__)
        ref = self.actors[index].process.remote([dict(t) for t in tracks])
        self._load[index] += 1
        self._refs[ref] = index
        return ref

    def wait(self, timeout_s: float) -> list[tuple[Any, list[TrackOutcome] | WorkerCrash]]:
        """The batches done within ``timeout_s`` (on an actor that died: :class:`WorkerCrash`)."""
        self._send_pings()
        refs = [*self._refs, *self._pings]
        if not refs:
            time.sleep(min(timeout_s, 0.05))
            return []
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout_s)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        done = []
        for ref in ready:
            if ref in self._pings:
                self._ping_answered(ref)
                continue
            index = self._refs.pop(ref)
            self._load[index] -= 1
            try:
                done.append((ref, list(ray.get(ref))))
            except RayError as e:
                done.append((ref, WorkerCrash(f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")))
                self._mark_down(index)
        return done

    def _mark_down(self, index: int) -> None:
        if self._up[index]:
            logger.warning("actor %d of the pool died; waiting for Ray to restart it", index)
        self._up[index] = False
        self._ping_after.setdefault(index, time.monotonic())

    def _send_pings(self) -> None:
        now = time.monotonic()
        pinging = set(self._pings.values())
        for index, after in list(self._ping_after.items()):
            if index not in pinging and now >= after:
                self._pings[self.actors[index].stats.remote()] = index

    def _ping_answered(self, ref: Any) -> None:
        index = self._pings.pop(ref)
        try:
            ray.get(ref)
        except RayError:
            self._ping_after[index] = time.monotonic() + 0.5  # still restarting: ask again
            return
        self._ping_after.pop(index, None)
        self._up[index] = True
        logger.info("actor %d of the pool is back", index)

    def cancel_all(self) -> None:
        """Kill the actors (the batches in flight end without outcomes)."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self._refs.clear()
        self._pings.clear()

    def stats(self) -> list[dict[str, Any]]:
        """Each actor's :meth:`_PoolActor.stats` (model busy time, pid, node)."""
        return list(ray.get([actor.stats.remote() for actor in self.actors]))

    def close(self) -> None:
        """End the pool."""
        self.cancel_all()


def run_stage(shards: Iterator[Shard], model_spec: ModelSpec, job: ShardJob, settings: StageSettings,
              sink: RunSink, *, stop: threading.Event | None = None, progress: RunProgress | None = None,
              separator_factory: SeparatorFactory | None = None,
              on_pool: Callable[[RayPoolExecutor], None] | None = None) -> StageReport:
    """Separate every shard of a run on one pool of ``settings.workers`` actors.

    The pool starts with the first shard: a run with nothing to do starts no
    actor (and no GPU node). ``on_pool`` sees the pool once it is created (tests
    and the feed benchmark ask its actors for their node and stats).
    """
    progress = progress if progress is not None else RunProgress()
    first = next(shards, None)
    if first is None:
        progress.planning_done = True
        sink.progress(progress)
        return StageReport(stopped=stop is not None and stop.is_set(), incomplete_shards=0, pool_started=False)
    executor = RayPoolExecutor(model_spec, job, settings, workers=settings.workers,
                               separator_factory=separator_factory)
    scheduler = RunScheduler(executor, settings, sink, stop=stop, progress=progress)
    try:
        if on_pool is not None:
            on_pool(executor)
        scheduler.run(itertools.chain([first], shards))
    finally:
        executor.close()
    return StageReport(stopped=scheduler.stopped, incomplete_shards=scheduler.incomplete_shards, pool_started=True)


class _Collect:
    """A sink that keeps the outcomes (for :func:`run_shard`)."""

    def __init__(self) -> None:
        self.outcomes: list[TrackOutcome] = []

    def shard_started(self, shard: Shard) -> None:
        """Nothing to journal."""

    def shard_finished(self, shard: Shard, outcomes: Sequence[TrackOutcome]) -> None:
        self.outcomes.extend(outcomes)

    def progress(self, progress: RunProgress) -> None:
        """Nothing to report."""


def run_shard(tracks: Sequence[Mapping[str, Any]], model_spec: ModelSpec, job: ShardJob,
              settings: StageSettings = StageSettings()) -> ShardResult:
    """Separate ``tracks`` (records with ``url`` and ``track_id``) on a pool of actors made for them.

    One :class:`TrackOutcome` per distinct track, in input order. Raises
    :class:`StemflowError` only if the pool itself keeps failing; a bad track is
    an ``error`` outcome.
    """
    started = time.perf_counter()
    refs = tuple(TrackRef.from_dict(t) for t in tracks)
    if not refs:
        return ShardResult(outcomes=(), wall_s=0.0, workers=0)
    workers = min(settings.workers, len(refs))
    sink = _Collect()
    run_stage(iter([Shard(0, refs)]), model_spec, job, replace(settings, workers=workers), sink)
    if len(sink.outcomes) != len({t.track_id for t in refs}):
        raise StemflowError(f"the Ray stage returned {len(sink.outcomes)} outcomes for {len(refs)} tracks")
    wall_s = time.perf_counter() - started
    logger.info("%d tracks done in %.1f s on %d workers", len(refs), wall_s, workers)
    return ShardResult(outcomes=tuple(sink.outcomes), wall_s=wall_s, workers=workers)


AGENT_WAIT_S = 120.0
"""How long :func:`submit_job` waits for a cluster whose job agent is not up yet (a fresh or loaded head)."""

_NO_AGENT = "No available agent to submit job"


def submit_job(address: str, entrypoint: str, *, runtime_env: Mapping[str, Any] | None = None,
               submission_id: str | None = None, metadata: Mapping[str, str] | None = None,
               agent_wait_s: float = AGENT_WAIT_S) -> str:
    """Submit ``entrypoint`` to the cluster's Ray Jobs API at ``address`` (``http://head:8265``); the job id.

    Ray answers "No available agent to submit job, please try again later" (HTTP 500)
    until a head's job agent is up: that answer is retried every 2 s for
    ``agent_wait_s``; any other error is raised at once (nothing was submitted).
    """
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=dict(runtime_env or {}),
                                     submission_id=submission_id, metadata=dict(metadata or {}))
        except RuntimeError as e:
            if _NO_AGENT not in str(e) or time.monotonic() > deadline:
                raise
            logger.info("%s: the cluster's job agent is not up yet; retrying", address)
            time.sleep(2.0)


def wait_for_job(address: str, job_id: str, *, poll_s: float = 10.0, timeout_s: float | None = None,
                 on_poll: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Poll a submitted job until it ends; ``(status, the tail of its logs)``.

    ``on_poll(status)`` runs at every poll (a flow reports the run's progress there).

    Raises:
        StemflowError: ``timeout_s`` passed first (the job keeps running).
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = client.get_job_status(job_id)
        if on_poll is not None:
            on_poll(str(status))
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status), client.get_job_logs(job_id)[-4000:]
        if deadline is not None and time.monotonic() > deadline:
            raise StemflowError(f"Ray job {job_id} still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)
