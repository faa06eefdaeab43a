"""What BS-RoFormer and Mel-Band-RoFormer share: STFT front end, axial transformer stack, output contract.

Both models: STFT of each audio channel -> features per band -> ``depth`` blocks
of (optional linear-attention transformer over all time-band tokens, a
transformer over time per band, a transformer over bands per frame) -> one
mask estimator per stem -> complex mask times the mixture STFT -> inverse STFT.
The subclasses differ in how bands are cut from the spectrogram and where the
output norm sits. Their constructor arguments are declared in
:mod:`stemflow.models.roformer_options`.

Output contract for the separation engine (every registered model provides it):

- ``num_output_stems``: how many stems the network outputs (``num_stems``).
- ``separate_chunks(x)``: ``x`` is ``[B, 2, L]`` stereo audio; returns
  ``[B, S, 2, L]``, always with the stem axis and always exactly ``L`` samples.
  ``forward`` itself stays identical to the reference (including its output
  shape quirks); see the subclasses.

Dimension letters: ``b`` batch, ``s`` audio channels (1 or 2), ``f`` STFT bins,
``t`` STFT frames, ``k`` bands, ``n`` stems, ``c`` real/imag, ``D`` model dim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from stemflow.errors import StemflowError
from stemflow.models.band_groups import GroupedBands
from stemflow.models.band_layers import BandSplit, MaskEstimator
from stemflow.models.layers import PolarEmbedding, RotaryEmbedding, Transformer
from stemflow.models.roformer_options import RoformerOptions, resolve_window_fn


def transformer_arguments(options: RoformerOptions, *, norm_output: bool) -> dict[str, Any]:
    """Keyword arguments every :class:`~stemflow.models.layers.Transformer` of the stack shares."""
    return dict(
        dim=options.dim,
        heads=options.heads,
        dim_head=options.dim_head,
        attn_dropout=float(options.attn_dropout),
        ff_dropout=float(options.ff_dropout),
        flash_attn=bool(options.flash_attn),
        norm_output=norm_output,
    )


def position_embedding(options: RoformerOptions) -> dict[str, nn.Module]:
    """One axis' position module, as the Transformer keyword naming it: rotary, or polar with ``use_pope``."""
    if options.use_pope:
        return {"pope_embed": PolarEmbedding(options.dim_head, heads=options.heads)}
    return {"rotary_embed": RotaryEmbedding(options.dim_head)}


def build_axial_layers(options: RoformerOptions, *, norm_output: bool) -> nn.ModuleList:
    """``depth`` blocks of ([linear transformer,] time transformer, band transformer).

    One position module per axis, shared by all of that axis' layers (the
    reference stores its tensors under every attention layer's keys).
    """
    shared = transformer_arguments(options, norm_output=norm_output)
    time_position = position_embedding(options)
    freq_position = position_embedding(options)
    layers = nn.ModuleList()
    for _ in range(options.depth):
        block: list[nn.Module] = []
        if options.linear_transformer_depth > 0:
            block.append(Transformer(depth=options.linear_transformer_depth, linear_attn=True, **shared))
        block.append(Transformer(depth=options.time_transformer_depth, **time_position, **shared))
        block.append(Transformer(depth=options.freq_transformer_depth, **freq_position, **shared))
        layers.append(nn.ModuleList(block))
    return layers


def stft_arguments(options: RoformerOptions) -> dict[str, Any]:
    """Keyword arguments of ``torch.stft`` / ``torch.istft`` (the window is passed separately)."""
    return dict(
        n_fft=options.stft_n_fft,
        hop_length=options.stft_hop_length,
        win_length=options.stft_win_length,
        normalized=bool(options.stft_normalized),
    )


class RoformerBase(nn.Module):
    """Shared machinery; a subclass builds its options, passes them to ``__init__``, then adds its band modules."""

    stereo: bool
    audio_channels: int
    num_stems: int
    band_split: BandSplit  # set by _add_band_modules, as are the mask estimators (one per stem)
    mask_estimators: nn.ModuleList

    def __init__(self, options: RoformerOptions, *, norm_output: bool) -> None:
        """Build the axial transformer stack and the STFT settings from validated ``options``.

        ``norm_output``: every transformer ends with its own RMSNorm (Mel-Band-RoFormer).
        """
        super().__init__()
        self.stereo = bool(options.stereo)
        self.audio_channels = 2 if self.stereo else 1
        self.num_stems = options.num_stems
        self.use_torch_checkpoint = bool(options.use_torch_checkpoint)
        self.skip_connection = bool(options.skip_connection)
        self.zero_dc = bool(options.zero_dc)
        self.layers = build_axial_layers(options, norm_output=norm_output)
        self.stft_kwargs: dict[str, Any] = stft_arguments(options)
        self.stft_win_length = options.stft_win_length
        self.stft_window_fn = resolve_window_fn(options.stft_window_fn)
        self.num_freqs = options.num_freqs

    def _add_band_modules(self, options: RoformerOptions, band_features: Sequence[Tensor], mask_hidden: int) -> None:
        """Register ``band_split``, one mask estimator per stem (``mask_hidden`` hidden layers each), and their grouped kernels.

        ``band_features[k]``: indices of band ``k``'s features (bins x audio channels x
        real/imag, in the order its Linear reads them) into the flattened spectrogram
        features ``[b, t, (f s c)]``.
        """
        widths = tuple(len(features) for features in band_features)
        self.band_split = BandSplit(options.dim, widths)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(options.dim, widths, mask_hidden, options.mlp_expansion_factor)
            for _ in range(options.num_stems)
        )
        hidden = options.dim * options.mlp_expansion_factor
        mlp_dims = list(zip((options.dim, *(hidden,) * mask_hidden), (*(hidden,) * mask_hidden, 0)))
        self.grouped_bands = GroupedBands(dim=options.dim, band_features=band_features,
                                          num_features=2 * self.num_freqs * self.audio_channels,
                                          mlp_dims=mlp_dims, num_stems=options.num_stems)
        self.grouped_band_kernels = True  # False: always the reference's per-band modules
        self._grouped_ready = False
        self.prepare_inference()

    def prepare_inference(self) -> bool:
        """Make the grouped band kernels read the current weights (cheap when they already do).

        Called by every eager forward; a caller that compiles the forward calls
        it before each compiled call (:class:`stemflow.engine.separator.Separator`
        does). Returns whether the grouped kernels can run (not for meta or
        inference-mode parameters, nor with ``grouped_band_kernels = False``).
        """
        grouped = self.grouped_bands
        ready = self.grouped_band_kernels and (
            grouped.is_current(self.band_split, self.mask_estimators)
            or grouped.attach(self.band_split, self.mask_estimators)
        )
        self._grouped_ready = bool(ready)
        return self._grouped_ready

    def _use_grouped(self) -> bool:
        """Whether this forward runs the grouped band kernels: inference only (autograd needs the per-band path)."""
        if torch.is_grad_enabled():
            return False
        if not torch.compiler.is_compiling():
            self.prepare_inference()
        return self._grouped_ready

    # ---- output contract -------------------------------------------------------------------

    @property
    def num_output_stems(self) -> int:
        """Number of stems the network outputs (the stem axis of :meth:`separate_chunks`)."""
        return self.num_stems

    def separate_chunks(self, x: Tensor) -> Tensor:
        """Separate a batch of stereo chunks: ``[B, 2, L] -> [B, S, 2, L]``.

        Always keeps the stem axis and returns exactly ``L`` samples. A mono
        model (``stereo=False``) separates the two channels independently.
        """
        if x.ndim != 3 or x.shape[1] != 2:
            raise StemflowError(f"separate_chunks expects [batch, 2, samples], got {tuple(x.shape)}")
        batch, _, length = x.shape
        if self.stereo:
            return self._separate(x, length)
        out = self._separate(x.reshape(batch * 2, 1, length), length)  # [(B 2), S, 1, L]
        return out.reshape(batch, 2, -1, length).transpose(1, 2)

    def _separate(self, raw_audio: Tensor, istft_length: int | None) -> Tensor:
        """``[b, s, L] -> [b, n, s, L']`` (implemented by each model)."""
        raise NotImplementedError

    # ---- shared pieces of forward ----------------------------------------------------------

    def _as_channels(self, raw_audio: Tensor) -> Tensor:
        """Check the input and return it as ``[b, s, L]`` (``[b, L]`` is read as one channel)."""
        if raw_audio.ndim == 2:
            raw_audio = raw_audio.unsqueeze(1)
        if raw_audio.ndim != 3 or raw_audio.shape[1] != self.audio_channels:
            raise StemflowError(
                f"this model has stereo={self.stereo} and expects "
                f"[batch, {self.audio_channels}, samples]"
                + (" or [batch, samples]" if not self.stereo else "")
                + f", got {tuple(raw_audio.shape)}"
            )
        return raw_audio

    def _window(self, like: Tensor) -> Tensor:
        """The STFT window on ``like``'s device, in its dtype (so float64 models work too)."""
        window = self.stft_window_fn(self.stft_win_length, device=like.device)
        return window if window.dtype == like.dtype else window.to(like.dtype)

    def _stft(self, raw_audio: Tensor, window: Tensor) -> Tensor:
        """``[b, s, L] -> [b, (f s), t, c]``: real view of the STFT, channels interleaved per bin."""
        batch, channels, length = raw_audio.shape
        spec = torch.stft(raw_audio.reshape(batch * channels, length), **self.stft_kwargs, window=window, return_complex=True)
        spec = torch.view_as_real(spec)  # [(b s), f, t, c]
        freqs, frames = spec.shape[1], spec.shape[2]
        return spec.view(batch, channels, freqs, frames, 2).transpose(1, 2).reshape(batch, freqs * channels, frames, 2)

    def _istft(self, spec: Tensor, window: Tensor, length: int | None) -> Tensor:
        """``[b, n, (f s), t]`` complex -> ``[b, n, s, L]`` audio (DC bin zeroed if ``zero_dc``)."""
        batch, stems, _, frames = spec.shape
        channels = self.audio_channels
        # [b, n, (f s), t] -> [(b n s), f, t]
        spec = spec.view(batch, stems, -1, channels, frames).transpose(2, 3).reshape(batch * stems * channels, -1, frames)
        if self.zero_dc:
            spec = spec.index_fill(1, torch.tensor(0, device=spec.device), 0.0)
        audio = torch.istft(spec, **self.stft_kwargs, window=window, return_complex=False, length=length)
        return audio.view(batch, stems, channels, -1)

    def _maybe_checkpoint(self, module: nn.Module, x: Tensor) -> Tensor:
        """Run ``module(x)``, through activation checkpointing when training with it enabled."""
        if self.use_torch_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(module, x, use_reentrant=False)  # type: ignore[no-any-return]
        return module(x)

    def _axial_layers(self, x: Tensor) -> Tensor:
        """The transformer stack: ``[b, t, k, D] -> [b, t, k, D]``."""
        store: list[Tensor] = []
        for block in self.layers:
            if len(block) == 3:  # type: ignore[arg-type]
                linear_transformer, time_transformer, freq_transformer = block  # type: ignore[misc]
                batch, frames, bands, dim = x.shape
                x = self._maybe_checkpoint(linear_transformer, x.reshape(batch, frames * bands, dim))
                x = x.view(batch, frames, bands, dim)
            else:
                time_transformer, freq_transformer = block  # type: ignore[misc]
            if self.skip_connection:
                for previous in store:  # sum of the outputs of all earlier blocks
                    x = x + previous
            batch, frames, bands, dim = x.shape
            x = x.transpose(1, 2).reshape(batch * bands, frames, dim)  # attend over time
            x = self._maybe_checkpoint(time_transformer, x)
            x = x.view(batch, bands, frames, dim).transpose(1, 2).reshape(batch * frames, bands, dim)  # over bands
            x = self._maybe_checkpoint(freq_transformer, x)
            x = x.view(batch, frames, bands, dim)
            if self.skip_connection:
                store.append(x)
        return x

    def _split_bands(self, features: Tensor, grouped: bool) -> Tensor:
        """Spectrogram features ``[b, t, (f s c)]`` -> band tokens ``[b, t, k, D]``."""
        if grouped:
            return self.grouped_bands.split(features)
        return self._maybe_checkpoint(self.band_split, self._band_features(features))

    def _band_features(self, features: Tensor) -> Tensor:
        """The band split's input (every band's features, bands in order) from ``[b, t, (f s c)]``."""
        return features

    def _estimate_masks(self, x: Tensor, grouped: bool = False) -> Tensor:
        """Tokens ``[b, t, k, D]`` -> masks ``[b, n, F, t, c]`` (``F`` = the band features / 2)."""
        if grouped:
            masks = self.grouped_bands.masks(x).transpose(0, 1)  # [b, n, t, features]
        else:
            masks = torch.stack([self._maybe_checkpoint(estimator, x) for estimator in self.mask_estimators], dim=1)
        batch, stems, frames, features = masks.shape
        return masks.view(batch, stems, frames, features // 2, 2).permute(0, 1, 3, 2, 4)
