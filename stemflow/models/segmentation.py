"""How a model wants a long track cut into network inputs: its declared segmentation.

Models are run the way their authors run them. Two recipes exist:

- :class:`CrossfadeChunks` (the default; the Roformers, MSST's ``demix``):
  fixed chunks of ``chunk_size`` samples, ``num_overlap`` of them over each
  sample, reflect padding at the track ends, a linear cross-fade, and the
  overlapping outputs averaged by their windows. The model maps each chunk of
  audio to that chunk's stems (``separate_chunks``).
- :class:`FrameSegments` (Spleeter): one STFT over the whole track (after a
  ``lead`` of zeros), cut into consecutive segments of ``segment_frames``
  frames with no overlap and no cross-fade; the frame axis is zero-padded to
  whole segments. A segment's input is the audio under its frames
  (``(segment_frames - 1) * frame_step + frame_length`` samples, consecutive
  segments sharing ``frame_length - frame_step`` of them), and the model
  returns that segment's share of the inverse STFT's overlap-add
  (``separate_segments``): the shares *add up* to the whole-track result
  exactly, so a track can be separated segment by segment in bounded memory
  and still equal the one-STFT result.

A model class declares its recipe with a ``segmentation()`` method returning
one of these; without one it gets :class:`CrossfadeChunks` from its config.
The engine (:mod:`stemflow.engine.chunking`) turns a declaration into a plan.
These are pure descriptions: no torch, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Union

from stemflow.errors import ConfigError


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class CrossfadeChunks:
    """MSST's overlap-add: ``chunk_size`` samples per chunk, step ``chunk_size // num_overlap``, cross-faded."""

    chunk_size: int
    num_overlap: int
    kind: ClassVar[str] = "crossfade"

    def __post_init__(self) -> None:
        _positive_int("chunk_size", self.chunk_size)
        _positive_int("num_overlap", self.num_overlap)
        if self.num_overlap > self.chunk_size:
            raise ConfigError(
                f"num_overlap ({self.num_overlap}) must not exceed chunk_size ({self.chunk_size}): the step would be 0"
            )


@dataclass(frozen=True)
class FrameSegments:
    """One STFT over the track, cut into ``segment_frames``-frame segments whose outputs add up.

    ``lead``: zeros before the first sample (Spleeter prefixes ``frame_length``
    zeros); frames run to the end of the track (``pad_end``), then zero frames
    complete the last segment.
    """

    frame_length: int
    frame_step: int
    segment_frames: int
    lead: int
    kind: ClassVar[str] = "frame-segments"

    def __post_init__(self) -> None:
        for name in ("frame_length", "frame_step", "segment_frames"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.lead, bool) or not isinstance(self.lead, int) or self.lead < 0:
            raise ConfigError(f"lead must be a non-negative integer, got {self.lead!r}")
        if self.frame_step > self.frame_length:
            raise ConfigError(f"frame_step ({self.frame_step}) must not exceed frame_length ({self.frame_length})")

    @property
    def segment_samples(self) -> int:
        """Samples under one segment's frames: its network input length."""
        return (self.segment_frames - 1) * self.frame_step + self.frame_length

    @property
    def segment_step(self) -> int:
        """Samples between consecutive segments' first frames."""
        return self.segment_frames * self.frame_step

    def num_frames(self, num_samples: int) -> int:
        """Frames of the track's STFT: ``ceil((lead + num_samples) / frame_step)`` (``pad_end``)."""
        return -(-(self.lead + num_samples) // self.frame_step)

    def num_segments(self, num_samples: int) -> int:
        """Segments needed to cover every frame of the track."""
        return -(-self.num_frames(num_samples) // self.segment_frames)


Segmentation = Union[CrossfadeChunks, FrameSegments]
"""A model's declared segmentation."""
