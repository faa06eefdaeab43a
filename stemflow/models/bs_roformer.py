"""BS-RoFormer (Band-Split RoPE Transformer; Lu et al. 2023), checkpoint-compatible with MSST.

The spectrogram is cut into ``freqs_per_bands`` consecutive, non-overlapping
frequency bands (default: the paper's 62 bands for a 2048-point STFT). The
constructor takes the arguments of the MSST ``BSRoformer`` (the ``model:``
section of a community config, verbatim: :class:`BSRoformerOptions`); the
``multi_stft_*`` arguments only shape the training loss and are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from stemflow.errors import ConfigError
from stemflow.models.layers import RMSNorm
from stemflow.models.roformer_base import RoformerBase
from stemflow.models.roformer_options import RoformerOptions, require_int, takes_options

DEFAULT_FREQS_PER_BANDS: tuple[int, ...] = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)


@dataclass(frozen=True, kw_only=True)
class BSRoformerOptions(RoformerOptions):
    """BS-RoFormer's constructor arguments: the shared ones plus its band layout."""

    freqs_per_bands: Sequence[int] = DEFAULT_FREQS_PER_BANDS  # bins per band, low to high; sums to the STFT bins
    mask_estimator_depth: int = 2  # Linear layers per band MLP (depth - 1 hidden ones)

    def __post_init__(self) -> None:
        super().__post_init__()
        require_int("mask_estimator_depth", self.mask_estimator_depth, minimum=0)
        object.__setattr__(self, "freqs_per_bands", self._checked_bands())

    def _checked_bands(self) -> tuple[int, ...]:
        value = self.freqs_per_bands
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"freqs_per_bands must be a sequence of integers, got {value!r}")
        bands = tuple(require_int("freqs_per_bands[]", f, minimum=1) for f in value)
        if len(bands) < 2:
            raise ConfigError(f"freqs_per_bands needs at least 2 bands, got {len(bands)}")
        if sum(bands) != self.num_freqs:
            raise ConfigError(
                f"freqs_per_bands must add up to {self.num_freqs} (the STFT bins of stft_n_fft={self.stft_n_fft}), "
                f"got {sum(bands)}"
            )
        return bands


class BSRoformer(RoformerBase):
    """BS-RoFormer: ``forward([b, s, L]) -> [b, num_stems, s, L]`` (stem axis always kept).

    ``s`` is 2 for ``stereo=True``; a mono model also takes ``[b, L]``. The
    output has exactly the input length (inverse STFT with ``length=L``).
    Arguments: the fields of :class:`BSRoformerOptions`.
    """

    @takes_options(BSRoformerOptions)
    def __init__(self, dim: int, **arguments: Any) -> None:
        options = BSRoformerOptions(dim=dim, **arguments)
        super().__init__(options, norm_output=False)
        self.freqs_per_bands = tuple(options.freqs_per_bands)
        self.final_norm = RMSNorm(dim)
        widths = [2 * f * self.audio_channels for f in self.freqs_per_bands]  # bins x channels x (re, im)
        starts = [sum(widths[:band]) for band in range(len(widths))]  # bands are consecutive feature ranges
        band_features = [torch.arange(start, start + width, device="cpu") for start, width in zip(starts, widths)]
        self._add_band_modules(options, band_features, max(options.mask_estimator_depth - 1, 0))

    def forward(self, raw_audio: Tensor) -> Tensor:
        """``[b, s, L]`` (or ``[b, L]`` when mono) -> ``[b, num_stems, s, L]``."""
        raw_audio = self._as_channels(raw_audio)
        return self._separate(raw_audio, raw_audio.shape[-1])

    def _separate(self, raw_audio: Tensor, istft_length: int | None) -> Tensor:
        window = self._window(raw_audio)
        spec = self._stft(raw_audio, window)  # [b, (f s), t, c]
        batch, _, frames, _ = spec.shape
        x = spec.transpose(1, 2).reshape(batch, frames, -1)  # [b, t, (f s c)]
        grouped = self._use_grouped()
        x = self._split_bands(x, grouped)  # [b, t, k, D]
        x = self._axial_layers(x)
        x = self.final_norm(x)
        masks = self._estimate_masks(x, grouped)  # [b, n, (f s), t, c]
        masks = masks if masks.dtype == spec.dtype else masks.to(spec.dtype)
        spec_complex = torch.view_as_complex(spec).unsqueeze(1)  # [b, 1, (f s), t]
        separated = spec_complex * torch.view_as_complex(masks)  # [b, n, (f s), t]
        return self._istft(separated, window, istft_length)
