"""What BS-RoFormer and Mel-Band-RoFormer share: STFT front end, axial transformer stack, output contract.

Both models: STFT of each audio channel -> features per band -> ``depth`` blocks
of (optional linear-attention transformer over all time-band tokens, a
transformer over time per band, a transformer over bands per frame) -> one
mask estimator per stem -> complex mask times the mixture STFT -> inverse STFT.
The subclasses differ in how bands are cut from the spectrogram and where the
output norm sits.

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

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from stemflow.errors import ConfigError, StemflowError
from stemflow.models.layers import PolarEmbedding, RotaryEmbedding, Transformer

logger = logging.getLogger(__name__)

WindowFn = Callable[..., Tensor]

_WINDOW_FUNCTIONS: dict[str, WindowFn] = {
    "hann_window": torch.hann_window,
    "hamming_window": torch.hamming_window,
    "blackman_window": torch.blackman_window,
    "bartlett_window": torch.bartlett_window,
    "kaiser_window": torch.kaiser_window,
}


def resolve_window_fn(window_fn: WindowFn | str | None) -> WindowFn:
    """Map ``stft_window_fn`` (None, a callable, or a torch window name such as
    ``"hann_window"`` / ``"torch.hann_window"``) to a window function; None is Hann."""
    if window_fn is None:
        return torch.hann_window
    if callable(window_fn):
        return window_fn
    if isinstance(window_fn, str):
        name = window_fn.removeprefix("torch.")
        if name in _WINDOW_FUNCTIONS:
            return _WINDOW_FUNCTIONS[name]
    raise ConfigError(f"stft_window_fn {window_fn!r} is not one of {sorted(_WINDOW_FUNCTIONS)}")


def require_int(name: str, value: Any, *, minimum: int) -> int:
    """Return ``value`` if it is an int (not a bool) >= ``minimum``, else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def require_float(name: str, value: Any, *, minimum: float, maximum: float) -> float:
    """Return ``value`` as float if it is a number in ``[minimum, maximum]``, else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be a number in [{minimum}, {maximum}], got {value!r}")
    return float(value)


class RoformerBase(nn.Module):
    """Shared machinery; subclasses call :meth:`_init_common` first, then add their band modules."""

    stereo: bool
    audio_channels: int
    num_stems: int
    mask_estimators: nn.ModuleList  # set by the subclass: one MaskEstimator per stem

    def _init_common(
        self,
        *,
        dim: int,
        depth: int,
        stereo: bool,
        num_stems: int,
        time_transformer_depth: int,
        freq_transformer_depth: int,
        linear_transformer_depth: int,
        dim_head: int,
        heads: int,
        attn_dropout: float,
        ff_dropout: float,
        flash_attn: bool,
        stft_n_fft: int,
        stft_hop_length: int,
        stft_win_length: int,
        stft_normalized: bool,
        stft_window_fn: WindowFn | str | None,
        zero_dc: bool,
        mlp_expansion_factor: int,
        use_torch_checkpoint: bool,
        skip_connection: bool,
        use_pope: bool,
        norm_output: bool,
    ) -> None:
        """Validate the shared arguments, build the axial layers and the STFT settings."""
        for name, value in (
            ("dim", dim),
            ("dim_head", dim_head),
            ("heads", heads),
            ("num_stems", num_stems),
            ("stft_n_fft", stft_n_fft),
            ("stft_hop_length", stft_hop_length),
            ("stft_win_length", stft_win_length),
            ("mlp_expansion_factor", mlp_expansion_factor),
        ):
            require_int(name, value, minimum=1)
        for name, value in (
            ("depth", depth),
            ("time_transformer_depth", time_transformer_depth),
            ("freq_transformer_depth", freq_transformer_depth),
            ("linear_transformer_depth", linear_transformer_depth),
        ):
            require_int(name, value, minimum=0)
        attn_dropout = require_float("attn_dropout", attn_dropout, minimum=0.0, maximum=1.0)
        ff_dropout = require_float("ff_dropout", ff_dropout, minimum=0.0, maximum=1.0)
        if not stft_hop_length <= stft_win_length <= stft_n_fft:
            raise ConfigError(
                f"STFT settings need stft_hop_length <= stft_win_length <= stft_n_fft, got "
                f"{stft_hop_length}, {stft_win_length}, {stft_n_fft}"
            )

        self.stereo = bool(stereo)
        self.audio_channels = 2 if self.stereo else 1
        self.num_stems = num_stems
        self.use_torch_checkpoint = bool(use_torch_checkpoint)
        self.skip_connection = bool(skip_connection)
        self.zero_dc = bool(zero_dc)

        transformer_kwargs: dict[str, Any] = dict(
            dim=dim,
            heads=heads,
            dim_head=dim_head,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            flash_attn=bool(flash_attn),
            norm_output=norm_output,
        )
        # One position module per axis (rotary, or polar with use_pope), shared by its layers.
        time_position: dict[str, nn.Module]
        freq_position: dict[str, nn.Module]
        if use_pope:
            time_position = {"pope_embed": PolarEmbedding(dim_head, heads=heads)}
            freq_position = {"pope_embed": PolarEmbedding(dim_head, heads=heads)}
        else:
            time_position = {"rotary_embed": RotaryEmbedding(dim_head)}
            freq_position = {"rotary_embed": RotaryEmbedding(dim_head)}
        self.layers = nn.ModuleList()
        for _ in range(depth):
            block: list[nn.Module] = []
            if linear_transformer_depth > 0:
                block.append(Transformer(depth=linear_transformer_depth, linear_attn=True, **transformer_kwargs))
            block.append(
                Transformer(depth=time_transformer_depth, **time_position, **transformer_kwargs)
            )
            block.append(
                Transformer(depth=freq_transformer_depth, **freq_position, **transformer_kwargs)
            )
            self.layers.append(nn.ModuleList(block))

        self.stft_kwargs: dict[str, Any] = dict(
            n_fft=stft_n_fft,
            hop_length=stft_hop_length,
            win_length=stft_win_length,
            normalized=bool(stft_normalized),
        )
        self.stft_win_length = stft_win_length
        self.stft_window_fn = resolve_window_fn(stft_window_fn)
        self.num_freqs = stft_n_fft // 2 + 1

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

    def _estimate_masks(self, x: Tensor) -> Tensor:
        """Tokens ``[b, t, k, D]`` -> masks ``[b, n, F, t, c]`` (``F`` = the band features / 2)."""
        masks = torch.stack([self._maybe_checkpoint(estimator, x) for estimator in self.mask_estimators], dim=1)
        batch, stems, frames, features = masks.shape
        return masks.view(batch, stems, frames, features // 2, 2).permute(0, 1, 3, 2, 4)
