"""Sample-rate conversion (soxr) and channel layout: the two conversions of the input policy.

:func:`resample` converts ``[channels, samples]`` float audio with soxr at a
fixed quality (:data:`RESAMPLE_QUALITY`) and a length that depends only on the
input length and the two rates (:func:`resampled_length`), so a track has the
same number of samples however it was decoded. :func:`to_stereo` makes any
channel count stereo. :mod:`stemflow.audio.decode` applies both after decoding.
:class:`StreamPolicy` applies both to a decoder's blocks as they come, and
:class:`StreamResampler` gives :func:`resample` of a signal that arrives block by
block (the stem writer, :mod:`stemflow.audio.stream_encode`).
"""

from __future__ import annotations

import numpy as np
import soxr

#: soxr quality used for every rate conversion ("VHQ": very high quality).
RESAMPLE_QUALITY = "VHQ"


def resampled_length(frames: int, from_rate: int, to_rate: int) -> int:
    """Number of samples :func:`resample` returns: ``floor(frames * to / from + 1/2)``."""
    return (2 * frames * to_rate + from_rate) // (2 * from_rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Convert ``[channels, samples]`` (or ``[samples]``) float audio to another rate with soxr.

    Quality is :data:`RESAMPLE_QUALITY` (``"VHQ"``, linear phase). The output has
    exactly :func:`resampled_length` samples and the input's number of dimensions;
    the input is not modified.
    """
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if samples.ndim not in (1, 2):
        raise ValueError(f"expected [samples] or [channels, samples], got shape {samples.shape}")
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=True)
    length = resampled_length(samples.shape[-1], from_rate, to_rate)
    rows = np.atleast_2d(samples)
    out = np.zeros((rows.shape[0], length), dtype=np.float32)
    for channel, row in enumerate(rows):
        converted = soxr.resample(np.ascontiguousarray(row, dtype=np.float32), from_rate, to_rate, RESAMPLE_QUALITY)
        usable = min(length, converted.shape[0])
        out[channel, :usable] = converted[:usable]
    return out[0] if samples.ndim == 1 else out


def to_stereo(samples: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Make ``[channels, samples]`` audio stereo: mono duplicated, >2 channels keep the first two.

    Returns the ``[2, samples]`` array and a note saying what changed. Stereo
    input comes back as is (same array, note ``None``); otherwise the result is
    a new array. A 1-D input counts as mono.
    """
    rows = np.atleast_2d(samples)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"expected [channels, samples], got shape {samples.shape}")
    channels = rows.shape[0]
    if channels == 2:
        return rows, None
    if channels == 1:
        return np.repeat(rows, 2, axis=0), "mono duplicated to stereo"
    return rows[:2], f"kept the first two of {channels} channels"



class StreamPolicy:
    """The input policy (channels, then rate) applied block by block, as :func:`to_stereo` + :func:`resample` would.

    ``channels``: 2 (as :func:`to_stereo`) or 1 (channels averaged). The rate
    goes through one :class:`soxr.ResampleStream` at :data:`RESAMPLE_QUALITY`,
    whose output equals :func:`resample`'s sample for sample; the caller cuts
    or pads the total to :func:`resampled_length` of the input frames, as
    :func:`resample` does.
    """

    def __init__(self, from_rate: int, to_rate: int, channels: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        self.channels = channels
        self._stream = (None if from_rate == to_rate else
                        soxr.ResampleStream(from_rate, to_rate, channels, dtype="float32", quality=RESAMPLE_QUALITY))

    def _layout(self, block: np.ndarray) -> np.ndarray:
        if self.channels == 2:
            return to_stereo(block)[0]
        return block.mean(axis=0, keepdims=True, dtype=np.float32) if block.shape[0] > 1 else block

    def push(self, block: np.ndarray, *, last: bool = False) -> np.ndarray:
        """Convert one native ``[channels, n]`` block; ``last`` flushes the resampler. Returns ``[channels, m]``."""
        laid_out = np.ascontiguousarray(self._layout(block), dtype=np.float32)
        if self._stream is None:
            return laid_out
        converted = self._stream.resample_chunk(np.ascontiguousarray(laid_out.T), last=last)
        return np.ascontiguousarray(np.asarray(converted, dtype=np.float32).reshape(-1, self.channels).T)

    def flush(self, native_channels: int) -> np.ndarray:
        """The resampler's last samples (none without resampling)."""
        return self.push(np.zeros((native_channels, 0), dtype=np.float32), last=True)


class StreamResampler:
    """:func:`resample` of a signal that arrives block by block, sample for sample.

    One :class:`soxr.ResampleStream` at :data:`RESAMPLE_QUALITY` over
    ``channels`` channels (its output equals :func:`resample`'s, whatever the
    block sizes). :meth:`push` hands out at most :func:`resampled_length` of the
    frames pushed so far (that length only grows, so nothing handed out is ever
    beyond the end); :meth:`finish` flushes soxr and cuts or zero-pads the total
    to :func:`resampled_length` of every frame pushed, as :func:`resample` does.
    Blocks are float32 ``[channels, n]``; ``n`` may be 0.
    """

    def __init__(self, from_rate: int, to_rate: int, channels: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        self.from_rate, self.to_rate, self.channels = from_rate, to_rate, channels
        self._stream = soxr.ResampleStream(from_rate, to_rate, channels, dtype="float32", quality=RESAMPLE_QUALITY)
        self._frames_in = 0
        self._frames_out = 0
        self._held = np.zeros((channels, 0), dtype=np.float32)

    def _hand_out(self, converted: np.ndarray, allowed: int) -> np.ndarray:
        """``converted`` after what was held back, cut to ``allowed`` frames in all; the rest held back."""
        joined = np.concatenate([self._held, converted], axis=1) if self._held.shape[1] else converted
        take = max(0, min(joined.shape[1], allowed - self._frames_out))
        self._held = joined[:, take:]
        self._frames_out += take
        return joined[:, :take]

    def push(self, block: np.ndarray) -> np.ndarray:
        """Resample one ``[channels, n]`` block; returns ``[channels, m]`` (``m`` may be 0)."""
        self._frames_in += block.shape[1]
        chunk = np.ascontiguousarray(block.T, dtype=np.float32)
        converted = np.asarray(self._stream.resample_chunk(chunk), dtype=np.float32).reshape(-1, self.channels).T
        return self._hand_out(converted, resampled_length(self._frames_in, self.from_rate, self.to_rate))

    def finish(self) -> np.ndarray:
        """The last frames: the total is then exactly :func:`resampled_length` of the frames pushed."""
        empty = np.zeros((0, self.channels), dtype=np.float32)
        flushed = np.asarray(self._stream.resample_chunk(empty, last=True), dtype=np.float32)
        total = resampled_length(self._frames_in, self.from_rate, self.to_rate)
        tail = self._hand_out(flushed.reshape(-1, self.channels).T, total)
        missing = total - self._frames_out
        self._frames_out = total
        if missing > 0:
            tail = np.concatenate([tail, np.zeros((self.channels, missing), dtype=np.float32)], axis=1)
        return np.ascontiguousarray(tail)
