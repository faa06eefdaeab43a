"""Mel-Band-RoFormer (Wang et al. 2023), checkpoint-compatible with MSST.

Bands follow ``num_bands`` overlapping triangles of the mel scale (see
:mod:`stemflow.models.mel_bands`), so a bin may belong to two bands. Every band
gathers its bins (all channels, real and imag) from the spectrogram; each
stem's masks are scattered back and summed per bin, then divided by the number
of bands covering that bin (averaged where bands overlap).

Differences from :class:`~stemflow.models.bs_roformer.BSRoformer`, all kept
from the reference: every transformer ends with its own RMSNorm (no
``final_norm``); ``mask_estimator_depth`` counts hidden layers (one Linear more
than BS for the same value); the output squeezes the stem axis when
``num_stems == 1``; and the inverse STFT runs without ``length`` unless
``match_input_audio_length`` (so ``L' = hop * floor(L / hop)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stemflow.models.mel_bands import mel_band_membership
from stemflow.models.roformer_base import RoformerBase
from stemflow.models.roformer_options import RoformerOptions, require_int, takes_options


@dataclass(frozen=True, kw_only=True)
class MelBandRoformerOptions(RoformerOptions):
    """Mel-Band-RoFormer's constructor arguments: the shared ones (dropouts default to 0.1) plus its mel bands."""

    attn_dropout: float = 0.1
    ff_dropout: float = 0.1
    num_bands: int = 60  # overlapping mel-scale bands
    sample_rate: int = 44100  # places the mel bands on the STFT bins
    mask_estimator_depth: int = 1  # hidden layers per band MLP
    match_input_audio_length: bool = False  # forward returns L samples instead of hop * floor(L / hop)

    def __post_init__(self) -> None:
        super().__post_init__()
        require_int("num_bands", self.num_bands, minimum=2)
        require_int("sample_rate", self.sample_rate, minimum=1)
        require_int("mask_estimator_depth", self.mask_estimator_depth, minimum=0)


class MelBandRoformer(RoformerBase):
    """Mel-Band-RoFormer: ``forward([b, s, L]) -> [b, num_stems, s, L']``, or ``[b, s, L']`` if one stem.

    ``s`` is 2 for ``stereo=True``; a mono model also takes ``[b, L]``.
    ``L' = L`` with ``match_input_audio_length``, else ``hop * floor(L / hop)``.
    Arguments: the fields of :class:`MelBandRoformerOptions`.
    """

    @takes_options(MelBandRoformerOptions)
    def __init__(self, dim: int, **arguments: Any) -> None:
        options = MelBandRoformerOptions(dim=dim, **arguments)
        super().__init__(options, norm_output=True)
        self.match_input_audio_length = bool(options.match_input_audio_length)
        num_freqs_per_band = self._register_band_buffers(options)
        # band k gathers spectrogram rows freq_indices[r] (r in its range), real and imaginary parts each
        rows = (2 * self.freq_indices[:, None] + torch.arange(2, device=self.freq_indices.device)).split(
            [f * self.audio_channels for f in num_freqs_per_band.tolist()])
        band_features = [band_rows.reshape(-1) for band_rows in rows]
        self._add_band_modules(options, band_features, max(options.mask_estimator_depth, 0))

    def _register_band_buffers(self, options: MelBandRoformerOptions) -> Tensor:
        """Register which bins each band gathers; return the number of bins per band ``[k]``."""
        membership_np = mel_band_membership(options.sample_rate, options.stft_n_fft, options.num_bands)  # [k, f]
        # Bins of every band, bands in ascending order: [sum over bands of bins per band].
        # Built with numpy so the buffers are real CPU tensors even under a meta-device context.
        freq_indices = torch.from_numpy(np.nonzero(membership_np)[1].astype(np.int64))
        membership = torch.from_numpy(membership_np)
        if self.stereo:  # spectrogram rows are interleaved (f s): bin i, channel c sits at 2 i + c
            freq_indices = (freq_indices[:, None] * 2 + torch.tensor([0, 1], device="cpu")).reshape(-1)
        num_freqs_per_band = membership.sum(dim=1)  # [k]
        num_bands_per_freq = membership.sum(dim=0)  # [f]
        self.register_buffer("freq_indices", freq_indices, persistent=False)
        self.register_buffer("freqs_per_band", membership, persistent=False)
        self.register_buffer("num_freqs_per_band", num_freqs_per_band, persistent=False)
        self.register_buffer("num_bands_per_freq", num_bands_per_freq, persistent=False)
        return num_freqs_per_band

    freq_indices: Tensor
    num_bands_per_freq: Tensor

    def _band_features(self, features: Tensor) -> Tensor:
        """``[b, t, (f s c)]`` -> every band's bins, bands in order: ``[b, t, (F c)]`` (bins shared by two bands twice)."""
        batch, frames, _ = features.shape
        return features.view(batch, frames, -1, 2).index_select(2, self.freq_indices).reshape(batch, frames, -1)

    def forward(self, raw_audio: Tensor) -> Tensor:
        """``[b, s, L]`` (or ``[b, L]`` when mono) -> ``[b, n, s, L']``, or ``[b, s, L']`` when n == 1."""
        raw_audio = self._as_channels(raw_audio)
        istft_length = raw_audio.shape[-1] if self.match_input_audio_length else None
        out = self._separate(raw_audio, istft_length)
        return out.squeeze(1) if self.num_stems == 1 else out

    def _separate(self, raw_audio: Tensor, istft_length: int | None) -> Tensor:
        window = self._window(raw_audio)
        spec = self._stft(raw_audio, window)  # [b, (f s), t, c]
        batch, rows, frames, _ = spec.shape
        x = spec.transpose(1, 2).reshape(batch, frames, -1)  # [b, t, (f s c)]
        grouped = self._use_grouped()
        x = self._split_bands(x, grouped)  # [b, t, k, D]
        x = self._axial_layers(x)
        masks = self._estimate_masks(x, grouped)  # [b, n, F, t, c], F = bins of all bands (with repeats)
        masks = masks if masks.dtype == spec.dtype else masks.to(spec.dtype)
        # Sum each bin's masks over the bands that cover it, then average.
        summed = masks.new_zeros(batch, masks.shape[1], rows, frames, 2).index_add_(2, self.freq_indices, masks)
        denominator = self.num_bands_per_freq.repeat_interleave(self.audio_channels).clamp(min=1)
        averaged = summed / denominator[:, None, None]  # [b, n, (f s), t, c]
        separated = torch.view_as_complex(spec).unsqueeze(1) * torch.view_as_complex(averaged)
        return self._istft(separated, window, istft_length)
