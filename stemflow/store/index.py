"""The committed index: which tracks are committed for a model, read in one go, in bounded memory.

Planning needs "listing − committed" for millions of tracks. Asking each
track's marker costs a request per track; listing every marker costs tens of
millions of keys. Instead each model has a compact index that runs maintain::

    <out>/index/model_id=<m>/base-<generation>.parquet     every id up to its making, sorted, unique
    <out>/index/model_id=<m>/delta-<run_id>-<seq>.parquet  ids a run committed (or found committed) since

Each file has one column, ``key``: the 10-byte key of a track id
(:func:`track_keys`: the 80-bit id itself when it is 20 hex digits, which is
what :mod:`stemflow.catalogue.tracks` makes, else a 10-byte BLAKE2b of it). At
10 million tracks the base is ~100 MB and loads in seconds; planning then
anti-joins each catalogue batch against the sorted keys (``searchsorted``).

**The index is advisory; the marker is the truth.** A track the index misses is
planned, and its worker finds the marker and skips it (one GET), adding it to
the index; a key the index holds that is not committed would skip a track, so
only ids whose marker exists (or whose ``ok`` rows were recorded) are ever
added. Deleting the folder is safe: the next run rebuilds it from the Parquet
``ok`` rows (:func:`bootstrap_index`).

Writers never overwrite: deltas have unique names; :func:`compact_index` writes
``base-<g+1>`` create-only (two compacting runs: one wins), records the deltas
it merged in the file's metadata, then deletes them and older bases. A reader
that finds a listed file gone lists again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stemflow.errors import StorageError
from stemflow.store.objects import write_create_only
from stemflow.store.paths import StorageOptions, check_component, filesystem, join_url, url_of
from stemflow.store.quarantine import Quarantine
from stemflow.store.record_scan import iter_record_tables

logger = logging.getLogger(__name__)

KEY_BYTES = 10
"""Bytes per key: 80 bits, the entropy of a stemflow track id."""

KEY_DTYPE = np.dtype(f"S{KEY_BYTES}")
_SCHEMA = pa.schema([pa.field("key", pa.binary(KEY_BYTES), nullable=False)])
_MERGED = b"stemflow.index.merged"
_BASE = re.compile(r"^base-(\d{8})\.parquet$")
_DELTA = re.compile(r"^delta-[A-Za-z0-9][A-Za-z0-9._=+-]*-\d{6}\.parquet$")
_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


def track_keys(track_ids: Sequence[str] | pa.Array) -> np.ndarray:
    """The :data:`KEY_DTYPE` keys of ``track_ids`` (vectorised for 20-hex-digit ids)."""
    ids = track_ids if isinstance(track_ids, pa.Array) else pa.array(list(track_ids), pa.string())
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    ids = ids.cast(pa.string())
    keys = np.empty(len(ids), dtype=KEY_DTYPE)
    if len(ids) == 0:
        return keys
    hexlike = pc.fill_null(pc.match_substring_regex(ids, r"^[0-9a-f]{20}$"), False).to_numpy(zero_copy_only=False)
    if hexlike.any():
        keys[hexlike] = _hex_keys(ids.filter(pa.array(hexlike)))
    for position in np.flatnonzero(~hexlike):
        value = ids[int(position)].as_py()
        if value is None:
            raise StorageError("a track id is null")
        keys[position] = hashlib.blake2b(value.encode("utf-8"), digest_size=KEY_BYTES).digest()
    return keys


def _hex_keys(ids: pa.Array) -> np.ndarray:
    """20-hex-digit strings decoded to 10 bytes each, without a Python loop."""
    ids = pa.concat_arrays([ids])  # a fresh, unsliced array: offsets start at 0
    offsets = np.frombuffer(ids.buffers()[1], np.int32)[: len(ids) + 1]
    data = np.frombuffer(ids.buffers()[2], np.uint8)[offsets[0]: offsets[-1]].reshape(len(ids), 2 * KEY_BYTES)
    nibbles = _HEX[data]
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    return np.ascontiguousarray(packed).view(KEY_DTYPE).ravel()


@dataclass(frozen=True)
class CommittedIndex:
    """Sorted unique keys of the committed tracks of one model (a snapshot)."""

    keys: np.ndarray

    def __len__(self) -> int:
        return int(self.keys.size)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``keys`` (from :func:`track_keys`) are in the index."""
        if self.keys.size == 0 or keys.size == 0:
            return np.zeros(keys.size, dtype=bool)
        positions = np.searchsorted(self.keys, keys)
        return self.keys[np.minimum(positions, self.keys.size - 1)] == keys

    @classmethod
    def of(cls, keys: Iterable[np.ndarray]) -> CommittedIndex:
        """An index of the union of key arrays (a single sorted unique array is taken as it is)."""
        arrays = [k for k in keys if k.size]
        if len(arrays) == 1 and bool(np.all(arrays[0][1:] > arrays[0][:-1])):
            return cls(arrays[0])
        return cls(np.unique(np.concatenate(arrays)) if arrays else np.empty(0, dtype=KEY_DTYPE))


@dataclass(frozen=True)
class IndexFiles:
    """What the index folder held when listed: the newest base, the deltas, and whether anything was there."""

    base: str | None
    generation: int
    deltas: tuple[str, ...]
    exists: bool


def index_url(output_url: str, model_id: str) -> str:
    """``<out>/index/model_id=<m>``."""
    return join_url(output_url, "index", f"model_id={check_component(model_id, 'model_id')}")


def list_index(output_url: str, model_id: str, *, storage_options: StorageOptions = None,
               quarantine: Quarantine | None = None) -> IndexFiles:
    """List the index folder of ``model_id`` (one LIST request on S3)."""
    fs, path = filesystem(index_url(output_url, model_id), storage_options)
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]  # missing: FileNotFound
    except FileNotFoundError:
        names = []
    except OSError as e:
        raise StorageError(f"cannot list the committed index {url_of(fs, path)!r}: {e}") from e
    fs.invalidate_cache(path)
    bases = sorted((int(m[1]), n) for n in names if (m := _BASE.match(n)))
    deltas = tuple(sorted(n for n in names if _DELTA.match(n)))
    for name in names:
        if not (_BASE.match(name) or _DELTA.match(name) or name.startswith(".")) and quarantine is not None:
            quarantine.add("index_file", f"{url_of(fs, path)}/{name}", "not a file of the committed index")
    base = bases[-1] if bases else None
    return IndexFiles(base=None if base is None else base[1], generation=-1 if base is None else base[0],
                      deltas=deltas, exists=bool(bases or deltas))


def _read_keys(url: str, storage_options: StorageOptions) -> tuple[np.ndarray, list[str]]:
    """The keys of one index file and the deltas it says it merged (read batch by batch into one array)."""
    fs, path = filesystem(url, storage_options)
    try:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            field = parquet.schema_arrow.field("key")
            if field.type != pa.binary(KEY_BYTES):
                raise ValueError(f"column 'key' is {field.type}")
            merged = json.loads((parquet.schema_arrow.metadata or {}).get(_MERGED, b"[]"))
            keys = np.empty(parquet.metadata.num_rows, dtype=KEY_DTYPE)
            filled = 0
            for batch in parquet.iter_batches(batch_size=1 << 20, columns=["key"]):
                column = batch.column(0)
                part = np.frombuffer(column.buffers()[1], KEY_DTYPE)[column.offset: column.offset + len(column)]
                keys[filled: filled + len(part)] = part
                filled += len(part)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, pa.ArrowException) as e:
        raise StorageError(f"{url}: not a committed-index file: {e}") from e
    if filled != keys.size:
        raise StorageError(f"{url}: holds {filled} keys, its footer says {keys.size}")
    return keys, [str(n) for n in merged]


def load_index(output_url: str, model_id: str, *, storage_options: StorageOptions = None,
               quarantine: Quarantine | None = None) -> tuple[CommittedIndex, IndexFiles]:
    """The committed index of ``model_id`` (empty if none) and the files it was read from.

    A file deleted by a concurrent compaction between listing and reading makes
    it list again; an unreadable file is quarantined and skipped.
    """
    for _ in range(3):
        files = list_index(output_url, model_id, storage_options=storage_options, quarantine=quarantine)
        folder = index_url(output_url, model_id)
        try:
            arrays, merged = [], set()
            if files.base is not None:
                keys, merged_names = _read_keys(f"{folder}/{files.base}", storage_options)
                arrays.append(keys)
                merged = set(merged_names)
            for name in files.deltas:
                if name not in merged:
                    arrays.append(_read_keys_or_quarantine(f"{folder}/{name}", storage_options, quarantine))
            return CommittedIndex.of(arrays), files
        except FileNotFoundError:
            logger.info("an index file of %s went away while reading (a compaction); listing again", model_id)
    raise StorageError(f"the committed index of {model_id!r} kept changing while being read")


def _read_keys_or_quarantine(url: str, storage_options: StorageOptions,
                             quarantine: Quarantine | None) -> np.ndarray:
    try:
        return _read_keys(url, storage_options)[0]
    except StorageError as e:
        if quarantine is not None:
            quarantine.add("index_file", url, str(e))
        return np.empty(0, dtype=KEY_DTYPE)


def _file_bytes(keys: np.ndarray, merged: Sequence[str] = ()) -> bytes:
    column = pa.Array.from_buffers(pa.binary(KEY_BYTES), len(keys), [None, pa.py_buffer(keys.tobytes())])
    table = pa.table([column], schema=_SCHEMA.with_metadata({_MERGED: json.dumps(list(merged)).encode()}))
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def write_delta(output_url: str, model_id: str, run_id: str, sequence: int, track_ids: Sequence[str], *,
                storage_options: StorageOptions = None) -> str | None:
    """Add ``track_ids`` (all committed) to the index as a new delta file; its URL (``None``: nothing to add)."""
    if not track_ids:
        return None
    name = f"delta-{check_component(run_id, 'run_id')}-{sequence:06d}.parquet"
    url = f"{index_url(output_url, model_id)}/{name}"
    if not write_create_only(url, _file_bytes(np.unique(track_keys(track_ids))), storage_options):
        raise StorageError(f"index delta {url!r} already exists (run ids must be unique)")
    return url


def compact_index(output_url: str, model_id: str, *, storage_options: StorageOptions = None,
                  min_deltas: int = 1, quarantine: Quarantine | None = None) -> bool:
    """Merge the deltas into a new base (create-only), then delete them and older bases.

    Does nothing with fewer than ``min_deltas`` deltas; ``False`` when another
    compaction won the new generation (its result serves just as well).
    """
    index, files = load_index(output_url, model_id, storage_options=storage_options, quarantine=quarantine)
    if len(files.deltas) < min_deltas:
        return False
    folder = index_url(output_url, model_id)
    base_name = f"base-{files.generation + 1:08d}.parquet"
    if not write_create_only(f"{folder}/{base_name}", _file_bytes(index.keys, files.deltas), storage_options):
        logger.info("index of %s: another run compacted generation %d first", model_id, files.generation + 1)
        return False
    old = [*files.deltas, *([files.base] if files.base else [])]
    fs, path = filesystem(folder, storage_options)
    try:
        fs.rm([f"{path}/{name}" for name in old])
    except FileNotFoundError:
        pass
    except OSError as e:  # the new base supersedes them anyway; they are read again, harmlessly
        logger.warning("index of %s: could not delete merged files: %s", model_id, e)
    logger.info("index of %s compacted: %d tracks in %s", model_id, len(index), base_name)
    return True


def bootstrap_index(output_url: str, model_id: str, *, storage_options: StorageOptions = None,
                    quarantine: Quarantine | None = None, write: bool = True) -> CommittedIndex:
    """Build the first base from the Parquet ``ok`` rows of ``model_id`` (streamed, two columns).

    Run once per model and output, when no index exists (outputs written before
    the index, or after the folder was deleted). Create-only: if a concurrent run
    wrote it first, this one's result is returned all the same. ``write=False``
    only computes it (a dry run writes nothing).
    """
    chunks = []
    for table in iter_record_tables(output_url, model_id, columns=("track_id", "status"),
                                    storage_options=storage_options, quarantine=quarantine):
        ok = table.filter(pc.equal(table.column("status"), "ok")).column("track_id")
        chunks.append(np.unique(track_keys(ok.combine_chunks())))
    index = CommittedIndex.of(chunks)
    url = f"{index_url(output_url, model_id)}/base-00000000.parquet"
    if write and write_create_only(url, _file_bytes(index.keys), storage_options):
        logger.info("built the committed index of %s from its Parquet records: %d tracks", model_id, len(index))
    return index
