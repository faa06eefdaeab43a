"""One karaoke track scored and written block by block: what :func:`stemflow.karaoke.dataset.prepare_track` runs.

The committed stems are read through their marker
(:func:`stemflow.evaluation.committed.committed_inputs`: size and sha256
checked before decoding) and decoded in lockstep blocks of ``block_s`` seconds
(:func:`stemflow.evaluation.inputs.open_inputs`); nothing holds a whole track:

1. **measure**: the backing of each block (:func:`stemflow.karaoke.dataset.backing_of`,
   elementwise, so the same samples as whole) and the vocal feed
   :class:`KaraokeScoreStream` (every score of :func:`~stemflow.karaoke.scores.karaoke_scores`),
   and every file to write feeds a true-peak accumulator;
2. **residue** (optional): the backing is streamed through the vocal model a
   second time (:class:`StreamingVocalSeparator`, e.g. :func:`separator_vocals`
   over :meth:`stemflow.engine.separator.Separator.iter_blocks`); a plain
   whole-array :data:`~stemflow.karaoke.scores.VocalSeparator` is still accepted, at
   the cost of the whole backing in memory;
3. the verdict and the loudness gain (:func:`~stemflow.karaoke.scores.gain_of_levels`)
   from the measured levels, known before anything is written;
4. **write**: a third pass applies the gain and appends every file with
   libsndfile (FLAC or WAV, the dataset's formats), quantised as
   :func:`stemflow.audio.encode.encode` quantises (:func:`~stemflow.audio.encode.quantise_pcm`),
   into a temporary file that is then published create-only (:mod:`stemflow.karaoke.track_build`).

:func:`backing_of` (the backing of a set of stems, whole or a block) lives here.
"""

from __future__ import annotations

import math

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import numpy as np

from stemflow.audio.decode import TrackStream
from stemflow.errors import StemflowError, StorageError
from stemflow.evaluation.committed import committed_inputs
from stemflow.evaluation.inputs import AudioInput, block_spans, cursors, open_inputs
from stemflow.karaoke.index import FOUR_STEMS
from stemflow.karaoke.scores import (
    SCORE_COLUMNS,
    coverage_of_windows,
    residue_of_energies,
)
from stemflow.karaoke.settings import PresenceSettings
from stemflow.measures.accumulators import LoudnessAccumulator, TruePeakAccumulator
from stemflow.measures.quality import CLIP_LEVEL, DB_FLOOR
from stemflow.store.paths import StorageOptions

DEFAULT_BLOCK_S = 10.0
"""Seconds decoded from every stem at a time."""


def backing_of(stems: Mapping[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """The backing track ``[2, N]`` and where it came from (``instrumental`` or ``drums+bass+other``).

    Elementwise, so a block of the stems gives the same block of the backing.

    Raises:
        StemflowError: no vocals, or neither an instrumental stem nor drums, bass and other.
    """
    if "vocals" not in stems:
        raise StemflowError(f"no 'vocals' stem among {sorted(stems)}: not a vocal separation")
    if "instrumental" in stems:
        return stems["instrumental"], "instrumental"
    if all(s in stems for s in FOUR_STEMS):
        return np.sum([stems[s].astype(np.float32) for s in FOUR_STEMS], axis=0, dtype=np.float32), "+".join(FOUR_STEMS)
    raise StemflowError(f"cannot build a backing track from stems {sorted(stems)}")


class StreamingVocalSeparator(Protocol):
    """A vocal model that separates a track given as blocks: ``vocals`` blocks covering the same samples."""

    def vocals_blocks(self, blocks: Iterator[np.ndarray], num_samples: int, sample_rate: int) -> Iterator[np.ndarray]:
        """``[2, n]`` vocal blocks of the track whose ``[2, n]`` blocks are ``blocks`` (``num_samples`` in all)."""


class _Windows:
    """Energies of consecutive ``window``-sample windows aligned to the track start (the last may be shorter)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._done: list[tuple[float, float, int]] = []
        self._open = [0.0, 0.0, 0]

    def push(self, vocals: np.ndarray, mixture: np.ndarray) -> None:
        start = 0
        while start < vocals.shape[1]:
            take = min(vocals.shape[1] - start, self.window - self._open[2])
            v, m = vocals[:, start : start + take], mixture[:, start : start + take]
            self._open[0] += float(np.einsum("cn,cn->", v, v, dtype=np.float64))
            self._open[1] += float(np.einsum("cn,cn->", m, m, dtype=np.float64))
            self._open[2] += take
            start += take
            if self._open[2] == self.window:
                self._done.append((self._open[0], self._open[1], self.window * vocals.shape[0]))
                self._open = [0.0, 0.0, 0]
        self._channels = vocals.shape[0]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(E_w(vocals), E_w(mixture), values per window)``, each ``[windows]``."""
        rows = list(self._done)
        if self._open[2]:
            rows.append((self._open[0], self._open[1], self._open[2] * self._channels))
        table = np.array(rows, dtype=np.float64)
        return table[:, 0], table[:, 1], table[:, 2]


class KaraokeScoreStream:
    """:func:`~stemflow.karaoke.scores.karaoke_scores` over blocks of the vocal and the backing (and the residue)."""

    def __init__(self, sample_rate: int, presence: PresenceSettings | None = None) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        presence = presence or PresenceSettings()
        self.sample_rate = sample_rate
        self.presence = presence
        self._windows = _Windows(max(1, round(presence.window_s * sample_rate)))
        self._loudness = {
            "vocals": LoudnessAccumulator(sample_rate),
            "backing": LoudnessAccumulator(sample_rate),
        }
        self.backing_peak = TruePeakAccumulator(sample_rate)
        self._energy = {"vocals": 0.0, "mixture": 0.0, "found": 0.0}
        self._clipped = 0
        self._values = 0
        self._found_samples: int | None = None
        self.samples = 0

    def push(self, vocals: np.ndarray, backing: np.ndarray) -> None:
        """The next ``[channels, n]`` block of the vocal and of the backing (same shape)."""
        if vocals.shape != backing.shape:
            raise ValueError(f"vocals {vocals.shape} and backing {backing.shape} must have the same shape")
        mixture = vocals.astype(np.float64) + backing
        self._windows.push(vocals, mixture)
        self._energy["vocals"] += float(np.einsum("cn,cn->", vocals, vocals, dtype=np.float64))
        self._energy["mixture"] += float(np.einsum("cn,cn->", mixture, mixture))
        self._loudness["vocals"].push(vocals)
        self._loudness["backing"].push(backing)
        self.backing_peak.push(backing)
        self._clipped += int(np.count_nonzero(np.abs(backing) >= CLIP_LEVEL))
        self._values += backing.size
        self.samples += vocals.shape[1]

    def push_residue(self, vocals_of_backing: np.ndarray) -> None:
        """The next block of what the vocal model finds in the backing (for ``vocal_residue_db``)."""
        block = np.asarray(vocals_of_backing)
        self._energy["found"] += float(np.einsum("cn,cn->", block, block, dtype=np.float64))
        self._found_samples = (self._found_samples or 0) + block.shape[1]

    def result(self) -> dict[str, float]:
        """``{column: float}`` with exactly the keys of :data:`~stemflow.karaoke.scores.SCORE_COLUMNS`."""
        if self.samples == 0:
            raise ValueError("no sample was pushed")
        if self._found_samples not in (None, self.samples):
            raise ValueError(f"the vocal model returned {self._found_samples} samples for a backing of {self.samples}")
        e_voc, e_mix, counts = self._windows.arrays()
        vocals_lufs, backing_lufs = (
            self._loudness["vocals"].loudness(),
            self._loudness["backing"].loudness(),
        )
        e_mixture = self._energy["mixture"]
        residue = float("nan")
        if self._found_samples is not None:
            residue = residue_of_energies(self._energy["found"], self._energy["vocals"])
        scores = {
            "duration_s": self.samples / float(self.sample_rate),
            "vocal_coverage": coverage_of_windows(e_voc, e_mix, counts, self.presence),
            "vocal_share": self._energy["vocals"] / e_mixture if e_mixture > 0 else float("nan"),
            "vocal_to_backing_lu": vocals_lufs - backing_lufs,
            "vocal_residue_db": residue,
            "vocals_lufs": vocals_lufs,
            "backing_lufs": backing_lufs,
            "backing_true_peak_dbtp": floored_true_peak(self.backing_peak),
            "backing_clipped_ratio": self._clipped / self._values,
        }
        return {column: scores[column] for column in SCORE_COLUMNS}


def floored_true_peak(peak: TruePeakAccumulator) -> float:
    """True peak in dBTP floored at -200 (digital silence), as the karaoke scores report it."""
    linear = peak.true_peak()
    return max(DB_FLOOR, 20.0 * math.log10(linear)) if linear > 0 else DB_FLOOR


def separator_vocals(separator: Any, *, block_frames: int = 1 << 18) -> StreamingVocalSeparator:
    """A :class:`StreamingVocalSeparator` over a :class:`stemflow.engine.separator.Separator` (its ``vocals`` stem).

    The blocks go through :class:`stemflow.engine.streaming.FileSource` and
    :meth:`~stemflow.engine.separator.Separator.iter_blocks` (the engine's
    bounded-memory path, the same output as ``separate``).
    """
    from stemflow.engine.streaming import (
        FileSource,
    )  # the engine (torch) only when a model is used

    class _Vocals:
        def vocals_blocks(
            self, blocks: Iterator[np.ndarray], num_samples: int, sample_rate: int
        ) -> Iterator[np.ndarray]:
            track = TrackStream(num_samples, sample_rate, sample_rate, 2, (), blocks)
            source = FileSource(track, block_frames=block_frames, name="backing")
            index = list(separator.all_stems).index("vocals")
            for block in separator.iter_blocks(source):
                yield block.stems[index].numpy()

    return _Vocals()


@contextlib.contextmanager
def open_stems(
    output_url: str, model_id: str, track_id: str, storage_options: StorageOptions
) -> Iterator[tuple[dict[str, AudioInput], str]]:
    """The committed stems' inputs and the marker's source URL (``StorageError`` when not committed)."""
    committed = committed_inputs(output_url, model_id, track_id, storage_options=storage_options)
    if committed is None:
        raise StorageError(f"track {track_id!r} is not committed for {model_id!r} under {output_url!r}")
    yield committed[1], committed[0].source_url


def stem_blocks(
    inputs: Mapping[str, AudioInput],
    block_s: float,
    storage_options: StorageOptions,
    track_id: str,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(sample_rate, {stem: [2, n]})`` for consecutive blocks of every stem, read in lockstep.

    Raises:
        StorageError: the stems differ in sample rate or length (or are not their marker's bytes).
    """
    with open_inputs(inputs.values(), None, storage_options=storage_options) as opened:
        tracks = {stem: opened[item] for stem, item in inputs.items()}
        if len({t.sample_rate for t in tracks.values()}) != 1 or len({t.num_samples for t in tracks.values()}) != 1:
            raise StorageError(f"track {track_id!r}: stems differ in sample rate or length")
        first = next(iter(tracks.values()))
        reading = cursors(opened)
        for _, frames in block_spans(first.num_samples, max(1, round(block_s * first.sample_rate))):
            yield (
                first.sample_rate,
                {s: reading[i].read(frames) for s, i in inputs.items()},
            )
