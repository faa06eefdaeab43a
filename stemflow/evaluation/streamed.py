"""Scoring a model's estimates against reference stems block by block: the rows of ``metrics.parquet`` in bounded memory.

:func:`score_track_streamed` gives the rows :func:`stemflow.evaluation.scoring.score_track`
gives (same :data:`~stemflow.evaluation.scoring.METRICS_SCHEMA` columns, same
values to about 1e-12 relative: :mod:`stemflow.measures.metric_streams`), but reads
the mixture, every reference and every estimate as objects
(:class:`~stemflow.evaluation.inputs.AudioInput`) through
:func:`~stemflow.evaluation.inputs.open_inputs`, in lockstep blocks of
``block_s`` seconds, and never holds a whole track. :func:`baseline_rows_streamed`
is the mixture baseline the same way.

How it follows the in-memory path:

* lengths come from the decoders up front (``TrackStream.num_samples``): the
  references are trimmed to their common length (as
  :func:`~stemflow.evaluation.references.load_references`), then references and
  estimates to the shorter of the two (a warning past 0.1 s, as ``score_track``),
  then to ``max_duration_s``;
* an estimate's reference is :func:`~stemflow.evaluation.references.reference_for`
  applied to each block (``instrumental`` = the float64 sum of the other
  references, then float32: elementwise, so the same samples as whole);
* two passes over the inputs: SI-SDR and bleedless/fullness need a whole-track
  quantity before their sums (see :mod:`stemflow.measures.metric_streams`); the
  second pass reads the references and estimates again (not the mixture, unless
  it is an estimate).

**Reference-free quality columns.** A per-block hook (:class:`QualityHook`)
takes the mixture and every estimate block in pass 1: by default
:class:`stemflow.measures.streaming.QualityAccumulator`, the same numbers as the
whole-array :func:`~stemflow.measures.quality.stem_quality` /
:func:`~stemflow.measures.quality.track_quality` in bounded memory, whatever
the track's length.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from stemflow.audio.decode import TrackStream
from stemflow.errors import StemflowError
from stemflow.evaluation.inputs import AudioInput, block_spans, cursors, open_inputs
from stemflow.evaluation.references import (
    MIXTURE_BASELINE,
    STEM_ORDER,
    ReferenceTrack,
    reference_for,
    reference_inputs,
)
from stemflow.evaluation.scoring import _QUALITY
from stemflow.measures.metric_streams import MetricStream, StemMetricsStream
from stemflow.measures.streaming import QualityAccumulator
from stemflow.store.paths import StorageOptions

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_S = 10.0
"""Seconds read from every input at a time."""


class QualityHook(Protocol):
    """Reference-free quality of a track's estimates, fed block by block (pass 1 only)."""

    def push(self, mixture: np.ndarray, stems: Mapping[str, np.ndarray]) -> None:
        """The next block of the mixture and of every estimate, ``[2, n]`` each."""

    def result(self) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        """``({stem: stem_quality columns}, track_quality columns)``."""


QualityFactory = Callable[[Sequence[str], int], QualityHook]
"""``(stems, sample_rate) -> hook`` for one track."""


def _common_rate(opened: Mapping[AudioInput, TrackStream], what: str) -> int:
    rates = {t.sample_rate for t in opened.values()}
    if len(rates) != 1:
        raise StemflowError(f"{what} differ in sample rate: {sorted(rates)}")
    return rates.pop()


def _scored_length(
    references: Mapping[str, TrackStream],
    estimates: Mapping[str, TrackStream],
    track: str,
    sample_rate: int,
    max_duration_s: float | None,
) -> int:
    """The samples scored: references' common length, then the shorter with the estimates, then the cap."""
    reference_length = min(t.num_samples for t in references.values())
    if max(t.num_samples for t in references.values()) != reference_length:
        logger.warning(
            "%s: reference files differ in length; trimmed to %d samples",
            track,
            reference_length,
        )
    lengths = [reference_length, *(t.num_samples for t in estimates.values())]
    length = min(lengths)
    if max(lengths) - length > sample_rate // 10:
        logger.warning(
            "%s: estimates and references differ by %d samples; scoring the first %d",
            track,
            max(lengths) - length,
            length,
        )
    if max_duration_s is not None:
        length = min(length, max(1, round(max_duration_s * sample_rate)))
    return length


def _labels(stems: Sequence[str], reference_names: Sequence[str], track: str, model_name: str) -> dict[str, str]:
    """``{stem: reference label}`` of the estimates that have a reference (the others are logged and skipped)."""
    empty = {name: np.zeros((2, 0), np.float32) for name in reference_names}
    labels = {}
    for stem in stems:
        target = reference_for(stem, empty)
        if target is None:
            logger.info(
                "%s: no reference for stem %r of %s; not scored",
                track,
                stem,
                model_name,
            )
        else:
            labels[stem] = target[0]
    return labels


def _run_pass(
    opened: Mapping[AudioInput, TrackStream],
    references: Mapping[str, AudioInput],
    estimates: Mapping[str, AudioInput],
    metrics: Mapping[str, MetricStream],
    length: int,
    block_frames: int,
    quality: QualityHook | None,
) -> None:
    """One pass over ``[0, length)``: every scored stem's metrics, and the quality hook when given."""
    reading = cursors(opened)
    for _, frames in block_spans(length, block_frames):
        blocks = {item: cursor.read(frames) for item, cursor in reading.items()}
        reference_blocks = {s: blocks[i] for s, i in references.items() if s != "mixture" and i in blocks}
        for stem, stream in metrics.items():
            target = reference_for(stem, reference_blocks)
            assert target is not None  # the stems in ``metrics`` have a reference (``_labels``)
            stream.push(target[1], blocks[estimates[stem]])
        if quality is not None:
            quality.push(
                blocks[references["mixture"]],
                {s: blocks[i] for s, i in estimates.items()},
            )


def _open_all(stack: contextlib.ExitStack, references: Mapping[str, AudioInput], estimates: Mapping[str, AudioInput],
              sample_rate: int | None, storage_options: StorageOptions,
              track: str) -> tuple[dict[AudioInput, TrackStream], int]:
    """Open the estimates, then the references at the estimates' rate (or ``sample_rate``); held by ``stack``."""
    opened = dict(stack.enter_context(open_inputs(estimates.values(), sample_rate, storage_options=storage_options)))
    rate = sample_rate or _common_rate(opened, f"{track}: the estimates")
    rest = [i for i in references.values() if i not in opened]
    opened.update(stack.enter_context(open_inputs(rest, rate, storage_options=storage_options)))
    return opened, rate


def score_track_streamed(
    *,
    model_name: str,
    model_id: str,
    track: str,
    references: Mapping[str, AudioInput],
    estimates: Mapping[str, AudioInput],
    sample_rate: int | None = None,
    max_duration_s: float | None = None,
    storage_options: StorageOptions = None,
    block_s: float = DEFAULT_BLOCK_S,
    quality: QualityFactory | None = QualityAccumulator,
    metrics: Callable[[int], MetricStream] = StemMetricsStream,
) -> list[dict[str, Any]]:
    """Metrics rows (:data:`~stemflow.evaluation.scoring.METRICS_SCHEMA`) of one model's estimates, streamed.

    Args:
        references: ``"mixture"`` and the reference stems (:func:`reference_inputs`).
        estimates: stem -> its object (e.g. :func:`stemflow.evaluation.committed.committed_inputs`).
        sample_rate: the rate everything is decoded at; ``None``: the estimates' own (equal) rate.
        max_duration_s: score only the first seconds.
        block_s: seconds read from every input at a time (memory ~ inputs x block x 8 bytes x 2 channels).
        quality: the quality hook factory; ``None`` leaves the quality columns null.
        metrics: ``sample_rate -> accumulator`` of one stem's reference metrics, whose
            ``result()`` is a dict of metrics columns (default: the five of a metrics row).

    Raises:
        StorageError, AudioDecodeError: an input is missing, not what its marker lists, or undecodable.
        StemflowError: the estimates differ in sample rate.
    """
    baseline = model_name == MIXTURE_BASELINE
    labels = _labels(list(estimates), [s for s in references if s != "mixture"], track, model_name)
    with contextlib.ExitStack() as stack:
        opened, rate = _open_all(stack, references, estimates, sample_rate, storage_options, track)
        length = _scored_length({s: opened[i] for s, i in references.items()},
                                {s: opened[i] for s, i in estimates.items()}, track, rate, max_duration_s)
        block_frames = max(1, round(block_s * rate))
        scores = {stem: metrics(rate) for stem in labels}
        hook = quality(list(estimates), rate) if quality is not None else None
        _run_pass(opened, references, estimates, scores, length, block_frames, hook)
    if any(stream.passes > 1 for stream in scores.values()):
        for stream in scores.values():
            stream.next_pass()
        second = [i for s, i in references.items() if s != "mixture"] + list(estimates.values())
        with open_inputs(second, rate, storage_options=storage_options) as opened:
            _run_pass(opened, references, estimates, scores, length, block_frames, None)
    quality_rows = hook.result() if hook is not None else ({}, {})
    common = {"model_name": model_name, "model_id": model_id, "track": track, "status": "ok", "error": None,
              "duration_s": length / rate, "sample_rate": rate}
    return [_row(common, stem, label, scores[stem].result(), quality_rows, baseline) for stem, label in labels.items()]


def _row(
    common: Mapping[str, Any],
    stem: str,
    label: str,
    scores: Mapping[str, float],
    quality: tuple[Mapping[str, Mapping[str, float]], Mapping[str, float]],
    baseline: bool,
) -> dict[str, Any]:
    """One ``ok`` metrics row (the columns of :func:`~stemflow.evaluation.scoring.score_track`)."""
    per_stem, per_track = quality
    quality_row = per_stem.get(stem, {})
    row: dict[str, Any] = {
        **common,
        "stem": stem,
        "reference": label,
        **scores,
        **{k: quality_row[k] for k in _QUALITY if k in quality_row},
    }
    if not baseline:
        row["bleed_ratio"] = per_track.get(f"bleed_ratio_{stem}")
        row["residual_db"] = per_track.get("residual_db")
    return row


def baseline_rows_streamed(
    track: ReferenceTrack,
    sample_rate: int,
    *,
    max_duration_s: float | None = None,
    storage_options: StorageOptions = None,
    block_s: float = DEFAULT_BLOCK_S,
    quality: QualityFactory | None = QualityAccumulator,
) -> list[dict[str, Any]]:
    """The ``mixture`` baseline of :func:`~stemflow.evaluation.scoring.baseline_rows`, streamed from the objects."""
    references = reference_inputs(track)
    names = [s for s in references if s != "mixture"]
    empty = {name: np.zeros((2, 0), np.float32) for name in names}
    stems = [s for s in STEM_ORDER if reference_for(s, empty) is not None]
    stems += [s for s in names if s not in stems]
    return score_track_streamed(
        model_name=MIXTURE_BASELINE,
        model_id=MIXTURE_BASELINE,
        track=track.name,
        references=references,
        estimates={s: references["mixture"] for s in stems},
        sample_rate=sample_rate,
        max_duration_s=max_duration_s,
        storage_options=storage_options,
        block_s=block_s,
        quality=quality,
    )
