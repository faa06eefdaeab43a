"""Versioned karaoke datasets built from what a separation run committed.

Input: the committed stems ``<out>/stems/<model_id>/<track_id>/`` (only tracks
with a ``_COMMITTED.json`` marker, see :mod:`stemflow.store.commit`). Output, a
folder usable as is::

    <dataset>/<version>/<split>/<track_id>/backing.<ext>     backing track
    <dataset>/<version>/<split>/<track_id>/vocals.<ext>      guide vocal
    <dataset>/<version>/<split>/<track_id>/{drums,bass,other}.<ext>   with stems4 (4-stem models)
    <dataset>/<version>/manifest.parquet                     dataset index: a row per track (stemflow.karaoke.index)
    <dataset>/<version>/README.md  (+ card/*.png)            the dataset card (stemflow.karaoke.card)
    <dataset>/<version>/shards/<split>-<n>.tar               optional WebDataset shards
    <dataset>/<version>/_COMPLETE.json                       written last, create-only

**Backing track.** A model with an ``instrumental`` stem (2-stem, or a vocal
model's complement) gives it directly; a 4-stem model gives
``drums + bass + other``. The index's ``backing_source`` says which.

**Loudness.** With ``loudness_lufs`` set, each track's backing is brought to
that integrated loudness and *the same gain* is applied to its vocal (and
stems), so they stay mixable; the gain is limited so no written file's true
peak exceeds ``max_true_peak_dbtp`` (never clipping), and recorded as
``loudness_gain_db`` (:func:`stemflow.karaoke.scores.loudness_gain_db`). Scores are
measured before the gain.

**Versions.** ``v<YYYYMMDD>-<model short>-<hash>``, the hash (8 hex) covering
the model_id, every setting and the sorted track ids with their group keys. A version is never
overwritten: :func:`build_dataset` first looks for a complete version with the
same model and hash (any date) and, finding one, does nothing. A new model, new
settings or new tracks give a new version. An incomplete folder (a crash) is
completed by the next run of the same day.

**Splits.** All tracks of a group go to one split. A group's split depends on
the group key and the seed only: ``u = int(sha256(f"{seed}:{key}")[:16], 16) /
2**64`` falls into the cumulative split fractions (train, validation, test).
So assignments are stable across runs and when the catalogue grows (a new
track of a known artist joins that artist's split; a new artist never moves
others). The key is the group column's value (``artist`` by default; stripped,
case-folded) as ``<column>:<value>``; a track without one is its own group,
``track:<track_id>``. The fractions hold in expectation, not exactly, for few groups.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import numpy as np

from stemflow.errors import ConfigError, StemflowError, StorageError
from stemflow.hub.model_id import parse_model_id
from stemflow.karaoke.card import write_card
from stemflow.karaoke.index import SPLIT_NAMES, write_index, write_webdataset_shards
from stemflow.karaoke.scores import VocalSeparator
from stemflow.karaoke.streamed import backing_of  # noqa: F401 - public here since the first versions
from stemflow.karaoke.track_build import score_and_write
from stemflow.karaoke.settings import DatasetSettings
from stemflow.evaluation.committed import read_committed
from stemflow.store.objects import exists, read_bytes, write_create_only
from stemflow.store.paths import StorageOptions, filesystem, join_url
from stemflow.store.redact import redact

logger = logging.getLogger(__name__)

COMPLETE_NAME = "_COMPLETE.json"
COMPLETE_FORMAT = "stemflow.karaoke-dataset/1"
"""``format`` of ``_COMPLETE.json`` (a stored value: kept as the first versions wrote it)."""


@dataclass(frozen=True)
class DatasetTrack:
    """A committed track to include: its id, source and (optional) group value."""

    track_id: str
    source_url: str = ""
    group_value: Any = None


def group_key(value: Any, track_id: str, column: str) -> str:
    """``<column>:<value stripped and case-folded>``, or ``track:<track_id>`` when the value is missing."""
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip().casefold()
    return f"{column}:{text}" if text else f"track:{track_id}"


def assign_split(key: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> str:
    """The split of a group: its hash position ``u`` in [0, 1) against the cumulative fractions."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()
    u = int(digest[:16], 16) / 2.0**64
    cumulative = 0.0
    for name, fraction in zip(SPLIT_NAMES, fractions, strict=True):
        cumulative += fraction
        if u < cumulative:
            return name
    return next(n for n, f in reversed(list(zip(SPLIT_NAMES, fractions, strict=True))) if f > 0)


def model_short(model_id: str) -> str:
    """``<registry name>-<first 8 hex of the weights>`` of a model_id (else its first 32 safe characters)."""
    try:
        parts = parse_model_id(model_id)
        return f"{parts.name}-{parts.weights_sha256_prefix[:8]}"
    except ConfigError:
        return "".join(c if c.isalnum() or c in "._-" else "-" for c in model_id)[:32]


def version_members(tracks: Iterable[DatasetTrack], settings: DatasetSettings) -> list[str]:
    """What a version holds, for its hash: sorted ``<track_id> <group key>`` (new groups = new version)."""
    return sorted(f"{t.track_id} {group_key(t.group_value, t.track_id, settings.group_column)}" for t in tracks)


def version_hash(model_id: str, settings: DatasetSettings, members: Iterable[str]) -> str:
    """8 hex of sha256 over the model_id, the settings and the sorted members (canonical JSON)."""
    body = {"model_id": model_id, "settings": settings.as_dict(), "tracks": sorted(members)}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]


def version_name(model_id: str, settings: DatasetSettings, tracks: Iterable[DatasetTrack], day: date) -> str:
    """``v<YYYYMMDD>-<model short>-<hash>`` (hash: :func:`version_hash` of :func:`version_members`)."""
    members = version_members(tracks, settings)
    return f"v{day:%Y%m%d}-{model_short(model_id)}-{version_hash(model_id, settings, members)}"


def find_complete_version(dataset_url: str, suffix: str, storage_options: StorageOptions = None) -> str | None:
    """Name of a complete version whose name ends with ``-<suffix>`` (the newest), else ``None``."""
    fs, root = filesystem(dataset_url, storage_options)
    try:
        names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)) if fs.exists(root) else []
    except OSError as e:
        raise StorageError(f"cannot list {dataset_url!r}: {e}") from e
    for name in reversed(names):
        if not (name.startswith("v") and name.endswith(f"-{suffix}")):
            continue
        if exists(f"{join_url(dataset_url, name)}/{COMPLETE_NAME}", storage_options):
            return name
    return None


def read_committed_stems(
    output_url: str, model_id: str, track_id: str, storage_options: StorageOptions = None
) -> tuple[dict[str, np.ndarray], int, str]:
    """Decode a committed track's stems: ``({stem: [2, N] float32}, sample_rate, source_url)``.

    The stems are found and checked by their marker only
    (:func:`stemflow.evaluation.committed.read_committed`): a hostile or corrupt
    marker or stem is an error for this track, never a read elsewhere.

    Raises:
        StorageError: the track is not committed (no marker), its marker or a stem is
            not what it should be, or stems disagree in rate or length.
    """
    committed = read_committed(output_url, model_id, track_id, storage_options=storage_options)
    if committed is None:
        raise StorageError(f"track {track_id!r} is not committed for {model_id!r} under {output_url!r}")
    stems = {name: decoded.samples for name, decoded in committed.stems.items()}
    rates = {decoded.sample_rate for decoded in committed.stems.values()}
    if len(rates) != 1 or len({s.shape for s in stems.values()}) != 1:
        raise StorageError(f"track {track_id!r}: stems differ in sample rate or length")
    return stems, rates.pop(), committed.marker.source_url


def prepare_track(
    track: DatasetTrack,
    *,
    output_url: str,
    model_id: str,
    version_url: str,
    settings: DatasetSettings,
    vocal_separator: VocalSeparator | None = None,
    storage_options: StorageOptions = None,
) -> dict[str, Any]:
    """Score one committed track, write its files (if accepted or ``include_rejected``); its index row.

    Never raises for a bad track: the row then has ``error`` set and ``reasons=["error"]``.
    """
    key = group_key(track.group_value, track.track_id, settings.group_column)
    version = version_url.rstrip("/").rsplit("/", 1)[-1]
    row: dict[str, Any] = {"dataset_version": version, "track_id": track.track_id, "source_url": track.source_url,
                           "model_id": model_id, "group": key,
                           "split": assign_split(key, settings.splits, settings.seed)}
    try:
        row.update(_score_and_write(track, row["split"], output_url, model_id, version_url, settings,
                                    vocal_separator, storage_options))
    except (StemflowError, ValueError, OSError) as e:
        logger.warning("karaoke dataset: track %s failed: %s", track.track_id, e)
        row.update({"accepted": False, "reasons": ["error"], "error": f"{type(e).__name__}: {e}"})
    return row


def _score_and_write(
    track: DatasetTrack, split: str, output_url: str, model_id: str, version_url: str, settings: DatasetSettings,
    vocal_separator: VocalSeparator | None, storage_options: StorageOptions,
) -> dict[str, Any]:
    return score_and_write(track.track_id, track.source_url, split, output_url=output_url, model_id=model_id,
                           version_url=version_url, settings=settings, vocal_separator=vocal_separator,
                           storage_options=storage_options)


def write_create_or_same(url: str, data: bytes, storage_options: StorageOptions = None) -> None:
    """Create ``url`` once; an existing object (left by a crashed attempt of the same version) is kept.

    Same version = same model, settings and tracks, so the earlier bytes are an
    equivalent output; nothing inside a version is ever overwritten.
    """
    if not write_create_only(url, data, storage_options):
        logger.info("keeping %s from an earlier attempt of this version", url)


@dataclass(frozen=True)
class DatasetResult:
    """What :func:`build_dataset` did: the version, whether it wrote it now, and counts."""

    version: str
    version_url: str
    created: bool
    tracks: int
    accepted: int
    counts: Mapping[str, Any] = field(default_factory=dict)


def plan_version(
    dataset_url: str, model_id: str, settings: DatasetSettings, tracks: Sequence[DatasetTrack], *,
    day: date | None = None, storage_options: StorageOptions = None,
) -> tuple[str, bool]:
    """``(version name, already complete)``; an existing complete version of the same hash wins over today's name."""
    suffix = f"{model_short(model_id)}-{version_hash(model_id, settings, version_members(tracks, settings))}"
    existing = find_complete_version(dataset_url, suffix, storage_options)
    if existing is not None:
        return existing, True
    return version_name(model_id, settings, tracks, day or datetime.now(timezone.utc).date()), False


def finish_dataset(
    version_url: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    model_id: str,
    settings: DatasetSettings,
    models: Mapping[str, Any] | None = None,
    storage_options: StorageOptions = None,
) -> dict[str, Any]:
    """Write the dataset index, the card, the optional shards, then ``_COMPLETE.json`` (create-only); the counts.

    Raises:
        StorageError: the version was completed meanwhile by another run (its marker exists).
    """
    version = version_url.rstrip("/").rsplit("/", 1)[-1]
    index_url = write_index(version_url, rows, storage_options)
    shards = []
    if settings.webdataset:
        shards = write_webdataset_shards(version_url, rows, tracks_per_shard=settings.tracks_per_shard,
                                         storage_options=storage_options)
    counts = split_counts(rows)
    info = redact({"model_id": model_id, "models": dict(models or {}), "settings": settings.as_dict()})
    write_card(version_url, version, rows, info, storage_options=storage_options)
    marker = {"format": COMPLETE_FORMAT, "version": version, "model_id": model_id,
              "completed_at": datetime.now(timezone.utc).isoformat(), "counts": counts,
              "manifest": index_url.rsplit("/", 1)[-1], "shards": shards, "settings": settings.as_dict()}
    body = json.dumps(marker, indent=1, sort_keys=True).encode()
    if not write_create_only(f"{version_url}/{COMPLETE_NAME}", body, storage_options):
        raise StorageError(f"dataset version {version_url!r} was completed by another run")
    return counts


def read_complete_marker(version_url: str, storage_options: StorageOptions = None) -> dict[str, Any]:
    """The ``_COMPLETE.json`` of a version (raises ``FileNotFoundError`` when it is incomplete)."""
    try:
        return json.loads(read_bytes(f"{version_url}/{COMPLETE_NAME}", storage_options))
    except ValueError as e:
        raise StorageError(f"malformed {COMPLETE_NAME} in {version_url!r}: {e}") from e


def split_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Tracks and accepted tracks per split, and in total."""
    splits = {name: {"tracks": 0, "accepted": 0} for name in SPLIT_NAMES}
    counts: dict[str, Any] = {"tracks": 0, "accepted": 0, "splits": splits}
    for row in rows:
        part = counts["splits"][row["split"]]
        for bucket in (counts, part):
            bucket["tracks"] += 1
            bucket["accepted"] += int(bool(row.get("accepted")))
    return counts


def build_dataset(
    tracks: Sequence[DatasetTrack],
    *,
    output_url: str,
    model_id: str,
    dataset_url: str,
    settings: DatasetSettings = DatasetSettings(),
    vocal_separator: VocalSeparator | None = None,
    models: Mapping[str, Any] | None = None,
    day: date | None = None,
    storage_options: StorageOptions = None,
) -> DatasetResult:
    """Build (or find) the dataset version of ``tracks``' committed stems; in-process, one track at a time.

    ``vocal_separator`` is the vocal model for the residue score (``None``: not
    measured). The Prefect flow :mod:`pipelines.karaoke` runs the same steps as tasks.
    """
    if not tracks:
        raise StemflowError("no committed tracks to build a dataset from")
    version, complete = plan_version(dataset_url, model_id, settings, tracks,
                                     day=day, storage_options=storage_options)
    version_url = join_url(dataset_url, version)
    if complete:
        logger.info("dataset version %s is already complete: nothing to do", version)
        counts = read_complete_marker(version_url, storage_options)["counts"]
        return DatasetResult(version, version_url, False, counts["tracks"], counts["accepted"], counts)
    rows = [prepare_track(t, output_url=output_url, model_id=model_id, version_url=version_url, settings=settings,
                          vocal_separator=vocal_separator, storage_options=storage_options) for t in tracks]
    counts = finish_dataset(version_url, rows, model_id=model_id, settings=settings, models=models,
                            storage_options=storage_options)
    return DatasetResult(version, version_url, True, counts["tracks"], counts["accepted"], counts)
