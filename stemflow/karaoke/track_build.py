"""Scoring one committed track and writing its dataset files, in passes over its stems (bounded memory).

:func:`score_and_write` is the body of :func:`stemflow.karaoke.dataset.prepare_track`:
measure (scores and true peaks), optionally measure the residue, decide the
verdict and the loudness gain, then, for an accepted track (or with
``include_rejected``), write every file block by block. The passes and what
each keeps are in :mod:`stemflow.karaoke.streamed`; the index row is the one the
whole-array build gave (same scores to ~1e-12, true peaks to ~1e-5 dB, the
same written samples).

Files are written with libsndfile into a temporary file and published
create-only: locally by a hard link (:func:`stemflow.files.atomic_path`); on an
object store, after checking that nothing is there yet, by a streamed upload
(:func:`stemflow.store.streams.open_atomic_writer`). An object already there
was left by an earlier attempt of the same version (same model, settings and
tracks: equivalent bytes) and is kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import soundfile as sf

from stemflow.audio.encode import quantise_pcm
from stemflow.errors import AudioEncodeError
from stemflow.evaluation.inputs import AudioInput
from stemflow.files import atomic_path
from stemflow.karaoke.index import FOUR_STEMS
from stemflow.karaoke.scores import (
    VocalSeparator,
    gain_of_levels,
    judge,
    residue_vocals,
)
from stemflow.karaoke.settings import DatasetSettings
from stemflow.karaoke.streamed import (
    DEFAULT_BLOCK_S,
    KaraokeScoreStream,
    backing_of,
    floored_true_peak,
    open_stems,
    stem_blocks,
)
from stemflow.measures.accumulators import TruePeakAccumulator
from stemflow.store.objects import exists
from stemflow.store.paths import StorageOptions, filesystem, is_local_fs
from stemflow.store.streams import open_atomic_writer
from stemflow.tempfiles import temp_file

logger = logging.getLogger(__name__)

_SUBTYPES = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}


def _file_names(stems: Sequence[str], settings: DatasetSettings, track_id: str) -> list[str]:
    """The files a track gets: backing, vocals, and drums/bass/other with ``stems4`` when the model has them."""
    names = ["backing", "vocals"]
    if settings.stems4 and all(s in stems for s in FOUR_STEMS):
        names += list(FOUR_STEMS)
    elif settings.stems4:
        logger.info("track %s: stems4 asked but the model gives %s", track_id, sorted(stems))
    return names


def _files_of(blocks: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    backing, _ = backing_of(blocks)
    return {name: backing if name == "backing" else blocks[name] for name in names}


def _measure(
    inputs: Mapping[str, AudioInput],
    names: Sequence[str],
    settings: DatasetSettings,
    block_s: float,
    storage_options: StorageOptions,
    track_id: str,
) -> tuple[int, KaraokeScoreStream, list[float]]:
    """Pass 1: the sample rate, the score accumulator, and every file's floored true peak (backing first)."""
    scores: KaraokeScoreStream | None = None
    peaks: dict[str, TruePeakAccumulator] = {}
    rate = 0
    for rate, blocks in stem_blocks(inputs, block_s, storage_options, track_id):
        if scores is None:
            scores = KaraokeScoreStream(rate, settings.presence)
            peaks = {name: TruePeakAccumulator(rate) for name in names if name != "backing"}
        files = _files_of(blocks, names)
        scores.push(files["vocals"], files["backing"])
        for name, peak in peaks.items():
            peak.push(files[name])
    assert scores is not None  # a decoded stem has at least one sample
    return (
        rate,
        scores,
        [
            floored_true_peak(scores.backing_peak),
            *(floored_true_peak(p) for p in peaks.values()),
        ],
    )


def _measure_residue(
    separator: Any,
    inputs: Mapping[str, AudioInput],
    scores: KaraokeScoreStream,
    block_s: float,
    storage_options: StorageOptions,
    track_id: str,
) -> None:
    """Pass 2: the vocal model on the backing, streamed when it can be (else on the whole backing)."""
    backing = (backing_of(blocks)[0] for _, blocks in stem_blocks(inputs, block_s, storage_options, track_id))
    if hasattr(separator, "vocals_blocks"):
        for found in separator.vocals_blocks(backing, scores.samples, scores.sample_rate):
            scores.push_residue(found)
        return
    whole = np.concatenate(list(backing), axis=1)  # a whole-array VocalSeparator: not bounded
    scores.push_residue(residue_vocals(separator, whole, scores.sample_rate))


class _FileWriter:
    """One output file appended block by block (the gain applied, PCM quantised as the in-memory encoder does)."""

    def __init__(self, handle: sf.SoundFile, bit_depth: int, scale: np.float32, name: str) -> None:
        self._handle, self._bit_depth, self._scale, self._name = (
            handle,
            bit_depth,
            scale,
            name,
        )

    def write(self, block: np.ndarray) -> None:
        samples = block * self._scale
        data = samples if self._bit_depth == 32 else quantise_pcm(samples, self._bit_depth)[0]  # type: ignore[arg-type]
        try:
            self._handle.write(np.ascontiguousarray(data.T))
        except (OSError, sf.LibsndfileError) as e:
            raise AudioEncodeError(f"{self._name}: write failed: {e}") from e


@contextlib.contextmanager
def _created(url: str, suffix: str, storage_options: StorageOptions) -> Iterator[str | None]:
    """A local path to write, published at ``url`` create-only when the block ends; ``None`` if ``url`` exists."""
    fs, path = filesystem(url, storage_options)
    if is_local_fs(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            yield None
            return
        try:
            with atomic_path(path, create_only=True) as temp:
                yield str(temp)
        except FileExistsError:
            logger.info("keeping %s from an earlier attempt of this version", url)
        return
    if exists(url, storage_options):
        yield None
        return
    with temp_file("karaoke", suffix) as (descriptor, local):
        os.close(descriptor)
        yield str(local)
        with (
            open(local, "rb") as source,
            open_atomic_writer(url, storage_options) as sink,
        ):
            shutil.copyfileobj(source, sink)


def _write_files(
    inputs: Mapping[str, AudioInput],
    names: Sequence[str],
    urls: Mapping[str, str],
    gain_db: float,
    rate: int,
    settings: DatasetSettings,
    block_s: float,
    storage_options: StorageOptions,
    track_id: str,
) -> None:
    """Pass 3: every file of ``names`` written block by block at ``urls`` (existing objects kept)."""
    scale = np.float32(10.0 ** (gain_db / 20.0))
    with contextlib.ExitStack() as stack:
        writers: dict[str, _FileWriter] = {}
        for name in names:
            local = stack.enter_context(_created(urls[name], f".{settings.format}", storage_options))
            if local is None:
                logger.info("keeping %s from an earlier attempt of this version", urls[name])
                continue
            handle = stack.enter_context(
                sf.SoundFile(
                    local,
                    "w",
                    rate,
                    2,
                    _SUBTYPES[settings.bit_depth],
                    format=settings.format.upper(),
                )
            )
            writers[name] = _FileWriter(handle, settings.bit_depth, scale, f"{track_id}/{name}")
        if not writers:
            return
        for _, blocks in stem_blocks(inputs, block_s, storage_options, track_id):
            files = _files_of(blocks, names)
            for name, writer in writers.items():
                writer.write(files[name])


def score_and_write(
    track_id: str,
    track_source_url: str,
    split: str,
    *,
    output_url: str,
    model_id: str,
    version_url: str,
    settings: DatasetSettings,
    vocal_separator: VocalSeparator | Any | None,
    storage_options: StorageOptions,
    block_s: float = DEFAULT_BLOCK_S,
) -> dict[str, Any]:
    """The scores, verdict and file paths of one committed track (its index row but the identity columns)."""
    with open_stems(output_url, model_id, track_id, storage_options) as (
        inputs,
        source_url,
    ):
        _, backing_source = backing_of({s: np.zeros((2, 0), np.float32) for s in inputs})
        names = _file_names(list(inputs), settings, track_id)
        rate, stream, peaks = _measure(inputs, names, settings, block_s, storage_options, track_id)
        if settings.residue and vocal_separator is not None:
            _measure_residue(vocal_separator, inputs, stream, block_s, storage_options, track_id)
        scores = stream.result()
        verdict = judge(scores, settings.thresholds)
        gain_db = gain_of_levels(
            scores["backing_lufs"],
            peaks,
            settings.loudness_lufs,
            max_true_peak_dbtp=settings.max_true_peak_dbtp,
        )
        row: dict[str, Any] = {
            "source_url": track_source_url or source_url,
            "backing_source": backing_source,
            "sample_rate": rate,
            **scores,
            "instrumental_only": verdict.instrumental_only,
            "vocals_too_loud": verdict.vocals_too_loud,
            "accepted": verdict.accepted,
            "reasons": list(verdict.reasons),
            "loudness_gain_db": gain_db,
            "backing_lufs_out": scores["backing_lufs"] + gain_db,
        }
        if verdict.accepted or settings.include_rejected:
            relative = {name: f"{split}/{track_id}/{name}.{settings.format}" for name in names}
            _write_files(
                inputs,
                names,
                {n: f"{version_url}/{r}" for n, r in relative.items()},
                gain_db,
                rate,
                settings,
                block_s,
                storage_options,
                track_id,
            )
            row.update({f"{name}_path": path for name, path in relative.items()})
    return row
