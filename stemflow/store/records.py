"""Quality records: one row per (track, stem), stored as hive-partitioned Parquet parts.

Layout::

    <out>/metadata/model_id=<m>/run_date=<YYYY-MM-DD>/run_id=<r>/part-<nnnnn>.parquet

This module holds the schema (:data:`COLUMNS`), builds rows (:func:`stem_rows`,
:func:`error_row`), writes one part per shard (:func:`write_part`) and reads them
back (:func:`read_records`). The run manifest ``<out>/runs/<run_id>.json`` is
:mod:`stemflow.store.runs`.

**One row per (track, stem)**, the track's columns repeated on each of its stem
rows. One flat table is what pandas, DuckDB and spreadsheet users filter
without joins; the repetition costs little because Parquet dictionary- and
run-length-encodes repeated values. A track that failed gets **one error row**:
``status="error"``, ``stem``/``stem_url`` null, ``error`` holding the message, and
whatever track columns are known. No track vanishes from the records.

The partition columns ``model_id``, ``run_date`` and ``run_id`` live in the path
only (standard hive layout) and come back as columns on reading:
:func:`read_records` types them as in :data:`RECORD_SCHEMA`; in DuckDB use
``read_parquet('<out>/metadata/**/*.parquet', hive_partitioning = true,
hive_types = {'model_id': VARCHAR, 'run_date': DATE, 'run_id': VARCHAR})`` (without
``hive_types`` an all-digit run id becomes a BIGINT); pandas gives categoricals.

**Uniqueness (what readers may rely on).** A run writes ``ok`` rows only for
tracks whose commit marker names that run (see :mod:`stemflow.store.commit`), so
``ok`` rows are unique per ``(model_id, track_id, stem)`` across all runs. Error
rows can repeat: a track may fail in several runs before one commits it. The
current state of a track is its ``ok`` rows if any, else its latest error row.
Write one part per shard with ``part_index`` = the shard index: a retried
shard then replaces its part instead of adding duplicates (include rows of
tracks this run committed in the earlier attempt).

**What rows may hold.** Keys are the columns below. Besides them, rows are
normalised on writing so :mod:`stemflow.measures.quality`'s dicts can be passed as they
are: ``model_id``/``run_date``/``run_id`` must equal the part's partition values
and are dropped; ``sample_rate_hz`` becomes ``sample_rate``; the per-track
``bleed_ratio_<stem>`` keys become ``bleed_ratio`` on that stem's row; float NaN
("undefined", e.g. the loudness of silence) is stored as null so SQL aggregates
skip it. Any other key is rejected with the list of known ones.

Columns: :data:`COLUMNS` is the table (name, Arrow type, unit, scope run/track/stem/row,
meaning); :func:`schema_markdown` renders it for the README. One row per (track,
stem): 3 partition columns, track identity, stem identity and size/hash, status
and error, track facts (duration, rates, channels), the per-stem quality measures
(:data:`STEM_MEASURES`), ``residual_db``, timings in seconds, device, version and
``created_at`` (UTC, µs).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stemflow import __version__
from stemflow.errors import StorageError
from stemflow.store.objects import write_atomic, write_create_only
from stemflow.store.paths import StorageOptions, check_component, join_url

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Column:
    """One record column: name, Arrow type, unit, scope (run/track/stem/row) and meaning."""

    name: str
    type: pa.DataType
    unit: str
    scope: str
    description: str


def _c(name: str, type_: pa.DataType, unit: str, scope: str, description: str) -> Column:
    return Column(name, type_, unit, scope, description)


_F = pa.float64()

COLUMNS: tuple[Column, ...] = (
    _c("model_id", pa.string(), "", "run", "model + weights + settings id (partition)"),
    _c("run_date", pa.date32(), "day", "run", "UTC date the run started (partition)"),
    _c("run_id", pa.string(), "", "run", "run id (partition)"),
    _c("track_id", pa.string(), "", "track", "stable id of the source object"),
    _c("source_url", pa.string(), "", "track", "normalised URL of the mixture"),
    _c("stem", pa.string(), "", "stem", "stem name; null on error rows"),
    _c("stem_url", pa.string(), "", "stem", "URL of the stored stem; null on error rows"),
    _c("stem_bytes", pa.int64(), "bytes", "stem", "size of the stored stem"),
    _c("stem_sha256", pa.string(), "", "stem", "hex sha256 of the stored stem"),
    _c("status", pa.string(), "", "track", "'ok' or 'error'"),
    _c("error", pa.string(), "", "track", "error message; null when ok"),
    _c("duration_s", _F, "s", "track", "duration of the mixture"),
    _c("sample_rate", pa.int32(), "Hz", "track", "sample rate of the stems"),
    _c("channels_in", pa.int16(), "", "track", "channels of the source before the channel policy"),
    _c("source_sample_rate", pa.int32(), "Hz", "track", "sample rate of the source file"),
    _c("peak_dbfs", _F, "dBFS", "stem", "sample peak"),
    _c("true_peak_dbtp", _F, "dBTP", "stem", "4x oversampled true peak (ITU-R BS.1770)"),
    _c("loudness_lufs", _F, "LUFS", "stem", "integrated loudness (ITU-R BS.1770)"),
    _c("rms_dbfs", _F, "dBFS", "stem", "RMS level"),
    _c("clipped_ratio", _F, "0-1", "stem", "share of samples at or above full scale"),
    _c("silence_ratio", _F, "0-1", "stem", "share of 100 ms windows below -60 dBFS RMS"),
    _c("stereo_correlation", _F, "-1..1", "stem", "left/right correlation"),
    _c("energy_share", _F, ">=0", "stem", "stem energy / mixture energy (above 1: out-of-phase stems)"),
    _c("bleed_ratio", _F, "0-1", "stem", "share of the stem's STFT energy in bins where another stem is louder"),
    _c("residual_db", _F, "dB", "track", "energy of mixture - sum of stems, relative to the mixture"),
    _c("processing_s", _F, "s", "track", "wall time for the whole track"),
    _c("decode_s", _F, "s", "track", "decode + resample"),
    _c("separate_s", _F, "s", "track", "model inference"),
    _c("encode_s", _F, "s", "track", "encode + upload of the stems"),
    _c("quality_s", _F, "s", "track", "computing the quality measures"),
    _c("device", pa.string(), "", "track", "device that separated, e.g. 'cpu', 'cuda:0'"),
    _c("stemflow_version", pa.string(), "", "run", "stemflow version that wrote the row"),
    _c("created_at", pa.timestamp("us", tz="UTC"), "UTC", "row", "time the row was built"),
    _c("residual_stem", pa.string(), "", "track",
       "stem the residual was added to (sum_to_mixture: stems sum to the mixture); null: stems as the model gave them"),
    _c("error_type", pa.string(), "", "track",
       "class of failure of an error row (see ERROR_TYPES: decode, limit, source, model, storage, crash, marker, "
       "internal); null when ok or written before 0.2"),
    _c("source_extra", pa.string(), "", "track",
       "JSON object of the catalogue manifest row's other columns (artist, isrc...); null for listed catalogues"),
)
"""Every record column, in stored order (the README's table is :func:`schema_markdown`)."""

PARTITION_COLUMNS: tuple[str, ...] = ("model_id", "run_date", "run_id")
"""Columns that live in the part's path (hive partitions), not inside the file."""

RECORD_SCHEMA: pa.Schema = pa.schema([pa.field(c.name, c.type) for c in COLUMNS])
"""Schema of :func:`read_records`' result: every column, partitions included."""

FILE_SCHEMA: pa.Schema = pa.schema([f for f in RECORD_SCHEMA if f.name not in PARTITION_COLUMNS])
"""Schema stored inside each part file (the partition columns live in the path)."""

STEM_MEASURES: frozenset[str] = frozenset(
    c.name for c in COLUMNS if c.scope == "stem" and pa.types.is_floating(c.type)
)
"""Per-stem float measures (``stemflow.measures.quality`` keys); adding one = adding a :data:`COLUMNS` entry."""

TRACK_MEASURES: frozenset[str] = frozenset({"residual_db"})
"""Per-track float measures (repeated on each stem row)."""

STATUSES: tuple[str, ...] = ("ok", "error")
"""Values of the ``status`` column."""

ERROR_TYPES: dict[str, str] = {
    "decode": "the source is empty, undecodable, or holds NaN/inf samples",
    "limit": "the source is over max_source_bytes or max_duration_s (refused before reading or decoding)",
    "source": "the catalogue entry cannot be read: missing object, or a manifest row outside the catalogue",
    "model": "the model failed on the track (e.g. out of memory)",
    "storage": "reading the source or writing the stems, marker or records failed after the retries",
    "crash": "the track crashed its worker process max_worker_crashes times",
    "marker": "the track's _COMMITTED.json exists but cannot be read (left in place, see docs/guarantees.md)",
    "internal": "anything else (a stemflow bug: please report it)",
}
"""Values of the ``error_type`` column of error rows, and what each means."""

_ROW_KEYS = frozenset(FILE_SCHEMA.names)


def schema_markdown() -> str:
    """The column table as Markdown (name, type, unit, scope, meaning), for the README."""
    lines = ["| column | type | unit | scope | meaning |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{c.name}` | {c.type} | {c.unit or '–'} | {c.scope} | {c.description} |" for c in COLUMNS]
    return "\n".join(lines)


_ALIASES = {"sample_rate_hz": "sample_rate"}
_BLEED_PREFIX = "bleed_ratio_"


def _check_keys(row: Mapping[str, Any], where: str) -> None:
    unknown = sorted(
        k for k in row
        if k not in _ROW_KEYS and k not in _ALIASES and k not in PARTITION_COLUMNS and not k.startswith(_BLEED_PREFIX)
    )
    if unknown:
        raise StorageError(
            f"{where}: unknown record column(s) {unknown}; known per-stem measures are "
            f"{sorted(STEM_MEASURES)} (add new ones to stemflow.store.records.COLUMNS)"
        )


def _normalise_row(row: Mapping[str, Any], partition: Mapping[str, str], where: str) -> dict[str, Any]:
    """Apply the rules of the module docstring ("What rows may hold") to one row."""
    _check_keys(row, where)
    out = dict(row)
    for key in PARTITION_COLUMNS:
        if key in out:
            value = out.pop(key)
            text = value.isoformat() if isinstance(value, date) else str(value)
            if key in partition and text != partition[key]:
                raise StorageError(f"{where}: {key}={text!r} but the part is for {partition[key]!r}")
    for alias, name in _ALIASES.items():
        if alias in out:
            value = out.pop(alias)
            if value is not None and out.get(name) is None:
                out[name] = int(round(float(value)))
            elif value is not None and int(round(float(value))) != int(out[name]):
                raise StorageError(f"{where}: {alias}={value} disagrees with {name}={out[name]}")
    bleed = {k[len(_BLEED_PREFIX):]: out.pop(k) for k in [k for k in out if k.startswith(_BLEED_PREFIX)]}
    if out.get("stem") in bleed and out.get("bleed_ratio") is None:
        out["bleed_ratio"] = bleed[out["stem"]]
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def stem_rows(track: Mapping[str, Any], stems: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``ok`` rows of one committed track: the track's columns repeated on each stem's row.

    Args:
        track: track-level columns (``track_id``, ``source_url``, ``duration_s``,
            ``residual_db``, timings, ``device``…); no partition columns.
        stems: stem name → that stem's columns (``stem_url``, ``stem_bytes``,
            ``stem_sha256`` and the :data:`STEM_MEASURES`).

    Raises:
        StorageError: an unknown column, a stem-scope column among the track's, or no stems.
    """
    _check_keys(track, "track columns")
    misplaced = sorted(k for k in track if k in STEM_MEASURES or k in {"stem", "stem_url"})
    if misplaced:
        raise StorageError(f"per-stem column(s) {misplaced} given as track columns")
    if not stems:
        raise StorageError(f"track {track.get('track_id')!r}: an ok record needs at least one stem")
    rows = []
    for name, values in stems.items():
        _check_keys(values, f"stem {name!r}")
        rows.append({**track, **values, "stem": name, "status": "ok", "error": None})
    return rows


def error_row(track: Mapping[str, Any], message: str, error_type: str = "internal") -> dict[str, Any]:
    """The single row of a failed track: ``status="error"``, ``stem`` null, ``error=message``.

    ``error_type`` is one of :data:`ERROR_TYPES`.

    Raises:
        StorageError: an unknown column or error type.
    """
    _check_keys(track, "track columns")
    if error_type not in ERROR_TYPES:
        raise StorageError(f"error_type must be one of {sorted(ERROR_TYPES)}, got {error_type!r}")
    return {**track, "stem": None, "stem_url": None, "status": "error", "error": str(message),
            "error_type": error_type}


def rows_to_table(
    rows: Iterable[Mapping[str, Any]],
    *,
    created_at: datetime | None = None,
    partition: Mapping[str, str] | None = None,
) -> pa.Table:
    """Rows (dicts of :data:`FILE_SCHEMA` columns; missing ones become null) → a Table.

    Rows are normalised first (module docstring, "What rows may hold"); partition
    columns in a row must equal ``partition`` (``{"model_id": …, "run_date":
    "YYYY-MM-DD", "run_id": …}``). ``created_at`` fills rows without one (default: now, UTC),
    and ``stemflow_version`` defaults to this package's version.

    Raises:
        StorageError: unknown columns, a bad status, missing ``track_id``, or a value of the wrong type.
    """
    stamp = created_at or datetime.now(timezone.utc)
    columns: dict[str, list[Any]] = {name: [] for name in FILE_SCHEMA.names}
    for i, raw in enumerate(rows):
        row = _normalise_row(raw, partition or {}, f"row {i}")
        if row.get("status") not in STATUSES:
            raise StorageError(f"row {i}: status must be one of {STATUSES}, got {row.get('status')!r}")
        if not row.get("track_id"):
            raise StorageError(f"row {i}: track_id is required")
        if row.get("error_type") is not None and row["error_type"] not in ERROR_TYPES:
            raise StorageError(f"row {i}: error_type must be one of {sorted(ERROR_TYPES)}, got {row['error_type']!r}")
        for name in FILE_SCHEMA.names:
            columns[name].append(row.get(name))
        if columns["created_at"][-1] is None:
            columns["created_at"][-1] = stamp
        if columns["stemflow_version"][-1] is None:
            columns["stemflow_version"][-1] = __version__
    try:
        return pa.table(columns, schema=FILE_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        raise StorageError(f"record values do not fit the schema: {e}") from e


def part_url(output_url: str, model_id: str, run_date: date | str, run_id: str, part_index: int) -> str:
    """``<out>/metadata/model_id=<m>/run_date=<YYYY-MM-DD>/run_id=<r>/part-<nnnnn>.parquet``."""
    try:
        if isinstance(run_date, datetime):
            run_date = run_date.date()
        day = run_date.isoformat() if isinstance(run_date, date) else date.fromisoformat(run_date).isoformat()
    except (ValueError, TypeError) as e:
        raise StorageError(f"run_date must be a date or 'YYYY-MM-DD', got {run_date!r}") from e
    if part_index < 0:
        raise StorageError(f"part_index must be >= 0, got {part_index}")
    return join_url(
        output_url,
        "metadata",
        f"model_id={check_component(model_id, 'model_id')}",
        f"run_date={day}",
        f"run_id={check_component(run_id, 'run_id')}",
        f"part-{part_index:05d}.parquet",
    )


def write_part(
    output_url: str,
    model_id: str,
    run_date: date | str,
    run_id: str,
    part_index: int,
    rows: Iterable[Mapping[str, Any]],
    *,
    storage_options: StorageOptions = None,
    created_at: datetime | None = None,
) -> str:
    """Write one Parquet part atomically (local: temp + rename; S3: one PUT) and return its URL.

    An existing part with the same index is replaced (retried shard).

    Raises:
        StorageError: invalid rows or names, or the write failed.
    """
    url, data = _part_bytes(output_url, model_id, run_date, run_id, part_index, rows, created_at)
    write_atomic(url, data, storage_options)
    logger.debug("wrote record part %s", url)
    return url


def create_part(
    output_url: str,
    model_id: str,
    run_date: date | str,
    run_id: str,
    part_index: int,
    rows: Iterable[Mapping[str, Any]],
    *,
    storage_options: StorageOptions = None,
) -> bool:
    """Write one Parquet part only if none exists at its URL; ``True`` if this call wrote it.

    Crash recovery writes the part a crashed run did not get to write under that
    run's own id and part index, create-only: if the run was in fact alive and
    writes its part later, it replaces this one (same URL), so a shard's rows are
    never recorded twice.

    Raises:
        StorageError: invalid rows or names, or the write failed.
    """
    url, data = _part_bytes(output_url, model_id, run_date, run_id, part_index, rows, None)
    return write_create_only(url, data, storage_options)


def _part_bytes(output_url: str, model_id: str, run_date: date | str, run_id: str, part_index: int,
                rows: Iterable[Mapping[str, Any]], created_at: datetime | None) -> tuple[str, bytes]:
    """The URL and Parquet bytes (zstd) of one part."""
    url = part_url(output_url, model_id, run_date, run_id, part_index)
    day = url.split("/run_date=", 1)[1].split("/", 1)[0]
    table = rows_to_table(
        rows, created_at=created_at, partition={"model_id": model_id, "run_date": day, "run_id": run_id}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return url, buffer.getvalue()


def read_records(
    output_url: str, model_id: str | None = None, *, storage_options: StorageOptions = None,
    quarantine: Any = None,
) -> pa.Table:
    """All record rows under ``<out>/metadata`` (optionally one model) as a :data:`RECORD_SCHEMA` table.

    Reads the part files one by one (:mod:`stemflow.store.record_scan`): a file
    that is not a part of the layout, or that is not readable Parquet, is skipped
    and reported to ``quarantine`` (a :class:`stemflow.store.quarantine.Quarantine`;
    logged either way), never failing the read. Files written before a column was
    added read back with nulls in it. Loads the result in memory: for
    catalogue-scale queries point DuckDB or a pyarrow dataset at the same folder,
    or stream with :func:`stemflow.store.record_scan.iter_record_tables`.
    """
    from stemflow.store.record_scan import iter_record_tables

    tables = list(iter_record_tables(output_url, model_id, storage_options=storage_options, quarantine=quarantine))
    if not tables:
        return RECORD_SCHEMA.empty_table()
    return pa.concat_tables(tables)
