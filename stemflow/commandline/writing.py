"""One input of ``stemflow separate``, start to finish: separate, pick the stems, convert, write, record the owner.

By default every input goes through the bounded-memory
:func:`stemflow.engine.streaming.separate_file`, for every option: decoded,
separated, turned into the output stems and encoded block by block, any input
format, any output format. With ``stream=False`` (``--in-memory``) it goes
through :func:`stemflow.engine.track.separate_track` (the same function the
catalogue workers use), which holds the track and its stems in memory. Both
honour the decoded-bytes limit (``max_decoded_bytes``) and write the same
files (PCM: the same bytes; lossy: the same decoded samples):

* stem selection: ``only`` keeps some of the model's stems; ``two_stems=S``
  writes ``S`` and ``no_S``, the sum of every other stem (demucs'
  ``--two-stems``; with ``sum_to_mixture`` that is exactly ``mixture - S``);
* ``sample_rate``: the stems are resampled (soxr) before encoding;
* encoding: format, bit depth, bitrate and clipping policy of
  :func:`stemflow.audio.encode.save_audio` (``rescale`` needs each stem's peak
  first: the streamed path spools the stem to a temporary file, not to memory);
  each file is written atomically, then its owner record
  (:mod:`stemflow.commandline.outputs`).

Returns human-readable notes (input policy, resampling, clipping) for the CLI to show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stemflow.audio.blocks import DEFAULT_MAX_DECODED_BYTES, DecodeLimits
from stemflow.audio.encode import ClipPolicy, EncodeResult, lossy_codec, save_audio
from stemflow.audio.resample import resample
from stemflow.commandline.outputs import PlannedResult, write_owner
from stemflow.engine.separator import Separator
from stemflow.engine.track import separate_track, split_two_stems
from stemflow.errors import ConfigError

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class StemWriting:
    """How ``separate`` turns a model's stems into files (see the module docstring)."""

    format: str = "flac"
    bit_depth: int = 24
    bitrate_kbps: int | None = None
    clip: ClipPolicy = "none"
    sample_rate: int | None = None
    only: tuple[str, ...] = ()
    two_stems: str | None = None
    sum_to_mixture: bool = False
    stream: bool | None = None
    max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES

    def __post_init__(self) -> None:
        """Usage errors before any model is loaded: a bitrate for a lossless format or out of range, a bad rate.

        Raises:
            AudioEncodeError, ConfigError: naming the option.
        """
        lossy_codec(self.format, self.bitrate_kbps, "--bitrate")  # type: ignore[arg-type]
        if self.sample_rate is not None and not 8000 <= self.sample_rate <= 384000:
            raise ConfigError(f"--sample-rate must be 8000-384000 Hz, got {self.sample_rate}")
        if self.max_decoded_bytes is not None and self.max_decoded_bytes <= 0:
            raise ConfigError(f"--max-decoded-bytes must be > 0, got {self.max_decoded_bytes}")

    @property
    def limits(self) -> DecodeLimits:
        """The decoded-bytes limit of every input."""
        return DecodeLimits(max_decoded_bytes=self.max_decoded_bytes)

    def streams(self) -> bool:
        """Whether inputs go through the bounded-memory path: always, unless ``stream`` is ``False``."""
        return self.stream is not False

    def output_stems(self, model_stems: tuple[str, ...]) -> tuple[str, ...]:
        """The stems written for a model giving ``model_stems``.

        Raises:
            ConfigError: a stem the model does not give, or options that do not combine.
        """
        if self.only and self.two_stems:
            raise ConfigError("give either --stem or --two-stems, not both")
        asked = (*self.only, *([self.two_stems] if self.two_stems else []))
        unknown = [s for s in asked if s not in model_stems]
        if unknown:
            raise ConfigError(f"the model gives {', '.join(model_stems)}; no {', '.join(unknown)}")
        if self.two_stems:
            return (self.two_stems, f"no_{self.two_stems}")
        return tuple(s for s in model_stems if s in self.only) if self.only else model_stems


def write_result(separator: Separator, planned: PlannedResult, owner_model: str, writing: StemWriting,
                 progress: Progress | None = None) -> list[str]:
    """Separate ``planned.input`` and write its files (owner records name ``owner_model``); the notes to show."""
    owner = planned.input.owner(owner_model)
    if writing.streams():
        return _write_streamed(separator, planned, owner, writing, progress)
    result = separate_track(separator, planned.input.path, name=str(planned.input.path), measure_quality=False,
                            progress=progress, sum_to_mixture=writing.sum_to_mixture, limits=writing.limits)
    stems = _chosen(result.stems, writing)
    notes = list(result.decoded.notes)
    rate = result.sample_rate
    if writing.sample_rate is not None and writing.sample_rate != rate:
        stems = {stem: resample(audio, rate, writing.sample_rate) for stem, audio in stems.items()}
        notes.append(f"stems resampled {rate} -> {writing.sample_rate} Hz")
        rate = writing.sample_rate
    _make_folders(planned)
    written: dict[str, EncodeResult] = {}
    for stem, audio in stems.items():
        written[stem] = save_audio(planned.files[stem], audio, rate, format=writing.format,  # type: ignore[arg-type]
                                   bit_depth=writing.bit_depth, clip=writing.clip,  # type: ignore[arg-type]
                                   bitrate_kbps=writing.bitrate_kbps)
        write_owner(planned.files[stem], owner)
    return [*notes, *_encoding_notes(written, rate, writing.format)]


def _write_streamed(separator: Separator, planned: PlannedResult, owner: str, writing: StemWriting,
                    progress: Progress | None) -> list[str]:
    """:func:`write_result` through the bounded-memory path; the same files and notes, plus "streamed"."""
    from stemflow.engine.streaming import separate_file

    _make_folders(planned)
    streamed = separate_file(separator, planned.input.path, planned.files, bit_depth=writing.bit_depth,
                             progress=progress, limits=writing.limits, format=writing.format,  # type: ignore[arg-type]
                             clip=writing.clip, bitrate_kbps=writing.bitrate_kbps, output_rate=writing.sample_rate,
                             two_stems=writing.two_stems, sum_to_mixture=writing.sum_to_mixture)
    for file in planned.files.values():
        write_owner(file, owner)
    notes = list(streamed.notes)
    rate = streamed.sample_rate
    if writing.sample_rate is not None and writing.sample_rate != rate:
        notes.append(f"stems resampled {rate} -> {writing.sample_rate} Hz")
        rate = writing.sample_rate
    return [*notes, *_encoding_notes(streamed.encoded, rate, writing.format), "streamed"]


def _encoding_notes(written: dict[str, EncodeResult], rate: int, format: str) -> list[str]:
    """Notes on stems the codec resampled (Opus runs at 48 kHz) and on samples clipped to full scale."""
    notes = [f"{format} runs at {result.sample_rate} Hz: {stem} resampled"
             for stem, result in written.items() if result.sample_rate != rate]
    return [*notes, *_clip_notes(sum(result.clipped_samples for result in written.values()))]


def _clip_notes(clipped: int) -> list[str]:
    """The note on samples saturated at full scale (none when nothing clipped)."""
    if not clipped:
        return []
    return [f"{clipped} samples clipped to full scale (--clip-mode rescale, or --format wav --bit-depth 32, keeps them)"]


def _make_folders(planned: PlannedResult) -> None:
    """The folders of ``planned``'s files (made only once there is something to write)."""
    for file in planned.files.values():
        file.parent.mkdir(parents=True, exist_ok=True)


def _chosen(stems: dict[str, np.ndarray], writing: StemWriting) -> dict[str, np.ndarray]:
    """The stems to write: all, the ``only`` ones, or ``two_stems`` and the sum of the others."""
    if writing.two_stems:
        return split_two_stems(stems, writing.two_stems)
    if writing.only:
        return {stem: audio for stem, audio in stems.items() if stem in writing.only}
    return stems
