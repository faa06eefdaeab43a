"""Catalogue manifests: a CSV or Parquet file listing the tracks, read in row batches.

A manifest has a ``url`` column and optionally ``track_id``, ``size`` and
``etag``; every other column (``group``, ``artist``, ``isrc``…) is carried along
in :attr:`stemflow.catalogue.tracks.TrackRef.extra`. Rows stream through
:func:`read_manifest` ``batch_rows`` at a time (pyarrow's streaming CSV reader,
Parquet ``iter_batches``), so a 100-million-row manifest never sits in memory.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from stemflow.catalogue.lookahead import ordered_map
from stemflow.catalogue.tracks import Fingerprint, TrackRef, compute_track_id, track_from_info
from stemflow.errors import StorageError
from stemflow.store.objects import object_info
from stemflow.store.paths import StorageOptions, check_component, filesystem, normalise_url

MANIFEST_FIELDS: tuple[str, ...] = ("url", "track_id", "size", "etag")
"""Columns with a meaning; all others go to ``TrackRef.extra``."""

PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")
"""File name endings (lower-case) of Parquet manifests; the other manifests are CSV."""

MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", *PARQUET_SUFFIXES)
"""File name endings (lower-case) of catalogue manifests: CSV or Parquet."""


def _resolve_manifest_url(value: str, manifest_folder: str) -> str:
    if "://" in value or value.startswith("/"):
        return value
    return f"{manifest_folder}/{value}"


def _manifest_batches(url: str, storage_options: StorageOptions, batch_rows: int) -> Iterator[pa.RecordBatch]:
    fs, path = filesystem(url, storage_options)
    lower = path.lower()
    try:
        if lower.endswith(PARQUET_SUFFIXES):
            with fs.open(path, "rb") as handle:
                yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_rows)
        elif lower.endswith(".csv"):
            with fs.open(path, "rb") as handle:
                header = next(csv.reader(io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")), [])
            types = {name: (pa.int64() if name == "size" else pa.string()) for name in header}
            with fs.open(path, "rb") as handle:
                reader = pa_csv.open_csv(
                    handle,
                    read_options=pa_csv.ReadOptions(block_size=1 << 20),
                    convert_options=pa_csv.ConvertOptions(column_types=types, strings_can_be_null=True),
                )
                yield from reader
        else:
            raise StorageError(f"manifest {url!r}: expected a .csv or .parquet file")
    except FileNotFoundError as e:
        raise StorageError(f"manifest {url!r} does not exist") from e
    except (OSError, pa.ArrowException) as e:
        raise StorageError(f"cannot read manifest {url!r}: {e}") from e


def read_manifest(
    url: str,
    *,
    storage_options: StorageOptions = None,
    source_storage_options: StorageOptions = None,
    batch_rows: int = 10_000,
    fingerprint: Fingerprint = "content",
    workers: int = 8,
) -> Iterator[TrackRef]:
    """Yield a :class:`TrackRef` per manifest row, reading ``batch_rows`` rows at a time.

    Columns: ``url`` (required; relative paths are resolved against the
    manifest's folder), ``track_id`` (optional, must be a safe path component),
    ``size`` and ``etag`` (optional); every other column goes to
    :attr:`TrackRef.extra` (CSV values as strings, Parquet values typed).
    Rows without ``track_id`` need ``size`` and ``etag``, otherwise the object
    is stat'ed (and hashed if local) to compute one.

    Args:
        storage_options: to read the manifest itself.
        source_storage_options: to stat the listed objects (default: ``storage_options``).
        workers: rows resolved concurrently (threads) when objects must be stat'ed; order kept.

    Raises:
        StorageError: unreadable manifest, no ``url`` column, an unsafe ``track_id``.
    """
    if batch_rows < 1:
        raise StorageError(f"batch_rows must be >= 1, got {batch_rows}")
    sources = storage_options if source_storage_options is None else source_storage_options
    folder = normalise_url(url, storage_options).rsplit("/", 1)[0]

    def rows() -> Iterator[dict[str, Any]]:
        for batch in _manifest_batches(url, storage_options, batch_rows):
            if "url" not in batch.schema.names:
                raise StorageError(f"manifest {url!r} has no 'url' column (columns: {batch.schema.names})")
            yield from batch.to_pylist()

    def to_track(row: dict[str, Any]) -> TrackRef:
        return _manifest_row_to_track(row, folder, sources, fingerprint)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="stemflow-manifest") as pool:
        yield from ordered_map(to_track, rows(), pool, workers)


def _manifest_row_to_track(
    row: Mapping[str, Any], folder: str, storage_options: StorageOptions, fingerprint: Fingerprint
) -> TrackRef:
    if not row.get("url"):
        raise StorageError(f"manifest row without url: {dict(row)}")
    extra = {k: v for k, v in row.items() if k not in MANIFEST_FIELDS}
    source = normalise_url(_resolve_manifest_url(str(row["url"]), folder), storage_options)
    size = None if row.get("size") is None else int(row["size"])
    etag = str(row["etag"]).strip('"') if row.get("etag") else None
    if row.get("track_id"):
        track_id = check_component(str(row["track_id"]), "track_id")
        return TrackRef(url=source, track_id=track_id, size=size, etag=etag, extra=extra)
    if size is not None and etag:
        track_id = compute_track_id(source, size, f"etag:{etag}")
        return TrackRef(url=source, track_id=track_id, size=size, etag=etag, extra=extra)
    info = object_info(source, storage_options)
    return track_from_info(info, storage_options=storage_options, fingerprint=fingerprint, extra=extra)

