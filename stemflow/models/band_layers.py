"""Band split (spectrogram bands -> tokens) and mask estimation (tokens -> complex masks).

Both RoFormers cut the interleaved spectrogram features ``[b, t, F]`` (``F`` =
frequency bins x audio channels x real/imag, frequency-major) into consecutive
bands of ``dim_inputs[k]`` features each. :class:`BandSplit` projects every
band to one ``dim``-sized token, :class:`MaskEstimator` maps every token back
to its band's features. Key layout as in MSST: ``band_split.to_features.<k>.0.gamma``,
``mask_estimators.<s>.to_freqs.<k>.0.<2i>.weight``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from stemflow.models.layers import RMSNorm


class BandSplit(nn.Module):
    """Per-band RMSNorm + Linear: ``[b, t, sum(dim_inputs)] -> [b, t, num_bands, dim]``."""

    def __init__(self, dim: int, dim_inputs: Sequence[int]) -> None:
        super().__init__()
        self.dim_inputs = tuple(int(d) for d in dim_inputs)
        self.to_features = nn.ModuleList(
            nn.Sequential(RMSNorm(dim_in), nn.Linear(dim_in, dim)) for dim_in in self.dim_inputs
        )

    def forward(self, x: Tensor) -> Tensor:
        bands = x.split(self.dim_inputs, dim=-1)
        return torch.stack([to_feature(band) for band, to_feature in zip(bands, self.to_features)], dim=-2)


def build_mlp(dim_in: int, dim_out: int, dim_hidden: int, num_hidden_layers: int) -> nn.Sequential:
    """``Linear (-> Tanh -> Linear) * num_hidden_layers``: Linears at even indices, Tanh between.

    ``num_hidden_layers`` = 0 gives a single ``Linear(dim_in, dim_out)``.
    """
    dims = (dim_in, *((dim_hidden,) * num_hidden_layers), dim_out)
    layers: list[nn.Module] = []
    for index, (layer_in, layer_out) in enumerate(zip(dims[:-1], dims[1:])):
        if index > 0:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(layer_in, layer_out))
    return nn.Sequential(*layers)


class MaskEstimator(nn.Module):
    """One stem's mask head: ``[b, t, num_bands, dim] -> [b, t, sum(dim_inputs)]``.

    Each band has its own MLP to ``2 * dim_in`` outputs followed by a GLU
    (halves the features: value * sigmoid(gate)). ``num_hidden_layers`` is the
    number of hidden ``dim * mlp_expansion_factor``-wide layers; the two
    reference models map their ``mask_estimator_depth`` to it differently
    (BS-RoFormer: ``depth - 1``, Mel-Band-RoFormer: ``depth``).
    """

    def __init__(
        self,
        dim: int,
        dim_inputs: Sequence[int],
        num_hidden_layers: int,
        mlp_expansion_factor: int = 4,
    ) -> None:
        super().__init__()
        self.dim_inputs = tuple(int(d) for d in dim_inputs)
        dim_hidden = dim * mlp_expansion_factor
        self.to_freqs = nn.ModuleList(
            nn.Sequential(build_mlp(dim, dim_in * 2, dim_hidden, num_hidden_layers), nn.GLU(dim=-1))
            for dim_in in self.dim_inputs
        )

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.unbind(dim=-2)
        return torch.cat([mlp(token) for token, mlp in zip(tokens, self.to_freqs)], dim=-1)
