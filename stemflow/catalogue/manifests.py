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
import pyarrow.compute as pc
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


Columns = Mapping[str, "pa.Array | list[Any]"]
"""One batch of a manifest, column by column: Arrow arrays (CSV, Parquet) or lists (JSON Lines)."""


def _columns_batches(url: str, storage_options: StorageOptions, batch_rows: int) -> Iterator[Columns]:
    """The manifest's columns, ``batch_rows`` rows at a time."""
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
                    yield {name: batch.column(name) for name in batch.schema.names}
            else:
                yield from _jsonl_batches(handle, batch_rows)
    except FileNotFoundError as e:
        raise StorageError(f"manifest {url!r} does not exist") from e
    except (OSError, ValueError, pa.ArrowException) as e:
        raise StorageError(f"cannot read manifest {url!r}: {e}") from e


def _csv_batches(fs: Any, path: str, batch_rows: int) -> Iterator[Columns]:
    """CSV with every column as text (a bad ``size`` is a row's problem, not the file's)."""
    with fs.open(path, "rb") as handle:
        header = next(csv.reader(io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")), [])
    types = {name: pa.string() for name in header}
    with fs.open(path, "rb") as handle:
        reader = pa_csv.open_csv(handle, read_options=pa_csv.ReadOptions(block_size=1 << 20),
                                 convert_options=pa_csv.ConvertOptions(strings_can_be_null=True, column_types=types))
        pending: pa.Table | None = None
        for batch in reader:
            table = pa.Table.from_batches([batch])
            pending = table if pending is None else pa.concat_tables([pending, table])
            while pending.num_rows >= batch_rows:
                yield _table_columns(pending.slice(0, batch_rows))
                pending = pending.slice(batch_rows)
        if pending is not None and pending.num_rows:
            yield _table_columns(pending)


def _table_columns(table: pa.Table) -> dict[str, pa.Array]:
    return {name: table.column(name).combine_chunks() for name in table.column_names}


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

    @property
    def stat_needed(self) -> bool:
        """The manifest gave no id and no size + etag: the object is stat'ed to compute one."""
        return self.rejected is None and self.track_id is None


def _resolve_batch(columns: Columns, policy: SourcePolicy, storage_options: StorageOptions,
                   fingerprint: Fingerprint, keep: Keep | None, pool: ThreadPoolExecutor,
                   workers: int) -> ManifestBatch:
    count = len(columns["url"])
    fast = _fast_rows(columns, policy)
    rows: dict[int, _Row] = {}
    ids: list[str | None] = [None] * count
    for i in range(count):
        if fast is not None and fast.ids[i] is not None:
            ids[i] = fast.ids[i]
        else:
            rows[i] = _parse_row(columns, i, policy, storage_options)
            ids[i] = rows[i].track_id
    known = [i for i in range(count) if ids[i] is not None]
    kept = [True] * count
    if keep is not None and known:
        for i, k in zip(known, keep([ids[i] for i in known])):
            kept[i] = bool(k)
    pending = [rows[i] if i in rows else fast.row(i) for i in range(count) if kept[i]]  # type: ignore[union-attr]
    extra_names = [n for n in columns if n not in MANIFEST_FIELDS and n != "_line_error"]

    def build(row: _Row) -> TrackRef:
        extra = {n: _value(columns[n], row.index) for n in extra_names}
        return _build_track(row, extra, storage_options, fingerprint)

    tracks = list(ordered_map(build, pending, pool, workers))
    if keep is not None:
        late = [i for i, (row, t) in enumerate(zip(pending, tracks)) if row.stat_needed and not t.rejected]
        if late:
            mask = keep([tracks[i].track_id for i in late])
            dropped = {i for i, k in zip(late, mask) if not k}
            tracks = [t for i, t in enumerate(tracks) if i not in dropped]
    return ManifestBatch(tracks=tracks, rows=count, dropped=count - len(tracks))


def _value(column: pa.Array | list[Any], index: int) -> Any:
    return column[index].as_py() if isinstance(column, pa.Array) else column[index]


@dataclass(frozen=True)
class _FastRows:
    """The rows of a batch resolved column-wise (``ids[i]`` is None where the row needs the per-row path)."""

    urls: list[str | None]
    sizes: list[int | None]
    etags: list[str | None]
    ids: list[str | None]

    def row(self, index: int) -> _Row:
        return _Row(index, str(self.urls[index]), self.ids[index], self.sizes[index], self.etags[index])


def _fast_rows(columns: Columns, policy: SourcePolicy) -> _FastRows | None:
    """Resolve the common rows column-wise: keys of the catalogue's own bucket (absolute or relative),
    a whole ``size`` and an ``etag`` (or a safe ``track_id``). Everything else takes the per-row path.
    ``None`` when the batch cannot take this path at all (JSON Lines; no S3 location allowed)."""
    url = columns["url"]
    prefixes = policy.fast_prefixes()
    if not isinstance(url, pa.Array) or "_line_error" in columns or not prefixes:
        return None
    url = url.cast(pa.string())
    valid = pc.fill_null(pc.and_(pc.invert(pc.match_substring_regex(url, r"(^|/)\.{1,2}(/|$)")),
                                 pc.invert(pc.ends_with(url, "/"))), False)
    absolute = pc.starts_with(url, prefixes[0])
    for prefix in prefixes[1:]:
        absolute = pc.or_(absolute, pc.starts_with(url, prefix))
    relative = pc.and_(pc.invert(pc.match_substring(url, "://")), pc.invert(pc.starts_with(url, "/")))
    full = pc.if_else(relative, pc.binary_join_element_wise(policy.folder_url, url, "/"), url)
    relative_ok = relative if any(policy.folder_url.startswith(p) for p in prefixes) else pa.array(
        [False] * len(url))
    ok = pc.and_(valid, pc.or_(absolute, relative_ok))
    given = columns.get("track_id")
    sizes = _whole_sizes(columns.get("size"), count=len(url))
    etag_column = columns.get("etag")
    etags = (pc.utf8_trim(etag_column.cast(pa.string()), '"') if isinstance(etag_column, pa.Array)
             else pa.nulls(len(url), pa.string()))
    if isinstance(given, pa.Array) and pc.any(pc.is_valid(given)).as_py():
        given = given.cast(pa.string())
        ok = pc.and_(ok, pc.fill_null(pc.match_substring_regex(given, r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}$"),
                                      False))
    else:
        given = None
        ok = pc.and_(ok, pc.and_(pc.is_valid(sizes), pc.fill_null(pc.greater(pc.utf8_length(etags), 0), False)))
    ok_list = pc.fill_null(ok, False).to_pylist()
    urls, size_list, etag_list = full.to_pylist(), sizes.to_pylist(), etags.to_pylist()
    given_list = given.to_pylist() if given is not None else None
    ids: list[str | None] = [None] * len(ok_list)
    for i, good in enumerate(ok_list):
        if good:
            ids[i] = given_list[i] if given_list is not None else compute_track_id(
                urls[i], size_list[i], f"etag:{etag_list[i]}")
    return _FastRows(urls=urls, sizes=size_list, etags=etag_list, ids=ids)


def _whole_sizes(column: pa.Array | list[Any] | None, *, count: int) -> pa.Array:
    """``size`` as int64 where it is a whole non-negative number (null elsewhere)."""
    if not isinstance(column, pa.Array):
        return pa.nulls(count, pa.int64())
    if pa.types.is_integer(column.type):
        return pc.if_else(pc.greater_equal(column, 0), column.cast(pa.int64()), pa.scalar(None, pa.int64()))
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        digits = pc.fill_null(pc.match_substring_regex(column, r"^[0-9]{1,18}$"), False)
        return pc.if_else(digits, pc.cast(pc.if_else(digits, column, "0"), pa.int64()), pa.scalar(None, pa.int64()))
    return pa.nulls(count, pa.int64())


def _parse_row(columns: Mapping[str, list[Any]], index: int, policy: SourcePolicy,
               storage_options: StorageOptions) -> _Row:
    """Resolve one row's url, id, size and etag; a problem is the row's ``rejected`` reason."""
    value = _value(columns["url"], index)
    given_id, raw_size, raw_etag, line_error = (
        _value(columns[name], index) if name in columns else None
        for name in ("track_id", "size", "etag", "_line_error"))
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
