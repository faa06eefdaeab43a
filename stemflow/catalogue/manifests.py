"""Catalogue manifests: a CSV, JSON Lines or Parquet file listing the tracks, read in row batches.

A manifest has a ``url`` column and optionally ``track_id``, ``size`` and
``etag``; every other column (``group``, ``artist``, ``isrc``…) is carried along
in :attr:`stemflow.catalogue.tracks.TrackRef.extra` and into the records
(``source_extra``). Rows stream ``batch_rows`` at a time (pyarrow's streaming
CSV reader with every column read as text, line batches of JSON Lines, Parquet
``iter_batches``), so a 100-million-row manifest never sits in memory.

Each row's URL is resolved by :class:`~stemflow.catalogue.sources.SourcePolicy`
(relative to the manifest's folder; rows outside the catalogue's location are
refused unless allowed). A row that cannot be used (refused URL, bad
``track_id`` or ``size``, a JSON line that is not an object, an object that does
not exist) is not dropped: it comes out as a :class:`TrackRef` with
``rejected`` set, which planning turns into an error row without reading it.
Only an unreadable manifest *file* (missing, not CSV/JSONL/Parquet, no ``url``
column) is an error for the whole run.

:func:`read_manifest_batches` takes a ``keep`` filter (planning's anti-join with
the committed index) applied to each batch's track ids before any object is
stat'ed or any :class:`TrackRef` built: a no-op nightly run over a committed
10-million-row manifest costs the manifest's reads and nothing per row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from stemflow.catalogue.sources import SourcePolicy, SourceRefused
from stemflow.catalogue.tracks import Fingerprint, TrackRef, compute_track_id, track_from_info
from stemflow.errors import StorageError
from stemflow.store.lookahead import ordered_map
from stemflow.store.objects import object_info
from stemflow.store.paths import StorageOptions, check_component, filesystem

MANIFEST_FIELDS: tuple[str, ...] = ("url", "track_id", "size", "etag")
"""Columns with a meaning; all others go to ``TrackRef.extra``."""

PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")
"""File name endings (lower-case) of Parquet manifests."""

JSONL_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson")
"""File name endings (lower-case) of JSON Lines manifests (one JSON object per line)."""

MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", *JSONL_SUFFIXES, *PARQUET_SUFFIXES)
"""File name endings (lower-case) of catalogue manifests: CSV, JSON Lines or Parquet."""

Keep = Callable[[Sequence[str]], np.ndarray]
"""A batch filter: track ids -> boolean mask of the rows to keep (planning's anti-join)."""


def is_manifest(url: str) -> bool:
    """Whether ``url`` names a catalogue manifest (by its ending) rather than a folder to list."""
    return url.lower().rstrip("/").endswith(MANIFEST_SUFFIXES)


@dataclass(frozen=True)
class ManifestBatch:
    """One batch of a manifest: the tracks kept (rejected rows included), and how many rows it held."""

    tracks: list[TrackRef]
    rows: int
    dropped: int


def _columns_batches(url: str, storage_options: StorageOptions, batch_rows: int
                     ) -> Iterator[dict[str, list[Any]]]:
    """The manifest as column lists, ``batch_rows`` rows at a time."""
    fs, path = filesystem(url, storage_options)
    lower = path.lower()
    if not lower.endswith(MANIFEST_SUFFIXES):
        raise StorageError(f"manifest {url!r}: expected a .csv, .jsonl or .parquet file")
    try:
        if lower.endswith(".csv"):
            yield from _csv_batches(fs, path, batch_rows)
            return
        with fs.open(path, "rb") as handle:
            if lower.endswith(PARQUET_SUFFIXES):
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows):
                    yield {name: batch.column(name).to_pylist() for name in batch.schema.names}
            else:
                yield from _jsonl_batches(handle, batch_rows)
    except FileNotFoundError as e:
        raise StorageError(f"manifest {url!r} does not exist") from e
    except (OSError, ValueError, pa.ArrowException) as e:
        raise StorageError(f"cannot read manifest {url!r}: {e}") from e


def _csv_batches(fs: Any, path: str, batch_rows: int) -> Iterator[dict[str, list[Any]]]:
    """CSV with every column as text (a bad ``size`` is a row's problem, not the file's)."""
    with fs.open(path, "rb") as handle:
        header = next(csv.reader(io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")), [])
    types = {name: pa.string() for name in header}
    with fs.open(path, "rb") as handle:
        reader = pa_csv.open_csv(handle, read_options=pa_csv.ReadOptions(block_size=1 << 20),
                                 convert_options=pa_csv.ConvertOptions(strings_can_be_null=True, column_types=types))
        pending: dict[str, list[Any]] = {}
        for batch in reader:
            for name in batch.schema.names:
                pending.setdefault(name, []).extend(batch.column(name).to_pylist())
            while pending and len(next(iter(pending.values()))) >= batch_rows:
                yield {k: v[:batch_rows] for k, v in pending.items()}
                pending = {k: v[batch_rows:] for k, v in pending.items()}
        if pending and next(iter(pending.values())):
            yield pending


def _jsonl_batches(handle: Any, batch_rows: int) -> Iterator[dict[str, list[Any]]]:
    """JSON Lines: one object per line; a line that is not one becomes a row with ``_line_error``."""
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(handle, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            row = json.loads(text)
            if not isinstance(row, dict):
                raise ValueError(f"a JSON {type(row).__name__}, not an object")
        except ValueError as e:
            row = {"url": None, "_line_error": f"line {number} is not a JSON object: {e}"}
        rows.append(row)
        if len(rows) >= batch_rows:
            yield _to_columns(rows)
            rows = []
    if rows:
        yield _to_columns(rows)


def _to_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names = list(dict.fromkeys(k for row in rows for k in row))
    return {name: [row.get(name) for row in rows] for name in names}


def read_manifest_batches(
    url: str,
    *,
    storage_options: StorageOptions = None,
    source_storage_options: StorageOptions = None,
    allow_sources: Sequence[str] = (),
    batch_rows: int = 10_000,
    fingerprint: Fingerprint = "content",
    workers: int = 8,
    keep: Keep | None = None,
) -> Iterator[ManifestBatch]:
    """The manifest's rows as :class:`TrackRef` s, one :class:`ManifestBatch` per ``batch_rows`` rows.

    Args:
        storage_options: to read the manifest itself.
        source_storage_options: to stat the listed objects (default: ``storage_options``).
        allow_sources: URL prefixes outside the catalogue's location that rows may
            name (see :mod:`stemflow.catalogue.sources`); ``("*",)`` allows any.
        workers: rows stat'ed concurrently (threads) when a row has neither
            ``track_id`` nor ``size`` + ``etag``; order kept.
        keep: drops rows whose mask value is false before they are stat'ed or built.

    Raises:
        StorageError: the manifest file is missing or unreadable, or has no ``url`` column.
    """
    if batch_rows < 1:
        raise StorageError(f"batch_rows must be >= 1, got {batch_rows}")
    sources = storage_options if source_storage_options is None else source_storage_options
    policy = SourcePolicy.for_manifest(url, allow_sources, storage_options=storage_options)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="stemflow-manifest") as pool:
        for columns in _columns_batches(url, storage_options, batch_rows):
            if "url" not in columns:
                raise StorageError(f"manifest {url!r} has no 'url' column (columns: {sorted(columns)})")
            yield _resolve_batch(columns, policy, sources, fingerprint, keep, pool, workers)


def read_manifest(url: str, **kwargs: Any) -> Iterator[TrackRef]:
    """Every row of the manifest as a :class:`TrackRef` (see :func:`read_manifest_batches`)."""
    for batch in read_manifest_batches(url, **kwargs):
        yield from batch.tracks


@dataclass
class _Row:
    """One manifest row on its way to a :class:`TrackRef`."""

    index: int
    url: str
    track_id: str | None
    size: int | None
    etag: str | None
    rejected: str | None = None


def _resolve_batch(columns: Mapping[str, list[Any]], policy: SourcePolicy, storage_options: StorageOptions,
                   fingerprint: Fingerprint, keep: Keep | None, pool: ThreadPoolExecutor,
                   workers: int) -> ManifestBatch:
    count = len(columns["url"])
    rows = [_parse_row(columns, i, policy, storage_options) for i in range(count)]

    extra_names = [n for n in columns if n not in MANIFEST_FIELDS and n != "_line_error"]
    known = [r for r in rows if r.track_id is not None]
    kept = set(range(count))
    if keep is not None and known:
        mask = keep([r.track_id for r in known])
        kept -= {r.index for r, k in zip(known, mask) if not k}
    pending = [r for r in rows if r.index in kept]

    def build(row: _Row) -> TrackRef:
        extra = {n: columns[n][row.index] for n in extra_names}
        return _build_track(row, extra, storage_options, fingerprint)

    tracks = list(ordered_map(build, pending, pool, workers))
    if keep is not None:
        late = [i for i, t in enumerate(tracks) if pending[i].track_id is None and not t.rejected]
        if late:
            mask = keep([tracks[i].track_id for i in late])
            dropped = {i for i, k in zip(late, mask) if not k}
            tracks = [t for i, t in enumerate(tracks) if i not in dropped]
    return ManifestBatch(tracks=tracks, rows=count, dropped=count - len(tracks))


def _parse_row(columns: Mapping[str, list[Any]], index: int, policy: SourcePolicy,
               storage_options: StorageOptions) -> _Row:
    """Resolve one row's url, id, size and etag; a problem is the row's ``rejected`` reason."""
    value = columns["url"][index]
    given_id, raw_size, raw_etag, line_error = (
        columns[name][index] if name in columns else None for name in ("track_id", "size", "etag", "_line_error"))
    etag = str(raw_etag).strip('"') if raw_etag not in (None, "") else None
    text = value if isinstance(value, str) else repr(value)
    row = _Row(index, text, None, None, etag)
    try:
        if line_error:
            raise SourceRefused(line_error)
        row.url = policy.resolve(value, storage_options)
        row.size = _parse_size(raw_size)
        if given_id not in (None, ""):
            row.track_id = check_component(str(given_id), "track_id")
        elif row.size is not None and etag:
            row.track_id = compute_track_id(row.url, row.size, f"etag:{etag}")
    except StorageError as e:
        row.rejected = f"manifest row {index + 1}: {e}"
        row.track_id = compute_track_id(text, None, f"rejected:{index}:{raw_size}:{raw_etag}")
    return row


def _parse_size(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        size = int(value)
    except (TypeError, ValueError) as e:
        raise SourceRefused(f"size {value!r} is not a whole number of bytes") from e
    if size < 0 or (isinstance(value, float) and value != size):
        raise SourceRefused(f"size {value!r} is not a whole number of bytes")
    return size


def _build_track(row: _Row, extra: dict[str, Any], storage_options: StorageOptions,
                 fingerprint: Fingerprint) -> TrackRef:
    """The row's :class:`TrackRef`; stat'ing the object when the manifest gave no id (never raises)."""
    if row.rejected is None and row.track_id is None:
        try:
            info = object_info(row.url, storage_options)
            return track_from_info(info, storage_options=storage_options, fingerprint=fingerprint, extra=extra)
        except FileNotFoundError:
            row.rejected = f"manifest row {row.index + 1}: {row.url} does not exist"
        except (StorageError, OSError) as e:
            row.rejected = f"manifest row {row.index + 1}: cannot stat {row.url}: {e}"
        row.track_id = compute_track_id(row.url, row.size, f"missing:{row.etag}")
    return TrackRef(url=row.url, track_id=str(row.track_id), size=row.size, etag=row.etag, extra=extra,
                    rejected=row.rejected)
