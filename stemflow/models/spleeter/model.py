"""Spleeter's U-Net separator (Deezer, 2019) in PyTorch, with its STFT front end.

One U-Net per instrument maps the mixture's magnitude spectrogram to that
instrument's magnitude (a sigmoid mask times the input); the magnitudes are
turned into ratio masks across instruments, applied to the complex STFT and
inverted. Everything follows Spleeter's TensorFlow code so that its released
checkpoints give the same stems:

* STFT: ``frame_length`` 4096, ``frame_step`` 1024, periodic Hann window, no
  centering; the waveform is prefixed with ``frame_length`` zeros and padded at
  the end to whole frames (``tf.signal.stft(pad_end=True)``).
* The network sees the first ``num_bins`` (F = 1024) of the 2049 bins, in
  segments of ``segment_frames`` (T = 512) frames; the frame axis is zero-padded
  to whole segments and each segment is separated on its own.
* Encoder: six Conv2D 5x5 stride 2 ("same" padding as TensorFlow does it: one
  row/column before, two after) -> BatchNorm (eps 1e-3) -> LeakyReLU(0.2).
  The skip connections and the decoder input are the *raw* convolution outputs
  (before batch norm), as in ``spleeter/model/functions/unet.py``; the sixth
  encoder batch norm therefore feeds nothing (it is kept for strict loading).
* Decoder: five Conv2DTranspose 5x5 stride 2 ("same": the full output cropped by
  one before and two after) -> ReLU -> BatchNorm -> (Dropout 0.5, identity at
  inference) -> concatenation ``[skip, decoded]``; a sixth to one channel; then
  Conv2D 4x4 dilation 2 ("same") to ``num_channels`` with a sigmoid: the mask.
* Ratio masks: ``(S_i^p + eps/n) / (sum_j S_j^p + eps)`` with ``p`` =
  ``separation_exponent`` (2) and ``eps`` 1e-10; bins above F get mask 0
  (``mask_extension="zeros"``) or the mean over bins (``"average"``).
* Inverse STFT: overlap-add of ``irfft(frame) * hann`` times 2/3 (the Hann^2
  overlap at hop N/4 sums to 1.5), cropped back to the input's samples.

Tensor layout: TensorFlow's ``[batch, time, freq, channel]`` becomes
``[batch, channel, time, freq]`` here; kernels map HWIO -> OIHW (see
:mod:`stemflow.models.spleeter.convert` for the variable-name mapping).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stemflow.errors import ConfigError
from stemflow.models.segmentation import FrameSegments

_BATCH_NORM_EPS = 1e-3  # Keras' default; torch's default (1e-5) would be wrong here
_WINDOW_COMPENSATION = 2.0 / 3.0


def _pad_same_stride2(x: Tensor) -> Tensor:
    """TensorFlow "same" padding for a 5x5 stride-2 convolution on even sizes: 1 before, 2 after."""
    return F.pad(x, (1, 2, 1, 2))


class _EncoderLayer(nn.Module):
    """Conv2D 5x5 stride 2 ("same") and the batch norm that follows it."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=5, stride=2)
        self.bn = nn.BatchNorm2d(out_channels, eps=_BATCH_NORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        """Raw convolution output ``[B, out, H/2, W/2]`` (the skip connection)."""
        return self.conv(_pad_same_stride2(x))


class _DecoderLayer(nn.Module):
    """Conv2DTranspose 5x5 stride 2 ("same"), ReLU, batch norm."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=5, stride=2)
        self.bn = nn.BatchNorm2d(out_channels, eps=_BATCH_NORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in, H, W] -> [B, out, 2H, 2W]``."""
        height, width = x.shape[-2:]
        full = self.deconv(x)  # [B, out, 2H + 3, 2W + 3]
        cropped = full[..., 1 : 1 + 2 * height, 1 : 1 + 2 * width]
        return self.bn(F.relu(cropped))


class SpleeterUNet(nn.Module):
    """One instrument's U-Net: magnitude ``[B, C, T, F]`` in, estimated magnitude out (same shape).

    T and F must be multiples of 64 (six stride-2 layers).
    """

    def __init__(self, *, num_channels: int = 2, conv_n_filters: Sequence[int] = (16, 32, 64, 128, 256, 512)) -> None:
        super().__init__()
        filters = list(conv_n_filters)
        if len(filters) != 6:
            raise ConfigError(f"conv_n_filters must list 6 filter counts, got {filters}")
        inputs = [num_channels, *filters[:-1]]
        self.encoder = nn.ModuleList(_EncoderLayer(i, o) for i, o in zip(inputs, filters, strict=True))
        # Decoder layer k takes the previous output (concatenated with a skip after the first).
        decoder_out = [*filters[-2::-1], 1]
        decoder_in = [filters[-1]] + [2 * c for c in filters[-2::-1]]
        self.decoder = nn.ModuleList(_DecoderLayer(i, o) for i, o in zip(decoder_in, decoder_out, strict=True))
        self.mask = nn.Conv2d(1, num_channels, kernel_size=4, dilation=2, padding=3)

    def forward(self, magnitude: Tensor) -> Tensor:
        """``magnitude [B, C, T, F]`` -> ``sigmoid mask * magnitude`` ``[B, C, T, F]``."""
        skips: list[Tensor] = []
        h = magnitude
        for layer in self.encoder:
            conv = layer(h)
            skips.append(conv)
            h = F.leaky_relu(layer.bn(conv), 0.2)
        h = skips[-1]  # the decoder starts from the sixth convolution's raw output
        for k, layer in enumerate(self.decoder):
            decoded = layer(h)
            h = torch.cat([skips[-2 - k], decoded], dim=1) if k < len(self.decoder) - 1 else decoded
        return torch.sigmoid(self.mask(h)) * magnitude


class SpleeterUNetSeparator(nn.Module):
    """Spleeter's multi-U-Net separator: stereo waveform in, one stereo waveform per stem out.

    Args:
        instruments: stem names in checkpoint order (Spleeter's ``instrument_list``).
        num_channels: audio channels (Spleeter's ``n_channels``).
        conv_n_filters: encoder filter counts (Spleeter's default).
        frame_length: STFT frame and FFT size in samples.
        frame_step: STFT hop in samples.
        segment_frames: frames per network input (Spleeter's ``T``).
        num_bins: frequency bins the network models (Spleeter's ``F``).
        separation_exponent: exponent of the ratio masks.
        mask_extension: ``"zeros"`` or ``"average"`` for the bins above ``num_bins``.
        epsilon: regulariser of the ratio masks.
        segment_batch_size: network segments per forward pass (memory bound, not output).
    """

    def __init__(
        self,
        *,
        instruments: Sequence[str] = ("vocals", "accompaniment"),
        num_channels: int = 2,
        conv_n_filters: Sequence[int] = (16, 32, 64, 128, 256, 512),
        frame_length: int = 4096,
        frame_step: int = 1024,
        segment_frames: int = 512,
        num_bins: int = 1024,
        separation_exponent: float = 2.0,
        mask_extension: str = "zeros",
        epsilon: float = 1e-10,
        segment_batch_size: int = 4,
    ) -> None:
        super().__init__()
        if mask_extension not in ("zeros", "average"):
            raise ConfigError(f"mask_extension must be 'zeros' or 'average', got {mask_extension!r}")
        if segment_frames % 64 or num_bins % 64 or num_bins > frame_length // 2 + 1:
            raise ConfigError("segment_frames and num_bins must be multiples of 64, num_bins <= frame_length/2 + 1")
        if segment_batch_size < 1:
            raise ConfigError("segment_batch_size must be positive")
        self.stems: tuple[str, ...] = tuple(instruments)
        self.num_output_stems = len(self.stems)
        self.num_channels = num_channels
        self.frame_length = frame_length
        self.frame_step = frame_step
        self.segment_frames = segment_frames
        self.num_bins = num_bins
        self.separation_exponent = separation_exponent
        self.mask_extension = mask_extension
        self.epsilon = epsilon
        self.segment_batch_size = segment_batch_size
        self.unets = nn.ModuleDict(
            {name: SpleeterUNet(num_channels=num_channels, conv_n_filters=conv_n_filters) for name in self.stems}
        )
        self.register_buffer("window", torch.hann_window(frame_length, periodic=True), persistent=False)

    # ----------------------------------------------------------------- STFT front end

    def _stft(self, waveform: Tensor) -> Tensor:
        """``[B, C, N]`` -> complex ``[B, C, frames, frame_length/2 + 1]`` after Spleeter's padding."""
        length = waveform.shape[-1]
        padded_length = length + self.frame_length
        num_frames = -(-padded_length // self.frame_step)
        total = (num_frames - 1) * self.frame_step + self.frame_length
        return self._frames(F.pad(waveform, (self.frame_length, total - padded_length)))

    def _frames(self, padded: Tensor) -> Tensor:
        """STFT of already padded audio ``[B, C, N]``, one frame per ``frame_step`` (no centering) -> ``[B, C, frames, bins]``."""
        batch, channels, total = padded.shape
        spec = torch.stft(
            padded.reshape(batch * channels, total),
            n_fft=self.frame_length,
            hop_length=self.frame_step,
            window=self.window.to(padded.dtype),
            center=False,
            return_complex=True,
        )  # [B*C, bins, frames]
        return spec.transpose(1, 2).reshape(batch, channels, spec.shape[-1], -1)

    def _istft(self, spec: Tensor, length: int) -> Tensor:
        """Complex ``[B, C, frames, bins]`` -> ``[B, C, length]`` (overlap-add, cropped as Spleeter does)."""
        return self._overlap_add(spec)[..., self.frame_length : self.frame_length + length]

    def _overlap_add(self, spec: Tensor) -> Tensor:
        """Complex ``[B, C, frames, bins]`` -> ``[B, C, (frames - 1) * step + frame_length]``: ``irfft * hann``, summed."""
        batch, channels, num_frames, _ = spec.shape
        frames = torch.fft.irfft(spec, n=self.frame_length, dim=-1) * self.window  # [B, C, frames, N]
        total = (num_frames - 1) * self.frame_step + self.frame_length
        folded = F.fold(
            frames.reshape(batch * channels, num_frames, self.frame_length).transpose(1, 2),
            output_size=(1, total),
            kernel_size=(1, self.frame_length),
            stride=(1, self.frame_step),
        )  # [B*C, 1, 1, total]
        return folded.reshape(batch, channels, total) * _WINDOW_COMPENSATION

    # ----------------------------------------------------------------- masks

    def _estimate_magnitudes(self, magnitude: Tensor) -> Tensor:
        """``[B, C, frames, F]`` -> per-stem magnitudes ``[S, B, C, frames, F]``, segment by segment."""
        batch, channels, num_frames, num_bins = magnitude.shape
        t = self.segment_frames
        num_segments = -(-num_frames // t)
        padded = F.pad(magnitude, (0, 0, 0, num_segments * t - num_frames))
        segments = padded.reshape(batch, channels, num_segments, t, num_bins).permute(0, 2, 1, 3, 4)
        segments = segments.reshape(batch * num_segments, channels, t, num_bins)
        outputs = []
        for start in range(0, segments.shape[0], self.segment_batch_size):
            part = segments[start : start + self.segment_batch_size]
            outputs.append(torch.stack([unet(part) for unet in self.unets.values()]))
        estimated = torch.cat(outputs, dim=1)  # [S, B*segments, C, T, F]
        estimated = estimated.reshape(len(self.stems), batch, num_segments, channels, t, num_bins)
        estimated = estimated.permute(0, 1, 3, 2, 4, 5).reshape(len(self.stems), batch, channels, -1, num_bins)
        return estimated[..., :num_frames, :]

    def _ratio_masks(self, estimated: Tensor, total_bins: int) -> Tensor:
        """Per-stem magnitudes ``[S, B, C, frames, F]`` -> masks ``[S, B, C, frames, total_bins]``."""
        powered = estimated**self.separation_exponent
        masks = (powered + self.epsilon / len(self.stems)) / (powered.sum(dim=0, keepdim=True) + self.epsilon)
        extra = total_bins - self.num_bins
        if self.mask_extension == "average":
            extension = masks.mean(dim=-1, keepdim=True).expand(*masks.shape[:-1], extra)
        else:
            extension = masks.new_zeros(*masks.shape[:-1], extra)
        return torch.cat([masks, extension], dim=-1)

    # ----------------------------------------------------------------- public API

    def segmentation(self) -> FrameSegments:
        """How Spleeter runs a track: one STFT (after ``frame_length`` zeros) in ``segment_frames``-frame segments."""
        return FrameSegments(frame_length=self.frame_length, frame_step=self.frame_step,
                             segment_frames=self.segment_frames, lead=self.frame_length)

    def separate_chunks(self, x: Tensor) -> Tensor:
        """Separate a batch of waveforms ``[B, C, L]`` into ``[B, stems, C, L]`` (exact length L).

        Each item goes through Spleeter's whole pipeline on its own (its own
        zero prefix, STFT and T-frame segments): every item is a whole track.
        Computed in float32 whatever the input dtype.
        """
        self._check_waveform(x)
        length = x.shape[-1]
        waveform = x.float()
        spec = self._stft(waveform)
        stems = [self._istft(masked, length) for masked in self._masked(spec)]  # S x [B, C, L]
        return torch.stack(stems, dim=1).to(x.dtype)

    def separate_segments(self, x: Tensor) -> Tensor:
        """One network segment per item: ``[B, C, (T - 1) * step + frame_length]`` -> the same length per stem.

        ``x`` is the audio under the segment's ``T`` frames (zeros where the
        track's lead or end lies). Returns each stem's share of the inverse
        STFT, i.e. the overlap-add of the segment's ``T`` masked frames, not
        cropped: shares of consecutive segments overlap by ``frame_length -
        frame_step`` samples and add up to :meth:`separate_waveform`'s result
        (see :class:`stemflow.models.segmentation.FrameSegments`).
        """
        self._check_waveform(x)
        expected = self.segmentation().segment_samples
        if x.shape[-1] != expected:
            raise ValueError(f"a segment is {expected} samples ({self.segment_frames} frames), got {x.shape[-1]}")
        spec = self._frames(x.float())  # [B, C, T, bins]
        shares = [self._overlap_add(masked) for masked in self._masked(spec)]
        return torch.stack(shares, dim=1).to(x.dtype)

    def _check_waveform(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.num_channels:
            raise ValueError(f"expected a waveform [batch, {self.num_channels}, samples], got {tuple(x.shape)}")

    def _masked(self, spec: Tensor) -> list[Tensor]:
        """The mixture's STFT ``[B, C, frames, bins]`` times each stem's ratio mask (stems in order)."""
        magnitude = spec.abs()[..., : self.num_bins]
        masks = self._ratio_masks(self._estimate_magnitudes(magnitude), spec.shape[-1])
        return [mask * spec for mask in masks]

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`separate_chunks`: ``[B, C, L] -> [B, stems, C, L]``."""
        return self.separate_chunks(x)

    def separate_waveform(self, x: Tensor) -> Tensor:
        """Separate one whole track ``[C, N]`` as Spleeter does -> ``[stems, C, N]``.

        One STFT over the whole track, cut into T-frame segments with no overlap
        (segments run ``segment_batch_size`` at a time, so memory grows with the
        track's STFT, not with the network's activations). The reference for the
        engine's segment-by-segment path, which gives the same stems in bounded memory.
        """
        if x.dim() != 2:
            raise ValueError(f"expected a waveform [channels, samples], got {tuple(x.shape)}")
        return self.separate_chunks(x.unsqueeze(0))[0]
