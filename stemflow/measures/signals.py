"""The input check and energy sums every measure shares.

Every public measure of :mod:`stemflow.measures` (and the karaoke scores) takes
``[channels, samples]`` arrays, numpy or torch, full scale = 1.0, and never
mutates them: :func:`as_signal` checks and views such an input once.
:func:`energy` and :func:`window_energies` are the sums of squares the level
measures are built from (accumulated in float64 whatever the input's dtype).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_signal(x: Any, name: str = "signal") -> np.ndarray:
    """Check and view an audio array as ``np.ndarray`` of shape ``[channels, samples]``.

    Accepts numpy arrays and torch tensors (detached, moved to the CPU; half
    precision becomes float32). Float arrays keep their dtype (no copy for
    numpy input); integer arrays become float64 without rescaling (pass PCM
    as floats scaled to full scale = 1.0). The input is never modified: callers must not
    write into the returned array.

    Raises:
        ValueError: not 2-D, no channel or no sample, or NaN/inf values.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch here
        tensor = x.detach().cpu()
        if tensor.is_floating_point() and tensor.element_size() < 4:  # bf16/fp16: numpy has no bf16
            tensor = tensor.float()
        x = tensor.numpy()
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be shaped [channels, samples], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf samples")
    return arr


def energy(x: np.ndarray) -> float:
    """Sum of squares over all channels and samples of ``[channels, samples]``, accumulated in float64."""
    return float(np.einsum("cn,cn->", x, x, dtype=np.float64))


def window_energies(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Energy of each consecutive window of ``window`` samples (the last one may be shorter), and its size.

    Every sample belongs to exactly one window. ``x``: ``[channels, samples]``
    -> two ``[windows]`` arrays: float64 sums of squares over the window's
    samples of all channels, and how many values each sum has (``channels *
    window``, fewer for a shorter last window), so ``energies / counts`` is the
    window's mean square.
    """
    channels, n = x.shape
    whole = n // window
    energies = []
    counts = []
    if whole:
        frames = x[:, : whole * window].reshape(channels, whole, window)
        energies.append(np.einsum("cfw,cfw->f", frames, frames, dtype=np.float64))
        counts.append(np.full(whole, channels * window))
    if n % window:
        tail = x[:, whole * window :]
        energies.append(np.array([energy(tail)]))
        counts.append(np.array([tail.size]))
    return np.concatenate(energies), np.concatenate(counts)
