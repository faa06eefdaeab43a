"""The intent journal: what a run is about to process, written before it starts on it.

Layout::

    <out>/runs/journal/<run_id>/<shard:06d>.json

A run writes one journal entry per shard *before* handing the shard's tracks
to the workers, and deletes it once the shard's Parquet part and its index
delta are stored. So after a crash, the entries left behind name exactly the
tracks that may be committed but unrecorded: recovery
(:mod:`stemflow.stage.recovery`) reads the journals of runs that did not
finish, checks those tracks' markers, writes the missing rows, and deletes the
entries. It never looks at the rest of the output. ``runs/journal/`` lists the
runs with something left to recover in one request; a finished run leaves
nothing there. (``journal`` is therefore not usable as a run id.)
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fsspec import AbstractFileSystem

from stemflow.errors import StorageError
from stemflow.store.objects import read_bytes, write_atomic
from stemflow.store.paths import StorageOptions, check_component, filesystem, is_local_fs, join_url, url_of
from stemflow.store.quarantine import Quarantine

logger = logging.getLogger(__name__)

JOURNAL_FORMAT = "stemflow.journal/1"
"""The ``format`` value of every journal entry."""

_ENTRY = re.compile(r"^\d{6}\.json$")


@dataclass(frozen=True)
class JournalEntry:
    """One shard a run is about to process.

    ``tracks``: the shard's track records (``url``, ``track_id``, ``extra``…, as
    :meth:`stemflow.catalogue.tracks.TrackRef.to_dict` gives them);
    ``part_index``: the Parquet part the run writes for this shard.
    """

    run_id: str
    model_id: str
    run_date: str
    shard_index: int
    part_index: int
    tracks: tuple[Mapping[str, Any], ...] = field(hash=False)

    def to_json(self) -> bytes:
        """UTF-8 JSON (with ``format``)."""
        body = {"format": JOURNAL_FORMAT, "run_id": self.run_id, "model_id": self.model_id,
                "run_date": self.run_date, "shard_index": self.shard_index, "part_index": self.part_index,
                "tracks": [dict(t) for t in self.tracks]}
        return json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> JournalEntry:
        """Parse :meth:`to_json` output.

        Raises:
            StorageError: not a journal entry.
        """
        try:
            body = json.loads(data.decode("utf-8"))
            if body.get("format") != JOURNAL_FORMAT:
                raise ValueError(f"format is {body.get('format')!r}, expected {JOURNAL_FORMAT!r}")
            tracks = tuple(dict(t) for t in body["tracks"])
            if not all(isinstance(t.get("track_id"), str) and isinstance(t.get("url"), str) for t in tracks):
                raise ValueError("a track without url or track_id")
            return cls(run_id=check_component(str(body["run_id"]), "run_id"),
                       model_id=check_component(str(body["model_id"]), "model_id"),
                       run_date=str(body["run_date"]), shard_index=int(body["shard_index"]),
                       part_index=int(body["part_index"]), tracks=tracks)
        except (ValueError, KeyError, TypeError, AttributeError, StorageError) as e:
            raise StorageError(f"malformed journal entry: {e}") from e


def journal_folder(output_url: str, run_id: str | None = None) -> str:
    """``<out>/runs/journal`` or ``<out>/runs/journal/<run_id>``."""
    parts = ["runs", "journal"] + ([check_component(run_id, "run_id")] if run_id is not None else [])
    return join_url(output_url, *parts)


def journal_url(output_url: str, run_id: str, shard_index: int) -> str:
    """``<out>/runs/journal/<run_id>/<shard:06d>.json``."""
    if shard_index < 0:
        raise StorageError(f"shard_index must be >= 0, got {shard_index}")
    return f"{journal_folder(output_url, run_id)}/{shard_index:06d}.json"


def write_journal(output_url: str, entry: JournalEntry, *, storage_options: StorageOptions = None) -> str:
    """Store ``entry`` (atomically; a retried shard rewrites its own entry); its URL."""
    url = journal_url(output_url, entry.run_id, entry.shard_index)
    write_atomic(url, entry.to_json(), storage_options)
    return url


def delete_journals(output_url: str, run_id: str, shard_indices: Sequence[int], *,
                    storage_options: StorageOptions = None) -> None:
    """Delete entries of ``run_id`` (one batched request per 1000 on S3); missing ones are fine.

    Raises:
        StorageError: the delete failed.
    """
    if not shard_indices:
        return
    fs, _ = filesystem(journal_folder(output_url, run_id), storage_options)
    paths = [filesystem(journal_url(output_url, run_id, i), storage_options)[1] for i in shard_indices]
    try:
        fs.rm(paths)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise StorageError(f"cannot delete journal entries of run {run_id!r}: {e}") from e
    _remove_if_empty(fs, filesystem(journal_folder(output_url, run_id), storage_options)[1])


def _remove_if_empty(fs: AbstractFileSystem, folder: str) -> None:
    """Drop a run's emptied journal folder where folders outlive their files (local disk)."""
    if not is_local_fs(fs):
        return
    try:
        os.rmdir(folder)
    except OSError:
        pass  # not empty (a concurrent writer), or already gone


def runs_with_journals(output_url: str, *, storage_options: StorageOptions = None) -> list[str]:
    """The run ids that have journal entries left (one LIST request on S3), sorted."""
    fs, path = filesystem(journal_folder(output_url), storage_options)
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]  # missing: FileNotFound
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StorageError(f"cannot list the journals of {output_url!r}: {e}") from e
    fs.invalidate_cache(path)
    return sorted(n for n in names if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}", n))


def iter_journal(output_url: str, run_id: str, *, storage_options: StorageOptions = None,
                 quarantine: Quarantine | None = None) -> Iterator[tuple[str, JournalEntry]]:
    """``(url, entry)`` of every readable journal entry of ``run_id``; unreadable ones are quarantined."""
    fs, path = filesystem(journal_folder(output_url, run_id), storage_options)
    try:
        names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    except FileNotFoundError:
        return
    except OSError as e:
        raise StorageError(f"cannot list the journal of run {run_id!r}: {e}") from e
    fs.invalidate_cache(path)
    for name in names:
        url = f"{url_of(fs, path)}/{name}"
        try:
            if not _ENTRY.match(name):
                raise StorageError("not a journal entry name")
            entry = JournalEntry.from_json(read_bytes(url, storage_options))
            if entry.run_id != run_id:
                raise StorageError(f"the entry names run {entry.run_id!r}")
        except FileNotFoundError:
            continue
        except StorageError as e:
            if quarantine is not None:
                quarantine.add("journal", url, str(e))
            continue
        yield url, entry
