"""Data sets with reference stems: finding their tracks, decoding them, and which reference a stem is scored on.

A data set with references is either

* a MUSDB18-style folder: ``<dataset>/<track>/mixture.wav`` plus ``<track>/<stem>.wav``
  (any of ``drums``, ``bass``, ``other``, ``vocals``; any extension of
  :data:`stemflow.audio.formats.DECODABLE_EXTENSIONS`), found at any depth;
* ``.stem.mp4`` files (MUSDB18 / Native Instruments stems): streams ``mixture, drums,
  bass, other, vocals``.

:func:`discover_dataset` lists the tracks, :func:`load_references` decodes one
(whole); :func:`reference_inputs` names its objects for the streamed scoring of
:mod:`stemflow.evaluation.streamed` (one block at a time).
Model stems are scored against the reference they estimate (:func:`reference_for`):
a stem with a reference of its own name is scored on it; ``instrumental`` (2-stem
vocals/instrumental models, or the complement of a vocals model) on ``drums + bass +
other``; ``no_<x>`` (the complement of another single-target model) on the sum of
every reference but ``x``. Other stems have no reference and are not scored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from stemflow.audio.decode import load_audio, load_stems
from stemflow.audio.formats import DECODABLE_EXTENSIONS
from stemflow.errors import StorageError
from stemflow.evaluation.inputs import AudioInput
from stemflow.store.objects import read_bytes
from stemflow.store.paths import StorageOptions, filesystem, url_of

logger = logging.getLogger(__name__)

REFERENCE_STEMS: tuple[str, ...] = ("drums", "bass", "other", "vocals")
"""The MUSDB18 reference stems, in stream order after the mixture."""

MIXTURE_BASELINE = "mixture"
"""``model_name`` of the baseline rows (the mixture as the estimate of every stem)."""

STEM_ORDER: tuple[str, ...] = ("vocals", "drums", "bass", "other", "instrumental")
"""The order stems are listed in (leaderboard rows, the baseline's estimates); other stems follow."""


@dataclass(frozen=True)
class ReferenceTrack:
    """One track of a data set with references.

    ``mixture_url`` is what gets separated (``mixture.wav``, or the ``.stem.mp4``
    itself, whose first stream is the mixture); ``stem_urls`` maps reference
    stems to files (empty for ``.stem.mp4``: the streams are the references).
    """

    name: str
    mixture_url: str
    stem_urls: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_stem_file(self) -> bool:
        """True for a multi-stream ``.stem.mp4`` track."""
        return not self.stem_urls


@dataclass(frozen=True)
class References:
    """Decoded references of one track: ``mixture`` and ``stems`` (name -> ``[2, N]`` float32)."""

    mixture: np.ndarray
    stems: Mapping[str, np.ndarray]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.mixture.shape[-1] / self.sample_rate


def _stem_file_track(name: str) -> str | None:
    """The track name of a ``<name>.stem.mp4`` / ``.stem.m4a`` file name, else ``None``."""
    lower = name.lower()
    for suffix in (".stem.mp4", ".stem.m4a"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def discover_dataset(dataset_url: str, *, storage_options: StorageOptions = None) -> list[ReferenceTrack]:
    """The tracks of a data set folder (or one ``.stem.mp4`` file), sorted by name.

    Raises:
        StorageError: nothing with references was found, or the folder cannot be listed.
    """
    fs, root = filesystem(dataset_url, storage_options)
    try:
        if fs.isfile(root):
            paths = [root]
        else:
            paths = sorted(fs.find(root))
    except OSError as e:
        raise StorageError(f"cannot list data set {dataset_url!r}: {e}") from e
    tracks: dict[str, ReferenceTrack] = {}
    folders: dict[str, dict[str, str]] = {}
    for path in paths:
        folder, _, base = path.rpartition("/")
        name = _stem_file_track(base)
        if name is not None:
            tracks[name] = ReferenceTrack(name, url_of(fs, path))
            continue
        stem, dot, suffix = base.rpartition(".")
        if dot and f".{suffix.lower()}" in DECODABLE_EXTENSIONS and stem in (*REFERENCE_STEMS, "mixture"):
            folders.setdefault(folder, {})[stem] = url_of(fs, path)
    for folder, files in folders.items():
        refs = {s: u for s, u in files.items() if s != "mixture"}
        if "mixture" not in files or not refs:
            logger.warning("skipping %s: needs mixture.wav and at least one reference stem", folder)
            continue
        name = folder.rpartition("/")[2]
        tracks[name] = ReferenceTrack(name, files["mixture"], dict(sorted(refs.items())))
    if not tracks:
        raise StorageError(f"no reference tracks (.stem.mp4 or <track>/mixture.wav + stems) under {dataset_url!r}")
    return [tracks[name] for name in sorted(tracks)]


def load_references(
    track: ReferenceTrack, sample_rate: int, *, storage_options: StorageOptions = None
) -> References:
    """Decode a track's mixture and reference stems at ``sample_rate``, stereo, trimmed to a common length."""
    if track.is_stem_file:
        streams = load_stems(read_bytes(track.mixture_url, storage_options), sample_rate=sample_rate,
                             names=("mixture", *REFERENCE_STEMS), name=track.mixture_url)
        mixture = streams.pop("mixture")
        return References(mixture, streams, sample_rate)
    decoded = {
        stem: load_audio(read_bytes(url, storage_options), sample_rate=sample_rate, name=url).samples
        for stem, url in {"mixture": track.mixture_url, **track.stem_urls}.items()
    }
    length = min(a.shape[-1] for a in decoded.values())
    if max(a.shape[-1] for a in decoded.values()) != length:
        logger.warning("%s: reference files differ in length; trimmed to %d samples", track.name, length)
    trimmed = {stem: np.ascontiguousarray(a[:, :length]) for stem, a in decoded.items()}
    mixture = trimmed.pop("mixture")
    return References(mixture, trimmed, sample_rate)


def reference_inputs(track: ReferenceTrack) -> dict[str, AudioInput]:
    """``{"mixture": ..., <stem>: ...}``: the objects :func:`load_references` decodes, to stream instead.

    A ``.stem.mp4`` gives one input per stream (MUSDB18 order: mixture, drums, bass,
    other, vocals); a folder its files.
    """
    if track.is_stem_file:
        names = ("mixture", *REFERENCE_STEMS)
        return {name: AudioInput(track.mixture_url, stream=i) for i, name in enumerate(names)}
    return {"mixture": AudioInput(track.mixture_url), **{s: AudioInput(u) for s, u in track.stem_urls.items()}}


def reference_for(stem: str, references: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
    """``(label, reference [2, N])`` a model stem is scored on, or ``None`` when none fits.

    ``instrumental`` -> sum of every reference but vocals (``drums+bass+other``);
    ``no_<x>`` -> sum of every reference but ``x``; a reference stem -> itself.
    """
    if stem in references:
        return stem, references[stem]
    excluded = "vocals" if stem in ("instrumental", "accompaniment") else stem[3:] if stem.startswith("no_") else None
    if excluded is None or excluded not in references:
        return None
    order = {name: i for i, name in enumerate(REFERENCE_STEMS)}
    parts = sorted((s for s in references if s != excluded), key=lambda s: (order.get(s, len(order)), s))
    if not parts:
        return None
    total = np.sum([references[s].astype(np.float64) for s in parts], axis=0).astype(np.float32)
    return "+".join(parts), total
