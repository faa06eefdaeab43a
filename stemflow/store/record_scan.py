"""Reading the Parquet records part by part: streamed, column-projected, and robust to foreign files.

``<out>/metadata/`` is written by stemflow only, but lives in a bucket people
and tools also write to. :func:`iter_part_refs` lists the part files of the
layout (``model_id=<m>/run_date=<YYYY-MM-DD>/run_id=<r>/part-<n>.parquet``);
:func:`iter_record_tables` reads them one at a time (a few concurrently),
keeping only the asked columns, so the index bootstrap and ``status`` stream
through millions of rows in bounded memory. Anything else found there (a file
that is not a part, a part that is not readable Parquet) is reported to the
:class:`~stemflow.store.quarantine.Quarantine` and skipped, never failing the
read. Hidden files (``.<name>.<random>.tmp``, left by an interrupted local
atomic write) are skipped silently.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from stemflow.errors import StorageError
from stemflow.store.lookahead import ordered_map
from stemflow.store.paths import StorageOptions, check_component, filesystem, join_url, url_of
from stemflow.store.quarantine import Quarantine
from stemflow.store.records import FILE_SCHEMA, PARTITION_COLUMNS, RECORD_SCHEMA

logger = logging.getLogger(__name__)

_PART = re.compile(
    r"^model_id=(?P<model_id>[A-Za-z0-9][A-Za-z0-9._=+-]{0,199})/run_date=(?P<run_date>\d{4}-\d{2}-\d{2})/"
    r"run_id=(?P<run_id>[A-Za-z0-9][A-Za-z0-9._=+-]{0,199})/part-\d{5,}\.parquet$"
)


@dataclass(frozen=True)
class PartRef:
    """One Parquet part of the records and its hive partition values."""

    url: str
    model_id: str
    run_date: str
    run_id: str


def iter_part_refs(
    output_url: str, model_id: str | None = None, *, run_id: str | None = None,
    storage_options: StorageOptions = None, quarantine: Quarantine | None = None,
) -> Iterator[PartRef]:
    """The part files under ``<out>/metadata`` (one model, one run if given), sorted by path.

    Files that are not parts of the layout are reported to ``quarantine`` and skipped.

    Raises:
        StorageError: the listing itself failed.
    """
    root = join_url(output_url, "metadata")
    top = root if model_id is None else join_url(root, f"model_id={check_component(model_id, 'model_id')}")
    fs, path = filesystem(top, storage_options)
    _, root_path = filesystem(root, storage_options)
    try:
        found = sorted(fs.find(path)) if fs.exists(path) else []
    except OSError as e:
        raise StorageError(f"cannot list the records under {top!r}: {e}") from e
    fs.invalidate_cache(path)
    prefix = root_path.rstrip("/") + "/"
    for name in found:
        relative = name[len(prefix):] if name.startswith(prefix) else name
        if relative.rsplit("/", 1)[-1].startswith("."):
            logger.debug("skipping hidden file %s", name)
            continue
        match = _PART.match(relative)
        if match is None:
            if quarantine is not None:
                quarantine.add("metadata_file", url_of(fs, name), "not a Parquet part of the records layout")
            else:
                logger.warning("skipping %s: not a Parquet part of the records layout", url_of(fs, name))
            continue
        if run_id is not None and match["run_id"] != run_id:
            continue
        yield PartRef(url_of(fs, name), match["model_id"], match["run_date"], match["run_id"])


def read_part(part: PartRef, columns: Sequence[str] | None = None, *,
              storage_options: StorageOptions = None) -> pa.Table:
    """One part's rows (``columns`` of :data:`RECORD_SCHEMA`, default all), partition columns from its path.

    Columns the file lacks (written before they existed) come back as nulls.

    Raises:
        StorageError: the file cannot be read as Parquet.
    """
    names = list(RECORD_SCHEMA.names if columns is None else columns)
    unknown = [n for n in names if n not in RECORD_SCHEMA.names]
    if unknown:
        raise StorageError(f"unknown record column(s) {unknown}")
    fs, path = filesystem(part.url, storage_options)
    in_file = [n for n in names if n in FILE_SCHEMA.names]
    try:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            present = [n for n in in_file if n in parquet.schema_arrow.names]
            table = parquet.read(columns=present)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise StorageError(f"cannot read record part {part.url!r}: {e}") from e
    values = {"model_id": part.model_id, "run_date": part.run_date, "run_id": part.run_id}
    arrays = []
    for name in names:
        field = RECORD_SCHEMA.field(name)
        if name in PARTITION_COLUMNS:
            arrays.append(pa.array([values[name]] * table.num_rows, pa.string()).cast(field.type))
        elif name in table.column_names:
            arrays.append(table.column(name).cast(field.type))
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema([RECORD_SCHEMA.field(n) for n in names]))


def iter_record_tables(
    output_url: str, model_id: str | None = None, *, columns: Sequence[str] | None = None,
    run_id: str | None = None, storage_options: StorageOptions = None, quarantine: Quarantine | None = None,
    workers: int = 8,
) -> Iterator[pa.Table]:
    """One table per readable part (see :func:`read_part`), in path order, ``workers`` parts read ahead.

    An unreadable part is reported to ``quarantine`` (logged either way) and skipped.
    """
    parts = iter_part_refs(output_url, model_id, run_id=run_id, storage_options=storage_options,
                           quarantine=quarantine)

    def read(part: PartRef) -> pa.Table | None:
        try:
            return read_part(part, columns, storage_options=storage_options)
        except StorageError as e:
            if quarantine is not None:
                quarantine.add("metadata_file", part.url, str(e))
            else:
                logger.warning("skipping unreadable record part %s: %s", part.url, e)
            return None

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="stemflow-records") as pool:
        for table in ordered_map(read, parts, pool, workers):
            if table is not None:
                yield table
