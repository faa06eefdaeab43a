"""The frames of ``torch.stft(x, center=True)`` for a signal that arrives in blocks.

:class:`StftFramer` takes consecutive ``[channels, n]`` blocks (any sizes, 0
included) and returns each STFT frame once, as soon as its samples are in,
padding the two ends exactly as ``torch.stft(center=True)`` does (``n_fft // 2``
samples of zeros, ``pad_mode="constant"``, or of reflection, ``"reflect"``): the
frames joined along the last axis equal ``torch.stft`` of the joined signal
(same frame positions, each frame the same FFT of the same samples). Memory:
fewer than ``n_fft`` samples carried between blocks.
"""

from __future__ import annotations

import numpy as np
import torch


class StftFramer:
    """``torch.stft(x, center=True)`` frames of a signal that arrives in blocks, in order.

    Pads the start as soon as it can (``reflect`` needs the first ``n_fft // 2 + 1``
    samples) and the end in :meth:`finish`; keeps fewer than ``n_fft`` samples
    between calls (plus, for ``reflect``, the last ``n_fft // 2 + 1`` for the end).
    ``window``: float64 ``[n_fft]``. Each call returns complex ``[channels, bins, k]``
    (``k`` may be 0).
    """

    def __init__(self, n_fft: int, hop_length: int, window: torch.Tensor, pad_mode: str) -> None:
        self.n_fft, self.hop, self.window, self.pad_mode = (
            n_fft,
            hop_length,
            window,
            pad_mode,
        )
        self.pad = n_fft // 2
        self._buffer: np.ndarray | None = None  # padded-signal samples from the next frame's start
        self._head: list[np.ndarray] = []  # raw samples held until the start can be padded
        self._tail = np.zeros((0, 0))  # the last pad + 1 raw samples (reflect)
        self.samples = 0

    def push(self, x: np.ndarray) -> torch.Tensor:
        """The frames ``x`` completes (``x``: float64 ``[channels, n]``)."""
        self.samples += x.shape[1]
        if self.pad_mode == "reflect":
            self._tail = (
                np.concatenate([self._tail, x], axis=1)[:, -(self.pad + 1) :]
                if self._tail.size
                else x[:, -(self.pad + 1) :]
            )
        if self._buffer is None:
            self._head.append(x)
            held = np.concatenate(self._head, axis=1)
            if self.pad_mode == "reflect" and held.shape[1] <= self.pad:
                return self._none(x.shape[0])
            self._head = []
            front = held[:, self.pad : 0 : -1] if self.pad_mode == "reflect" else np.zeros((held.shape[0], self.pad))
            self._buffer = np.concatenate([front, held], axis=1)
        else:
            self._buffer = np.concatenate([self._buffer, x], axis=1)
        return self._frames()

    def finish(self) -> torch.Tensor:
        """The frames the end padding completes.

        Raises:
            ValueError: a ``reflect`` signal of ``n_fft // 2`` samples or fewer (as ``torch.stft``).
        """
        if self._buffer is None:
            held = np.concatenate(self._head, axis=1)
            if self.pad_mode == "reflect":
                raise ValueError(
                    f"signal of {held.shape[1]} samples is too short for n_fft={self.n_fft} with reflect padding"
                )
            self._buffer = np.concatenate([np.zeros((held.shape[0], self.pad)), held], axis=1)
        channels = self._buffer.shape[0]
        end = self._tail[:, -2::-1] if self.pad_mode == "reflect" else np.zeros((channels, self.pad))
        self._buffer = np.concatenate([self._buffer, end[:, : self.pad]], axis=1)
        return self._frames()

    def _none(self, channels: int) -> torch.Tensor:
        return torch.zeros((channels, self.n_fft // 2 + 1, 0), dtype=torch.complex128)

    def _frames(self) -> torch.Tensor:
        assert self._buffer is not None
        length = self._buffer.shape[1]
        if length < self.n_fft:
            return self._none(self._buffer.shape[0])
        count = 1 + (length - self.n_fft) // self.hop
        used = torch.from_numpy(np.ascontiguousarray(self._buffer[:, : (count - 1) * self.hop + self.n_fft]))
        spec = torch.stft(
            used,
            self.n_fft,
            self.hop,
            window=self.window,
            center=False,
            return_complex=True,
        )
        self._buffer = self._buffer[:, count * self.hop :]
        return spec
