"""Planning: what is left to do for a ``model_id``, grouped into shards.

:func:`plan` takes a catalogue (a folder/prefix URL, a catalogue manifest URL,
or any iterable of :class:`~stemflow.catalogue.tracks.TrackRef`), drops the
tracks already committed for the model (:func:`uncommitted`: by probing each
track's commit marker, or by listing the committed ones once) and groups the
rest into numbered :class:`Shard` s (:func:`shard`). The whole chain is a
generator: memory stays bounded by one probe batch plus one shard, however
large the catalogue; a shard can be handed on while planning goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from stemflow.catalogue.listing import list_audio
from stemflow.catalogue.manifests import MANIFEST_SUFFIXES, read_manifest
from stemflow.catalogue.tracks import TrackRef
from stemflow.errors import StorageError
from stemflow.store.commit import committed_tracks, marker_url
from stemflow.store.objects import read_many
from stemflow.store.paths import StorageOptions


@dataclass(frozen=True)
class Shard:
    """A unit of work: ``index`` counts from 0 within one plan; ``tracks`` are ≤ the shard size."""

    index: int
    tracks: tuple[TrackRef, ...]


def shard(tracks: Iterable[TrackRef], shard_size: int, *, first_index: int = 0) -> Iterator[Shard]:
    """Group tracks into consecutive shards of ``shard_size`` (the last may be smaller).

    Raises:
        StorageError: ``shard_size`` < 1.
    """
    if shard_size < 1:
        raise StorageError(f"shard_size must be >= 1, got {shard_size}")
    buffer: list[TrackRef] = []
    index = first_index
    for track in tracks:
        buffer.append(track)
        if len(buffer) == shard_size:
            yield Shard(index, tuple(buffer))
            index += 1
            buffer = []
    if buffer:
        yield Shard(index, tuple(buffer))


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
    O(committed tracks); best when little is committed or the output is small.
    Repeated track ids within one batch are dropped.
    """
    if lookup == "list":
        done = set(committed_tracks(output_url, model_id, storage_options=storage_options))
        yield from (t for t in tracks if t.track_id not in done)
        return
    if lookup != "probe":
        raise StorageError(f"lookup must be 'probe' or 'list', got {lookup!r}")
    batch: list[TrackRef] = []
    for track in tracks:
        batch.append(track)
        if len(batch) >= probe_batch:
            yield from _probe(batch, output_url, model_id, storage_options)
            batch = []
    if batch:
        yield from _probe(batch, output_url, model_id, storage_options)


def _probe(
    batch: list[TrackRef], output_url: str, model_id: str, storage_options: StorageOptions
) -> Iterator[TrackRef]:
    """The tracks of ``batch`` without a commit marker (one concurrent read of all markers)."""
    unique = list({t.track_id: t for t in batch}.values())
    markers = [marker_url(output_url, model_id, t.track_id) for t in unique]
    for track, marker in zip(unique, read_many(markers, storage_options), strict=True):
        if marker is None:
            yield track


def iter_catalogue(
    catalogue_url: str, *, storage_options: StorageOptions = None, exclude: Sequence[str] = ()
) -> Iterator[TrackRef]:
    """The tracks of a catalogue URL, streamed.

    A URL ending in one of :data:`~stemflow.catalogue.manifests.MANIFEST_SUFFIXES`
    is a catalogue manifest (:func:`read_manifest`); anything else is a folder or
    prefix to list (:func:`list_audio`, skipping the ``exclude`` subtrees).
    """
    if catalogue_url.lower().endswith(MANIFEST_SUFFIXES):
        return read_manifest(catalogue_url, storage_options=storage_options)
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
    """Shards of the tracks not yet committed for ``model_id`` under ``output_url``.

    ``tracks`` is an iterable of :class:`TrackRef` (from :func:`list_audio` or
    :func:`read_manifest`) or a catalogue URL, read with :func:`iter_catalogue`
    (then ``storage_options`` serve both, and ``output_url`` is excluded from the
    listing). The whole chain streams. See :func:`uncommitted` for ``lookup``.
    """
    if isinstance(tracks, str):
        tracks = iter_catalogue(tracks, storage_options=storage_options, exclude=[output_url])
    remaining = uncommitted(
        tracks, output_url, model_id, storage_options=storage_options, lookup=lookup, probe_batch=probe_batch
    )
    yield from shard(remaining, shard_size)

