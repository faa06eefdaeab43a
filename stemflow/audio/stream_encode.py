"""Stem files written block by block, for every format :func:`stemflow.audio.encode.encode` writes.

:func:`open_stem_writer` returns a :class:`StemWriter` that takes float32
``[2, n]`` blocks and gives the file :func:`stemflow.audio.encode.save_audio`
would write for the whole signal, in memory bounded by the block:

* the same checks, clipping, quantisation and routing as :func:`encode` (the
  helpers are shared: :func:`check_request`, :func:`limit_samples`,
  :func:`lossy_route`), and the same sinks
  (:mod:`stemflow.audio.encode_sinks`: libsndfile appends for FLAC/WAV/AIFF
  and for MP3/Vorbis at libsndfile's default quality, a long-running ffmpeg fed
  on stdin for the rest). PCM files are the same bytes; lossy files decode to
  the same samples (MP3 and M4A are the same bytes; Ogg files differ only by
  their random stream serial number);
* ``output_rate`` (the CLI's ``--sample-rate``) and Opus' 48 kHz are
  resampled as the blocks come (:class:`stemflow.audio.resample.StreamResampler`:
  :func:`stemflow.audio.resample.resample` sample for sample, length included);
* ``clip="rescale"`` needs the peak before the first sample is written: the
  blocks are spooled to a temporary file (:class:`stemflow.audio.spool.SampleSpool`,
  swept if the process is killed) and replayed through the encoder with the
  gain at :meth:`StemWriter.close`.

The order of operations is :func:`encode`'s after the CLI's resampling:
``output_rate`` resampling, then peak and rescale gain, then the codec's own
rate (Opus), then the clipping policy. ``path`` should be a temporary name
(:func:`stemflow.files.atomic_path`): the writer writes it in place, and
:meth:`StemWriter.abort` (or a failure) deletes it and any spool.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stemflow.audio.encode import RESCALE_PEAK, ClipPolicy, EncodeResult, check_request, limit_samples, lossy_route
from stemflow.audio.encode_sinks import FfmpegSink, SoundFileSink
from stemflow.audio.formats import AudioFormat
from stemflow.audio.resample import StreamResampler
from stemflow.audio.spool import SampleSpool
from stemflow.errors import AudioEncodeError

logger = logging.getLogger(__name__)

REPLAY_FRAMES = 1 << 16
"""Frames per block when a rescale spool is replayed into the encoder."""

CHANNELS = 2


class StemWriter:
    """One stem file written block by block; see the module docstring and :func:`open_stem_writer`."""

    def __init__(
        self,
        path: Path,
        sample_rate: int,
        *,
        format: AudioFormat,
        bit_depth: int,
        clip: ClipPolicy,
        bitrate_kbps: int | None,
        output_rate: int | None,
        name: str,
    ) -> None:
        self.path = path
        self.name = name
        self.format = format
        self.clip = clip
        self.subtype, codec = check_request(format, bit_depth, clip, bitrate_kbps, name)
        rate = output_rate if output_rate is not None else sample_rate
        self._to_output = StreamResampler(sample_rate, rate, CHANNELS) if rate != sample_rate else None
        self.sample_rate = codec.resample_to if codec is not None and codec.resample_to is not None else rate
        self._to_codec = StreamResampler(rate, self.sample_rate, CHANNELS) if self.sample_rate != rate else None
        self.bitrate_kbps: int | None = None
        self.peak = 0.0
        self.frames = 0
        self.clipped = 0
        self.over_full_scale = 0
        self._done = False
        self._spool: SampleSpool | None = None
        if codec is not None:
            route = lossy_route(format, codec, self.sample_rate, bitrate_kbps, name)
            self.bitrate_kbps = route.bitrate_kbps
            if route.soundfile_subtype is None:
                self._sink: SoundFileSink | FfmpegSink = FfmpegSink(
                    path, self.sample_rate, CHANNELS, output_args=list(route.ffmpeg_args), name=name
                )
            else:
                self._sink = SoundFileSink(
                    path, self.sample_rate, CHANNELS, format=format, subtype=route.soundfile_subtype, name=name
                )
        else:
            self._sink = SoundFileSink(path, self.sample_rate, CHANNELS, format=format, subtype=self.subtype, name=name)
        if clip == "rescale":
            try:
                self._spool = SampleSpool(CHANNELS, name=name)
            except AudioEncodeError:
                self.abort()
                raise

    def write(self, block: np.ndarray) -> None:
        """Add float32 ``[2, n]`` samples (``n >= 0``) at the model's rate.

        Raises:
            AudioEncodeError: a block that is not ``[2, n]`` or holds NaN/inf, or an encoder failure;
                the writer is then aborted (nothing left at ``path``).
        """
        with self._aborting_on_error():
            if self._done:
                raise AudioEncodeError(f"{self.name}: the writer is already closed")
            rows = np.asarray(block, dtype=np.float32)
            if rows.ndim != 2 or rows.shape[0] != CHANNELS:
                raise AudioEncodeError(f"{self.name}: expected [2, samples] blocks, got shape {np.shape(block)}")
            if not np.isfinite(rows).all():
                raise AudioEncodeError(f"{self.name}: the samples contain NaN or inf")
            self._stage(self._to_output.push(rows) if self._to_output is not None else rows)

    def close(self) -> EncodeResult:
        """Finish the file at ``path`` and report it as :func:`encode` would (``num_bytes``: the file's size).

        Raises:
            AudioEncodeError: no samples were written, or the encoder failed (nothing left at ``path``).
        """
        with self._aborting_on_error():
            if self._done:
                raise AudioEncodeError(f"{self.name}: the writer is already closed")
            if self._to_output is not None:
                self._stage(self._to_output.finish())
            gain = 1.0
            if self._spool is not None:
                if self.peak > RESCALE_PEAK:
                    gain = RESCALE_PEAK / self.peak
                for block in self._spool.replay(REPLAY_FRAMES):
                    self._encode(block * np.float32(gain) if gain != 1.0 else block)
                self._spool.close()
            if self._to_codec is not None:
                self._limit_and_write(self._to_codec.finish())
            if self.frames == 0:
                raise AudioEncodeError(f"{self.name}: expected non-empty [channels, samples], got no samples")
            self._sink.close()
            self._done = True
            num_bytes = self.path.stat().st_size
        if self.clipped and self.clip == "none":
            logger.warning(
                "%s: %d samples beyond full scale saturated in %s %s",
                self.name,
                self.clipped,
                self.format,
                self.subtype,
            )
        return EncodeResult(
            format=self.format,
            subtype=self.subtype,
            sample_rate=self.sample_rate,
            channels=CHANNELS,
            frames=self.frames,
            clipped_samples=self.clipped,
            over_full_scale=self.over_full_scale,
            gain=gain,
            peak=self.peak,
            num_bytes=num_bytes,
            bitrate_kbps=self.bitrate_kbps,
        )

    def abort(self) -> None:
        """Stop the encoder, delete ``path`` and any spool (idempotent; does nothing after a successful close)."""
        if self._done:
            return
        self._done = True
        self._sink.abort()
        if self._spool is not None:
            self._spool.close()
        self.path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _aborting_on_error(self) -> Iterator[None]:
        """Abort the writer when the block raises (an already closed writer is left as it is)."""
        was_done = self._done
        try:
            yield
        except BaseException:
            if not was_done:
                self._done = False
                self.abort()
            raise

    def _stage(self, rows: np.ndarray) -> None:
        """Samples at the output rate: their peak is tracked; spooled under rescale, else encoded now."""
        if rows.shape[1] == 0:
            return
        self.peak = max(self.peak, float(np.max(np.abs(rows))))
        if self._spool is not None:
            self._spool.append(rows)
        else:
            self._encode(rows)

    def _encode(self, rows: np.ndarray) -> None:
        """Samples after the gain: to the codec's rate, then limited and written."""
        self._limit_and_write(self._to_codec.push(rows) if self._to_codec is not None else rows)

    def _limit_and_write(self, rows: np.ndarray) -> None:
        """Apply the clipping policy (counting what it changed) and hand the samples to the sink."""
        if rows.shape[1] == 0:
            return
        data, clipped = limit_samples(rows, self.subtype, self.clip)
        self.clipped += clipped
        if self.subtype == "FLOAT":
            self.over_full_scale += int(np.count_nonzero(np.abs(data) > 1.0))
        self.frames += rows.shape[1]
        self._sink.write(data)


def open_stem_writer(
    path: Path,
    sample_rate: int,
    *,
    format: AudioFormat,
    bit_depth: int = 24,
    clip: ClipPolicy = "none",
    bitrate_kbps: int | None = None,
    output_rate: int | None = None,
    name: str | None = None,
) -> StemWriter:
    """A :class:`StemWriter` of ``format`` at ``path`` for float32 ``[2, n]`` blocks at ``sample_rate``.

    ``bit_depth``: 16/24 (FLAC, AIFF, WAV) or 32 (float WAV); the lossy formats
    take ``bitrate_kbps`` (``None``: the codec's default, or libsndfile's
    quality for MP3/Vorbis). ``output_rate``: resample to this rate first
    (``None``: keep ``sample_rate``). ``clip``: the policy of
    :func:`stemflow.audio.encode.encode`. ``name``: what errors call the file
    (default: ``path``). ``path`` is created or overwritten.

    Raises:
        AudioEncodeError: a combination :func:`encode` refuses (bit depth, bitrate, a rate the codec does
            not take), or an encoder that cannot start; nothing is left at ``path``.
    """
    label = name if name is not None else str(path)
    if sample_rate <= 0 or (output_rate is not None and output_rate <= 0):
        raise AudioEncodeError(f"{label}: sample rates must be positive, got {sample_rate} -> {output_rate}")
    try:
        return StemWriter(
            Path(path),
            sample_rate,
            format=format,
            bit_depth=bit_depth,
            clip=clip,
            bitrate_kbps=bitrate_kbps,
            output_rate=output_rate,
            name=label,
        )
    except AudioEncodeError:
        Path(path).unlink(missing_ok=True)
        raise
