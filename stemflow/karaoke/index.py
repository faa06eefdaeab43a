"""The dataset index of a karaoke dataset version, and its optional WebDataset shards.

The *dataset index* is the version's ``manifest.parquet`` (:data:`INDEX_NAME`;
the stored name predates the term): one row per track, what a training job
reads to find the files. In code it is always "index" (:func:`write_index`,
:func:`read_index`); "manifest" alone means a catalogue manifest
(:mod:`stemflow.catalogue.manifests`).

Columns (:data:`INDEX_SCHEMA`; paths are relative to the version folder,
null when the file was not written, e.g. for a rejected track):

==================== ============ =========================================================
column               type         meaning
==================== ============ =========================================================
dataset_version      string       the version folder's name
track_id             string       stable id of the source object (stemflow.catalogue)
source_url           string       normalised URL of the mixture
model_id             string       model + weights + settings that separated it
backing_source       string       ``instrumental`` (2-stem model) or ``drums+bass+other``
group                string       grouping key used for the split (``artist:…`` or ``track:<id>``)
split                string       ``train``, ``validation`` or ``test`` (:data:`SPLIT_NAMES`)
backing_path         string       backing track (relative path)
vocals_path          string       guide vocal
drums/bass/other_path string      the 4 stems when requested and available
duration_s           float64      s
sample_rate          int32        Hz
<scores>             float64      :data:`stemflow.karaoke.scores.SCORE_COLUMNS` (units in the names)
instrumental_only    bool         no vocal to remove
vocals_too_loud      bool         vocal far too loud in the mix
accepted             bool         no reason against it
reasons              list<string> :data:`stemflow.karaoke.scores.REASONS`, plus ``error`` on failure
loudness_gain_db     float64      dB gain applied to every file of the track (same for all)
backing_lufs_out     float64      LUFS of the written backing (``backing_lufs + gain``)
error                string       why the track could not be prepared; null when it was
==================== ============ =========================================================

Undefined scores (NaN, e.g. the loudness of silence) are stored as null.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from stemflow.errors import StorageError
from stemflow.karaoke.scores import SCORE_COLUMNS
from stemflow.store.objects import object_info, read_bytes, write_atomic
from stemflow.store.paths import StorageOptions, check_component, join_url
from stemflow.store.streams import BlockReader, open_atomic_writer

INDEX_NAME = "manifest.parquet"
"""File name of the dataset index in a version folder (stored name: unchanged since the first versions)."""

SPLIT_NAMES: tuple[str, str, str] = ("train", "validation", "test")
"""The values of the ``split`` column, in order (the fractions of ``DatasetSettings.splits`` follow it)."""

FOUR_STEMS: tuple[str, ...] = ("drums", "bass", "other")
"""The stems besides ``vocals`` that a 4-stem model adds (``vocals_path`` is always written)."""

INDEX_SCHEMA = pa.schema(
    [
        ("dataset_version", pa.string()),
        ("track_id", pa.string()),
        ("source_url", pa.string()),
        ("model_id", pa.string()),
        ("backing_source", pa.string()),
        ("group", pa.string()),
        ("split", pa.string()),
        ("backing_path", pa.string()),
        ("vocals_path", pa.string()),
        *[(f"{stem}_path", pa.string()) for stem in FOUR_STEMS],
        ("sample_rate", pa.int32()),
        *[(name, pa.float64()) for name in SCORE_COLUMNS],
        ("instrumental_only", pa.bool_()),
        ("vocals_too_loud", pa.bool_()),
        ("accepted", pa.bool_()),
        ("reasons", pa.list_(pa.string())),
        ("loudness_gain_db", pa.float64()),
        ("backing_lufs_out", pa.float64()),
        ("error", pa.string()),
    ]
)


def _cell(value: Any) -> Any:
    """NaN -> None (null); everything else as is."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def index_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts with the schema's keys; missing keys are null) as a typed table, sorted by track_id.

    Raises:
        StorageError: a row has a key outside :data:`INDEX_SCHEMA`.
    """
    names = INDEX_SCHEMA.names
    for row in rows:
        unknown = set(row) - set(names)
        if unknown:
            raise StorageError(f"index row of {row.get('track_id')!r} has unknown columns {sorted(unknown)}")
    ordered = sorted(rows, key=lambda r: str(r.get("track_id")))
    columns = {name: [_cell(r.get(name)) for r in ordered] for name in names}
    return pa.table(columns, schema=INDEX_SCHEMA)


def write_index(version_url: str, rows: Sequence[Mapping[str, Any]], storage_options: StorageOptions = None) -> str:
    """Write the dataset index ``<version>/manifest.parquet`` atomically; its URL."""
    buffer = io.BytesIO()
    pq.write_table(index_table(rows), buffer)
    url = join_url(version_url, INDEX_NAME)
    write_atomic(url, buffer.getvalue(), storage_options)
    return url


def read_index(version_url: str, storage_options: StorageOptions = None) -> pa.Table:
    """Read a version's dataset index (``manifest.parquet``)."""
    return pq.read_table(io.BytesIO(read_bytes(join_url(version_url, INDEX_NAME), storage_options)))


def write_webdataset_shards(
    version_url: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    tracks_per_shard: int = 100,
    storage_options: StorageOptions = None,
) -> list[str]:
    """WebDataset tar shards of the accepted tracks: ``shards/<split>-<nnnnnn>.tar``.

    Each sample ``<track_id>`` holds ``<track_id>.backing.<ext>``,
    ``<track_id>.vocals.<ext>`` (and the 4 stems when written) plus
    ``<track_id>.json`` (the index row without paths). The audio bytes are
    streamed back from the version folder straight into the tar, which is
    streamed to its object (:func:`stemflow.store.streams.open_atomic_writer`):
    memory holds one block, never a shard, and a shard appears only complete.
    A row's paths must be safe relative paths inside the version folder.
    Returns the shards' relative paths.
    """
    if tracks_per_shard < 1:
        raise StorageError(f"tracks_per_shard must be >= 1, got {tracks_per_shard}")
    by_split: dict[str, list[Mapping[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: str(r["track_id"])):
        if row.get("accepted") and row.get("backing_path"):
            by_split.setdefault(str(row["split"]), []).append(row)
    written = []
    for split, members in sorted(by_split.items()):
        for first in range(0, len(members), tracks_per_shard):
            name = f"{split}-{first // tracks_per_shard:06d}.tar"
            with open_atomic_writer(join_url(version_url, "shards", name), storage_options) as sink:
                _write_tar(sink, version_url, members[first : first + tracks_per_shard], storage_options)
            written.append(f"shards/{name}")
    return written


def _member_url(version_url: str, relative: str) -> str:
    """``<version>/<relative>``, every component of ``relative`` checked (no ``..``, no absolute path)."""
    return join_url(version_url, *relative.split("/"))


def _write_tar(sink: BinaryIO, version_url: str, members: Sequence[Mapping[str, Any]],
               storage_options: StorageOptions) -> None:
    """Stream one uncompressed tar of the members' files and JSON, in WebDataset key order, into ``sink``."""
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for row in members:
            key = check_component(str(row["track_id"]), "track_id")
            for column in ("backing_path", "vocals_path", *[f"{s}_path" for s in FOUR_STEMS]):
                path = row.get(column)
                if path:
                    url = _member_url(version_url, str(path))
                    info = tarfile.TarInfo(f"{key}.{column[: -len('_path')]}.{str(path).rsplit('.', 1)[-1]}")
                    info.size, info.mode = object_info(url, storage_options).size, 0o644
                    tar.addfile(info, BlockReader(url, storage_options))
            meta = {k: _cell(v) for k, v in row.items() if not k.endswith("_path")}
            data = json.dumps(meta, sort_keys=True, default=list).encode()
            info = tarfile.TarInfo(f"{key}.json")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
