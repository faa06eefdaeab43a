"""Precision policy: the dtype a forward runs in, and what ``"auto"`` means on each device.

``"float32"`` runs without autocast; ``"bfloat16"`` and ``"float16"`` run the
forward under ``torch.autocast`` with that dtype (matmuls and convolutions in
half precision, norms, softmax and sums in float32), as Music-Source-Separation-
Training does at inference (``torch.cuda.amp.autocast``, whose CUDA default is
float16).

``"auto"`` resolves per device (:data:`AUTO_PRECISION`), from measurements
(``benchmarks/results/gpu_h100.json``, real-size BS-RoFormer 4-stem and KJ
Mel-RoFormer on an H100): float16 autocast is as fast as bfloat16 (3.17 s
against 3.40 s per 180 s track, batch 16) and much closer to float32 (stems
58-62 dB SDR from float32's, bfloat16 40-44 dB), and it is what the models'
authors run. Everywhere else ``"auto"`` is float32: on a CPU, float16 is not
supported and bfloat16 buys little speed for its ~40 dB error. A model id
always records the *resolved* precision, never ``"auto"``.
"""

from __future__ import annotations

import torch

from stemflow.errors import ConfigError

PRECISIONS: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
"""Precision name -> the autocast dtype (``"float32"`` runs without autocast)."""

AUTO = "auto"

AUTO_PRECISION: dict[str, str] = {"cuda": "float16"}
"""What ``"auto"`` resolves to per device type; float32 on any other device."""


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``precision`` as a key of :data:`PRECISIONS` for ``device`` (``"auto"`` resolved); ConfigError if unusable."""
    device_type = torch.device(device).type
    if precision == AUTO:
        return AUTO_PRECISION.get(device_type, "float32")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {sorted(PRECISIONS) + [AUTO]}, got {precision!r}")
    if precision == "float16" and device_type != "cuda":
        raise ConfigError("precision 'float16' needs a CUDA device; use 'bfloat16' or 'float32' on CPU")
    return precision
