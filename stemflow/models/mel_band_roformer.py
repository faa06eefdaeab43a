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

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from stemflow.models.band_layers import BandSplit, MaskEstimator
from stemflow.models.mel_bands import mel_band_membership
from stemflow.models.roformer_base import RoformerBase, WindowFn, require_int


class MelBandRoformer(RoformerBase):
    """Mel-Band-RoFormer: ``forward([b, s, L]) -> [b, num_stems, s, L']``, or ``[b, s, L']`` if one stem.

    ``s`` is 2 for ``stereo=True``; a mono model also takes ``[b, L]``.
    ``L' = L`` with ``match_input_audio_length``, else ``hop * floor(L / hop)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        stereo: bool = False,
        num_stems: int = 1,
        time_transformer_depth: int = 2,
        freq_transformer_depth: int = 2,
        linear_transformer_depth: int = 0,
        num_bands: int = 60,
        dim_head: int = 64,
        heads: int = 8,
        attn_dropout: float = 0.1,
        ff_dropout: float = 0.1,
        flash_attn: bool = True,
        dim_freqs_in: int = 1025,
        sample_rate: int = 44100,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 512,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        stft_window_fn: WindowFn | str | None = None,
        zero_dc: bool = True,
        mask_estimator_depth: int = 1,
        multi_stft_resolution_loss_weight: float = 1.0,
        multi_stft_resolutions_window_sizes: Sequence[int] = (4096, 2048, 1024, 512, 256),
        multi_stft_hop_size: int = 147,
        multi_stft_normalized: bool = False,
        multi_stft_window_fn: WindowFn | str | None = None,
        match_input_audio_length: bool = False,
        mlp_expansion_factor: int = 4,
        use_torch_checkpoint: bool = False,
        skip_connection: bool = False,
        use_pope: bool = False,
    ) -> None:
        super().__init__()
        del dim_freqs_in  # unused by the reference as well: the STFT size decides
        del multi_stft_resolution_loss_weight, multi_stft_resolutions_window_sizes  # training loss only
        del multi_stft_hop_size, multi_stft_normalized, multi_stft_window_fn
        self._init_common(
            dim=dim,
            depth=depth,
            stereo=stereo,
            num_stems=num_stems,
            time_transformer_depth=time_transformer_depth,
            freq_transformer_depth=freq_transformer_depth,
            linear_transformer_depth=linear_transformer_depth,
            dim_head=dim_head,
            heads=heads,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            flash_attn=flash_attn,
            stft_n_fft=stft_n_fft,
            stft_hop_length=stft_hop_length,
            stft_win_length=stft_win_length,
            stft_normalized=stft_normalized,
            stft_window_fn=stft_window_fn,
            zero_dc=zero_dc,
            mlp_expansion_factor=mlp_expansion_factor,
            use_torch_checkpoint=use_torch_checkpoint,
            skip_connection=skip_connection,
            use_pope=use_pope,
            norm_output=True,
        )
        require_int("num_bands", num_bands, minimum=2)
        require_int("sample_rate", sample_rate, minimum=1)
        require_int("mask_estimator_depth", mask_estimator_depth, minimum=0)
        self.match_input_audio_length = bool(match_input_audio_length)

        membership_np = mel_band_membership(sample_rate, stft_n_fft, num_bands)  # [k, f]
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

        band_features = tuple(2 * f * self.audio_channels for f in num_freqs_per_band.tolist())
        self.band_split = BandSplit(dim, band_features)
        self.mask_estimators = torch.nn.ModuleList(
            MaskEstimator(dim, band_features, max(mask_estimator_depth, 0), mlp_expansion_factor)
            for _ in range(num_stems)
        )

    freq_indices: Tensor
    num_bands_per_freq: Tensor

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
        x = spec.index_select(1, self.freq_indices)  # [b, F, t, c], F = bins of all bands (with repeats)
        x = x.transpose(1, 2).reshape(batch, frames, -1)  # [b, t, (F c)]
        x = self._maybe_checkpoint(self.band_split, x)  # [b, t, k, D]
        x = self._axial_layers(x)
        masks = self._estimate_masks(x).to(spec.dtype)  # [b, n, F, t, c]
        # Sum each bin's masks over the bands that cover it, then average.
        summed = masks.new_zeros(batch, masks.shape[1], rows, frames, 2).index_add_(2, self.freq_indices, masks)
        denominator = self.num_bands_per_freq.repeat_interleave(self.audio_channels).clamp(min=1)
        averaged = summed / denominator[:, None, None]  # [b, n, (f s), t, c]
        separated = torch.view_as_complex(spec).unsqueeze(1) * torch.view_as_complex(averaged)
        return self._istft(separated, window, istft_length)
