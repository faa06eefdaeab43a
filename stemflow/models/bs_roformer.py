"""BS-RoFormer (Band-Split RoPE Transformer; Lu et al. 2023), checkpoint-compatible with MSST.

The spectrogram is cut into ``freqs_per_bands`` consecutive, non-overlapping
frequency bands (default: the paper's 62 bands for a 2048-point STFT). The
constructor takes the arguments of the MSST ``BSRoformer`` (the ``model:``
section of a community config, verbatim); the ``multi_stft_*`` arguments only
shape the training loss and are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stemflow.errors import ConfigError
from stemflow.models.band_layers import BandSplit, MaskEstimator
from stemflow.models.layers import RMSNorm
from stemflow.models.roformer_base import RoformerBase, WindowFn, require_int

DEFAULT_FREQS_PER_BANDS: tuple[int, ...] = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)


class BSRoformer(RoformerBase):
    """BS-RoFormer: ``forward([b, s, L]) -> [b, num_stems, s, L]`` (stem axis always kept).

    ``s`` is 2 for ``stereo=True``; a mono model also takes ``[b, L]``. The
    output has exactly the input length (inverse STFT with ``length=L``).
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
        freqs_per_bands: Sequence[int] = DEFAULT_FREQS_PER_BANDS,
        dim_head: int = 64,
        heads: int = 8,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        flash_attn: bool = True,
        dim_freqs_in: int = 1025,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 512,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        stft_window_fn: WindowFn | str | None = None,
        zero_dc: bool = True,
        mask_estimator_depth: int = 2,
        multi_stft_resolution_loss_weight: float = 1.0,
        multi_stft_resolutions_window_sizes: Sequence[int] = (4096, 2048, 1024, 512, 256),
        multi_stft_hop_size: int = 147,
        multi_stft_normalized: bool = False,
        multi_stft_window_fn: WindowFn | str | None = None,
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
            norm_output=False,
        )
        require_int("mask_estimator_depth", mask_estimator_depth, minimum=0)
        if isinstance(freqs_per_bands, (str, bytes)) or not isinstance(freqs_per_bands, Sequence):
            raise ConfigError(f"freqs_per_bands must be a sequence of integers, got {freqs_per_bands!r}")
        bands = tuple(require_int("freqs_per_bands[]", f, minimum=1) for f in freqs_per_bands)
        if len(bands) < 2:
            raise ConfigError(f"freqs_per_bands needs at least 2 bands, got {len(bands)}")
        if sum(bands) != self.num_freqs:
            raise ConfigError(
                f"freqs_per_bands must add up to {self.num_freqs} (the STFT bins of stft_n_fft={stft_n_fft}), "
                f"got {sum(bands)}"
            )
        self.freqs_per_bands = bands

        self.final_norm = RMSNorm(dim)
        band_features = tuple(2 * f * self.audio_channels for f in bands)  # bins x channels x (re, im)
        self.band_split = BandSplit(dim, band_features)
        self.mask_estimators = torch.nn.ModuleList(
            MaskEstimator(dim, band_features, max(mask_estimator_depth - 1, 0), mlp_expansion_factor)
            for _ in range(num_stems)
        )

    def forward(self, raw_audio: Tensor) -> Tensor:
        """``[b, s, L]`` (or ``[b, L]`` when mono) -> ``[b, num_stems, s, L]``."""
        raw_audio = self._as_channels(raw_audio)
        return self._separate(raw_audio, raw_audio.shape[-1])

    def _separate(self, raw_audio: Tensor, istft_length: int | None) -> Tensor:
        window = self._window(raw_audio)
        spec = self._stft(raw_audio, window)  # [b, (f s), t, c]
        batch, _, frames, _ = spec.shape
        x = spec.transpose(1, 2).reshape(batch, frames, -1)  # [b, t, (f s c)]
        x = self._maybe_checkpoint(self.band_split, x)  # [b, t, k, D]
        x = self._axial_layers(x)
        x = self.final_norm(x)
        masks = self._estimate_masks(x).to(spec.dtype)  # [b, n, (f s), t, c]
        spec_complex = torch.view_as_complex(spec).unsqueeze(1)  # [b, 1, (f s), t]
        separated = spec_complex * torch.view_as_complex(masks)  # [b, n, (f s), t]
        return self._istft(separated, window, istft_length)
