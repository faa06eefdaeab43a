"""Planning: what is left to do for a ``model_id``, streamed out in shards while the catalogue is read.

:func:`plan_stream` reads a catalogue (a folder/prefix to list, or a
CSV/JSONL/Parquet manifest read in row batches), anti-joins each batch with the
model's committed index (:mod:`stemflow.store.index`, a sorted key array:
``searchsorted``, no request per track), drops ids already planned in this run,
and yields numbered :class:`Shard` s as soon as they fill. Memory is bounded by
the index (10 bytes a committed track), one batch, one shard and the keys
planned so far (10 bytes a track to do), whatever the catalogue's size;
separation starts on the first shard while planning goes on. :class:`PlanCounts`
is updated as it goes (catalogue entries, already committed, to do, refused).

The index is advisory: the worker checks each track's marker just before
separating it, so a stale index costs a skip, never a second commit.

:func:`uncommitted` and :func:`plan` are the per-track-probe planner for small
catalogues and callers without an index.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from stemflow.catalogue.listing import list_audio
from stemflow.catalogue.manifests import ManifestBatch, is_manifest, read_manifest, read_manifest_batches
from stemflow.catalogue.tracks import TrackRef
from stemflow.errors import StorageError
from stemflow.store.commit import committed_tracks, marker_url
from stemflow.store.index import KEY_DTYPE, CommittedIndex, track_keys
from stemflow.store.objects import read_many
from stemflow.store.paths import StorageOptions


@dataclass(frozen=True)
class Shard:
    """A unit of work: ``index`` counts from 0 within one plan; ``tracks`` are ≤ the shard size."""

    index: int
    tracks: tuple[TrackRef, ...]


@dataclass
class PlanCounts:
    """What planning has seen so far (updated while it streams; ``finished`` once the catalogue is read).

    ``catalogue``: entries read (manifest rows or listed audio objects);
    ``committed``: of which already committed per the index; ``duplicates``:
    repeated ids; ``planned``: handed on (``rejected`` of them: refused entries,
    recorded as error rows without being read).
    """

    catalogue: int = 0
    committed: int = 0
    duplicates: int = 0
    planned: int = 0
    rejected: int = 0
    finished: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        """JSON-ready counts."""
        return {"catalogue": self.catalogue, "committed": self.committed, "duplicates": self.duplicates,
                "planned": self.planned, "rejected": self.rejected, "finished": self.finished}


class PlannedKeys:
    """The keys planned in this run, in a few sorted runs merged as they grow (10 bytes a key)."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def add_new(self, keys: np.ndarray) -> np.ndarray:
        """Add ``keys``; a mask of the ones not seen before (first occurrence within ``keys`` counts)."""
        unique, first = np.unique(keys, return_index=True)
        fresh = np.ones(unique.size, dtype=bool)
        for run in self._runs:
            positions = np.minimum(np.searchsorted(run, unique), max(run.size - 1, 0))
            fresh &= run[positions] != unique if run.size else True
        mask = np.zeros(keys.size, dtype=bool)
        mask[first[fresh]] = True
        if fresh.any():
            self._runs.append(unique[fresh])
            if len(self._runs) > 8:
                self._runs = [np.unique(np.concatenate(self._runs))]
        return mask


def shard(tracks: Iterable[TrackRef], shard_size: int, *, first_index: int = 0) -> Iterator[Shard]:
    """Group tracks into consecutive shards of ``shard_size`` (the last may be smaller).

    Raises:
        StorageError: ``shard_size`` < 1.
    """
    if shard_size < 1:
        raise StorageError(f"shard_size must be >= 1, got {shard_size}")
    index = first_index
    iterator = iter(tracks)
    while batch := tuple(itertools.islice(iterator, shard_size)):
        yield Shard(index, batch)
        index += 1


def catalogue_batches(
    catalogue: str | Iterable[TrackRef], *, index: CommittedIndex | None = None,
    storage_options: StorageOptions = None, exclude: Sequence[str] = (), allow_sources: Sequence[str] = (),
    batch_rows: int = 10_000,
) -> Iterator[ManifestBatch]:
    """The catalogue in batches, without the tracks ``index`` holds (manifests: dropped before they are built)."""
    if isinstance(catalogue, str) and is_manifest(catalogue):
        keep = None if index is None else (lambda ids: ~index.contains(track_keys(ids)))
        yield from read_manifest_batches(catalogue, storage_options=storage_options, allow_sources=allow_sources,
                                         batch_rows=batch_rows, keep=keep)
        return
    tracks = (list_audio(catalogue, storage_options=storage_options, exclude=exclude)
              if isinstance(catalogue, str) else iter(catalogue))
    while batch := list(itertools.islice(tracks, batch_rows)):
        kept = batch
        if index is not None:
            mask = ~index.contains(track_keys([t.track_id for t in batch]))
            kept = [t for t, k in zip(batch, mask) if k]
        yield ManifestBatch(tracks=kept, rows=len(batch), dropped=len(batch) - len(kept))


def plan_stream(
    catalogue: str | Iterable[TrackRef], *, index: CommittedIndex | None, shard_size: int,
    counts: PlanCounts | None = None, storage_options: StorageOptions = None, exclude: Sequence[str] = (),
    allow_sources: Sequence[str] = (), batch_rows: int = 10_000, only_track_ids: frozenset[str] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[Shard]:
    """Shards of the catalogue's tracks not in ``index``, each id once, streamed (see the module docstring).

    ``only_track_ids`` restricts the plan to those ids (reprocessing a selection);
    ``should_stop`` is asked between batches (a stopped run plans nothing more).
    """
    counts = counts if counts is not None else PlanCounts()
    planned = PlannedKeys()

    def remaining() -> Iterator[TrackRef]:
        for batch in catalogue_batches(catalogue, index=index, storage_options=storage_options, exclude=exclude,
                                       allow_sources=allow_sources, batch_rows=batch_rows):
            if should_stop is not None and should_stop():
                return
            tracks = batch.tracks
            if only_track_ids is not None:
                tracks = [t for t in tracks if t.track_id in only_track_ids]
            fresh = planned.add_new(track_keys([t.track_id for t in tracks])) if tracks else np.zeros(0, bool)
            counts.catalogue += batch.rows
            counts.committed += batch.dropped
            counts.duplicates += int(fresh.size - fresh.sum())
            for track, new in zip(tracks, fresh):
                if new:
                    counts.planned += 1
                    counts.rejected += track.rejected is not None
                    yield track
        counts.finished = True

    yield from shard(remaining(), shard_size)


def empty_index() -> CommittedIndex:
    """An index holding nothing (plan everything; the workers' marker checks skip what is done)."""
    return CommittedIndex(np.empty(0, dtype=KEY_DTYPE))


# --- the per-track-probe planner (small catalogues, no index) ------------------------------------


def uncommitted(
    tracks: Iterable[TrackRef],
    output_url: str,
    model_id: str,
    *,
    storage_options: StorageOptions = None,
    lookup: Literal["probe", "list"] = "probe",
    probe_batch: int = 256,
) -> Iterator[TrackRef]:
    """Tracks whose commit marker for ``model_id`` does not exist yet (a generator).

    ``lookup="probe"`` checks each track's marker (one small GET per track on S3,
    ``probe_batch`` tracks at a time, concurrently): memory O(batch), cost
    linear in the catalogue. ``lookup="list"`` lists the model's committed
    markers once into a set: a few LIST requests per thousand stems, memory
    O(committed tracks). Catalogue runs use :func:`plan_stream` with the
    committed index instead. Repeated track ids within one batch are dropped.
    """
    if lookup == "list":
        done = set(committed_tracks(output_url, model_id, storage_options=storage_options))
        yield from (t for t in tracks if t.track_id not in done)
        return
    if lookup != "probe":
        raise StorageError(f"lookup must be 'probe' or 'list', got {lookup!r}")
    iterator = iter(tracks)
    while batch := list(itertools.islice(iterator, probe_batch)):
        unique = list({t.track_id: t for t in batch}.values())
        markers = [marker_url(output_url, model_id, t.track_id) for t in unique]
        for track, marker in zip(unique, read_many(markers, storage_options), strict=True):
            if marker is None:
                yield track


def iter_catalogue(
    catalogue_url: str, *, storage_options: StorageOptions = None, exclude: Sequence[str] = (),
    allow_sources: Sequence[str] = (),
) -> Iterator[TrackRef]:
    """The tracks of a catalogue URL, streamed: a manifest (by its ending) is read, anything else listed."""
    if is_manifest(catalogue_url):
        return read_manifest(catalogue_url, storage_options=storage_options, allow_sources=allow_sources)
    return list_audio(catalogue_url, storage_options=storage_options, exclude=exclude)


def plan(
    tracks: Iterable[TrackRef] | str,
    output_url: str,
    model_id: str,
    *,
    shard_size: int = 100,
    storage_options: StorageOptions = None,
    lookup: Literal["probe", "list"] = "probe",
    probe_batch: int = 256,
) -> Iterator[Shard]:
    """Shards of the tracks not yet committed for ``model_id`` under ``output_url``, by probing markers.

    ``tracks`` is an iterable of :class:`TrackRef` or a catalogue URL, read with
    :func:`iter_catalogue` (then ``storage_options`` serve both, and ``output_url``
    is excluded from the listing). See :func:`uncommitted` for ``lookup``.
    """
    if isinstance(tracks, str):
        tracks = iter_catalogue(tracks, storage_options=storage_options, exclude=[output_url])
    remaining = uncommitted(
        tracks, output_url, model_id, storage_options=storage_options, lookup=lookup, probe_batch=probe_batch
    )
    yield from shard(remaining, shard_size)
