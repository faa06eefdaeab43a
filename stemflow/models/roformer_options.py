"""The constructor arguments of the Roformer models, declared once and validated.

Community configs pass their ``model:`` section to the model class as keyword
arguments, verbatim (the names of the MSST ``BSRoformer`` and
``MelBandRoformer``). The arguments both models share are the fields of
:class:`RoformerOptions`; each model adds its own in a subclass
(:class:`~stemflow.models.bs_roformer.BSRoformerOptions`,
:class:`~stemflow.models.mel_band_roformer.MelBandRoformerOptions`), and its
``__init__`` is declared with :func:`takes_options`, so that
``inspect.signature`` (and with it the config validation of
:func:`stemflow.models.build_model`) sees exactly these names and defaults:
unknown keys are still reported, missing required ones too.

Values are checked when the options are built; a bad value is a
:class:`~stemflow.errors.ConfigError` naming the argument.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from stemflow.errors import ConfigError

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


_POSITIVE = (
    "dim", "dim_head", "heads", "num_stems", "stft_n_fft", "stft_hop_length", "stft_win_length", "mlp_expansion_factor"
)
_DEPTHS = ("depth", "time_transformer_depth", "freq_transformer_depth", "linear_transformer_depth")


@dataclass(frozen=True, kw_only=True)
class RoformerOptions:
    """What BS-RoFormer and Mel-Band-RoFormer share; MSST's argument names and BS-RoFormer's defaults.

    ``dim_freqs_in`` and the ``multi_stft_*`` arguments are accepted and ignored,
    as in the reference: the STFT size decides the bins, and the multi-resolution
    STFT settings only shape the training loss.
    """

    dim: int  # model width D (the only argument also accepted by position)
    depth: int  # axial blocks, each: [linear transformer], time transformer, band transformer
    stereo: bool = False
    num_stems: int = 1
    time_transformer_depth: int = 2
    freq_transformer_depth: int = 2
    linear_transformer_depth: int = 0  # 0: no linear-attention transformer over all tokens
    dim_head: int = 64
    heads: int = 8
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    flash_attn: bool = True
    dim_freqs_in: int = 1025
    stft_n_fft: int = 2048
    stft_hop_length: int = 512
    stft_win_length: int = 2048
    stft_normalized: bool = False
    stft_window_fn: WindowFn | str | None = None
    zero_dc: bool = True  # zero the DC bin before the inverse STFT
    multi_stft_resolution_loss_weight: float = 1.0
    multi_stft_resolutions_window_sizes: Sequence[int] = (4096, 2048, 1024, 512, 256)
    multi_stft_hop_size: int = 147
    multi_stft_normalized: bool = False
    multi_stft_window_fn: WindowFn | str | None = None
    mlp_expansion_factor: int = 4  # hidden width of the mask estimators' MLPs, times dim
    use_torch_checkpoint: bool = False  # activation checkpointing while training
    skip_connection: bool = False  # each block also receives the sum of all earlier blocks' outputs
    use_pope: bool = False  # polar position embedding (PoPE) instead of rotary (RoPE)

    def __post_init__(self) -> None:
        for name in _POSITIVE:
            require_int(name, getattr(self, name), minimum=1)
        for name in _DEPTHS:
            require_int(name, getattr(self, name), minimum=0)
        require_float("attn_dropout", self.attn_dropout, minimum=0.0, maximum=1.0)
        require_float("ff_dropout", self.ff_dropout, minimum=0.0, maximum=1.0)
        if not self.stft_hop_length <= self.stft_win_length <= self.stft_n_fft:
            raise ConfigError(
                f"STFT settings need stft_hop_length <= stft_win_length <= stft_n_fft, got "
                f"{self.stft_hop_length}, {self.stft_win_length}, {self.stft_n_fft}"
            )
        resolve_window_fn(self.stft_window_fn)

    @property
    def num_freqs(self) -> int:
        """STFT bins: ``stft_n_fft // 2 + 1``."""
        return self.stft_n_fft // 2 + 1


Init = TypeVar("Init", bound=Callable[..., None])


def options_signature(options_type: type[RoformerOptions]) -> inspect.Signature:
    """``(self, dim, *, <every other field>)`` with the fields' defaults: the constructor ``options_type`` describes."""
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for option in dataclasses.fields(options_type):
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if option.name == "dim" else inspect.Parameter.KEYWORD_ONLY
        default = inspect.Parameter.empty if option.default is dataclasses.MISSING else option.default
        parameters.append(inspect.Parameter(option.name, kind, default=default, annotation=option.type))
    return inspect.Signature(parameters)


def takes_options(options_type: type[RoformerOptions]) -> Callable[[Init], Init]:
    """Declare a model ``__init__(self, dim, **options)`` to take exactly the fields of ``options_type``."""

    def declare(init: Init) -> Init:
        init.__signature__ = options_signature(options_type)  # type: ignore[attr-defined]
        return init

    return declare
