"""Transformer building blocks shared by BS-RoFormer and Mel-Band-RoFormer.

Module and attribute names follow the Music-Source-Separation-Training (MSST)
layout, so that published checkpoints load with ``strict=True``: the attribute
names below *are* the state-dict keys (``norm.gamma``, ``to_qkv.weight``,
``to_gates.bias``, ``to_out.0.weight``, ``rotary_embed.freqs``, ``net.1.weight``...).

Dimension letters used in the shape comments::

    b  batch (or a batch folded with an axis the transformer does not attend over)
    n  sequence length (time frames or frequency bands)
    h  attention heads
    d  feature dimension per head (``dim_head``)
    D  model dimension (``dim``)
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """RMS normalisation with a learned per-channel gain.

    ``y = x / ||x||_2 * sqrt(dim) * gamma`` along the last axis (the L2 norm is
    clamped at 1e-12, as the reference's ``F.normalize`` does). Computed as one
    ``F.rms_norm`` (``x / sqrt(mean(x^2) + eps)``, the same quantity, with
    ``eps = 1e-24 / dim`` standing in for the clamp): one fused kernel instead of
    five. Shape-preserving: ``[..., dim]``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.eps = 1e-24 / dim
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        gamma = self.gamma if self.gamma.dtype == x.dtype else self.gamma.to(x.dtype)
        return F.rms_norm(x, (self.dim,), gamma, self.eps)


class FeedForward(nn.Module):
    """Pre-norm GELU feed-forward: ``[..., D] -> [..., D]`` through ``int(D * mult)`` hidden units."""

    def __init__(self, dim: int, mult: float = 4, dropout: float = 0.0) -> None:
        super().__init__()
        dim_inner = int(dim * mult)
        # Indices matter: the checkpoint keys are net.0.gamma, net.1.*, net.4.*.
        self.net = nn.Sequential(
            RMSNorm(dim),
            nn.Linear(dim, dim_inner),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(dim_inner, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return self.net(x)
        norm, project_in, activation, _, project_out, _ = self.net  # dropouts are identities in eval mode
        return project_out(activation(project_in(norm(x))))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding over the sequence axis (RoFormer), interleaved pairs.

    Channel pairs ``(2i, 2i+1)`` of each head are rotated by the angle
    ``position * freqs[i]`` with ``freqs[i] = theta ** (-2i / dim)``. This is the
    ``rotary_embedding_torch`` convention (adjacent pairs, not split halves).
    ``freqs`` is a frozen parameter so that it appears in the state dict, as the
    reference checkpoints store it under every attention layer.
    """

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        exponents = torch.arange(0, dim, 2)[: dim // 2].float() / dim
        self.freqs = nn.Parameter(1.0 / (theta**exponents), requires_grad=False)
        self._rotations: dict[tuple[Any, ...], tuple[tuple[int, int], Tensor]] = {}

    def rotation(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``e^(i position freqs)``, complex ``[seq_len, d/2]`` (complex64, or complex128 for float64).

        Cached per length, device and dtype (a few entries), and recomputed
        when ``freqs`` changes (a checkpoint load), so every attention layer of
        an axis shares one computation per forward instead of five ops each.
        """
        if self.freqs.is_inference():  # built under inference_mode: no version counter to key a cache on
            return self._angles(seq_len, device, dtype)
        key = (seq_len, str(device), dtype)
        version = (self.freqs.data_ptr(), self.freqs._version)
        cached = self._rotations.get(key)
        if cached is None or cached[0] != version:
            with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable with autograd too
                cached = (version, self._angles(seq_len, device, dtype))
            if len(self._rotations) >= 16:
                self._rotations.clear()
            self._rotations[key] = cached
        return cached[1]

    def _angles(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        angles = self._angle_table(seq_len, device, dtype)
        return torch.polar(torch.ones_like(angles), angles)

    def _angle_table(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``position * freqs[i]``, ``[seq_len, d/2]``."""
        positions = torch.arange(seq_len, device=device, dtype=dtype)
        return positions[:, None] * self.freqs.to(device=device, dtype=dtype)[None, :]

    def rotate(self, t: Tensor) -> Tensor:
        """Rotate queries or keys ``[..., n, d]`` by their position along ``n``.

        Computed in float32 whatever ``t``'s dtype (float64 stays float64; the
        result is cast back), so long sequences under half-precision autocast
        keep exact positions.
        """
        rot_dim = 2 * self.freqs.shape[0]
        compute = torch.float64 if t.dtype == torch.float64 else torch.float32
        real = t if rot_dim == t.shape[-1] else t[..., :rot_dim]
        real = real if real.dtype == compute else real.to(compute)
        # Pair (2i, 2i+1) as the complex number x_2i + i x_2i+1; rotating it is one complex product:
        # (x_2i cos - x_2i+1 sin, x_2i+1 cos + x_2i sin).
        if torch.compiler.is_compiling():  # real arithmetic: inductor fuses it into one kernel
            angles = self._angle_table(t.shape[-2], t.device, compute)
            out = _rotate_pairs(real, angles.cos(), angles.sin())
        else:
            rotation = self.rotation(t.shape[-2], t.device, compute)
            if real.storage_offset() % 2 or any(stride % 2 for stride in real.stride()[:-1]):
                real = real.contiguous()  # complex views need even strides and offset
            pairs = torch.view_as_complex(real.unflatten(-1, (-1, 2)))  # [..., n, d/2]
            out = torch.view_as_real(pairs * rotation).flatten(-2)
        if rot_dim < t.shape[-1]:
            out = torch.cat((out, t[..., rot_dim:].to(compute)), dim=-1)
        return out if out.dtype == t.dtype else out.to(t.dtype)


def _rotate_pairs(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``x [..., n, d]`` with pairs ``(2i, 2i+1)`` rotated by angles of cosine ``cos`` and sine ``sin`` ``[n, d/2]``."""
    even, odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)


class PolarEmbedding(nn.Module):
    """Polar coordinate position embedding, PoPE (Gopalakrishnan et al. 2025, arXiv:2509.10534).

    Each of the ``d`` channels of a head becomes a magnitude ``softplus(x)`` and
    a phase ``position * inv_freqs[j]`` (``inv_freqs[j] = theta ** (-j / d)``,
    ``d`` frequencies, not ``d/2`` pairs as in RoPE); keys get an extra learned
    per-head phase ``bias`` clamped to ``[-2 pi, 0]``. Queries and keys are
    returned in Cartesian form with ``2 d`` channels so that their dot product is
    ``sum_j |q_j| |k_j| cos(phase_q - phase_k - bias_j)``. Keys as in
    ``PoPE_pytorch``: ``inv_freqs`` (a saved buffer) and ``bias`` ``[heads, d]``.
    """

    def __init__(self, dim: int, *, heads: int, theta: float = 10000.0) -> None:
        super().__init__()
        self.register_buffer("inv_freqs", theta ** -(torch.arange(dim).float() / dim))
        self.bias = nn.Parameter(torch.zeros(heads, dim))

    inv_freqs: Tensor

    def apply_to_qk(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """``q``, ``k``: ``[b, h, n, d]`` -> ``[b, h, n, 2 d]`` each, computed in float32."""
        positions = torch.arange(q.shape[-2], device=q.device, dtype=torch.float32)
        phases = positions[:, None] * self.inv_freqs.float()[None, :]  # [n, d]
        key_phases = phases + self.bias.float().clamp(-2.0 * math.pi, 0.0)[:, None, :]  # [h, n, d]
        q_mag, k_mag = F.softplus(q.float()), F.softplus(k.float())
        # channel order (d, 2): cos and sin of each channel side by side, as the reference
        q_out = torch.stack((q_mag * phases.cos(), q_mag * phases.sin()), dim=-1).flatten(-2)
        k_out = torch.stack((k_mag * key_phases.cos(), k_mag * key_phases.sin()), dim=-1).flatten(-2)
        return q_out, k_out


def attend(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None, dropout_p: float = 0.0) -> Tensor:
    """Softmax attention with ``F.scaled_dot_product_attention`` (fused kernels on GPU).

    ``q``, ``k``, ``v``: ``[b, h, n, d]``; returns ``[b, h, n, d]``. ``scale``
    defaults to ``d ** -0.5``.
    """
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)


def attend_explicit(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None, dropout: nn.Module | None = None
) -> Tensor:
    """The same attention as :func:`attend`, written out (``softmax(q k^T * scale) v``).

    Used when a config sets ``flash_attn: false`` and as the test oracle for
    :func:`attend`. Shapes as in :func:`attend`; materialises the ``[b, h, n, n]`` matrix.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    weights = (q @ k.transpose(-1, -2) * scale).softmax(dim=-1)
    if dropout is not None:
        weights = dropout(weights)
    return weights @ v


class Attention(nn.Module):
    """Gated multi-head self-attention with rotary positions: ``[b, n, D] -> [b, n, D]``.

    Each head's output is multiplied by ``sigmoid(to_gates(x))`` (one gate per
    head and position) before the output projection.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        rotary_embed: RotaryEmbedding | None = None,
        flash: bool = True,
        pope_embed: PolarEmbedding | None = None,
    ) -> None:
        super().__init__()
        if rotary_embed is not None and pope_embed is not None:
            raise ValueError("an attention layer takes a rotary or a polar embedding, not both")
        self.heads = heads
        self.dropout = dropout
        self.flash = flash
        self.scale = dim_head**-0.5
        dim_inner = heads * dim_head
        # Position modules are shared per axis: their tensors appear under every layer's keys.
        self.rotary_embed = rotary_embed
        self.pope_embed = pope_embed
        self.attn_dropout = nn.Dropout(dropout)
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, dim_inner * 3, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(nn.Linear(dim_inner, dim, bias=False), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        batch, seq_len, _ = x.shape
        qkv = self.to_qkv(x).view(batch, seq_len, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # [3, b, h, n, d]
        if self.pope_embed is not None:
            # PoPE doubles the q/k channels; the softmax scale stays d ** -0.5, and the
            # reference applies no attention dropout on this path.
            q, k, v = qkv.unbind(0)
            q, k = self.pope_embed.apply_to_qk(q, k)
            q, k = q.to(v.dtype), k.to(v.dtype)
            out = attend(q, k, v, scale=self.scale) if self.flash else attend_explicit(q, k, v, scale=self.scale)
        else:
            if self.rotary_embed is not None:  # queries and keys rotated together: one complex product
                (q, k), v = self.rotary_embed.rotate(qkv[:2]).unbind(0), qkv[2]
            else:
                q, k, v = qkv.unbind(0)
            if self.flash:
                out = attend(q, k, v, dropout_p=self.dropout if self.training else 0.0)
            else:
                out = attend_explicit(q, k, v, dropout=self.attn_dropout if self.training else None)
        gates = self.to_gates(x).transpose(1, 2).unsqueeze(-1).sigmoid()  # [b, n, h] -> [b, h, n, 1]
        out = (out * gates).transpose(1, 2).reshape(batch, seq_len, -1)  # [b, n, (h d)]
        return self.to_out(out) if self.training else self.to_out[0](out)


class LinearAttention(nn.Module):
    """Cross-covariance ("linear") attention of El-Nouby et al. 2021 (XCiT): ``[b, n, D] -> [b, n, D]``.

    Attention runs across the ``d`` feature channels of each head instead of
    across positions: queries and keys are ``[b, h, d, n]``, L2-normalised over
    ``n``, queries scaled by ``exp(temperature)`` per head, and the softmax
    uses the fixed scale ``scale`` (8). Cost is linear in ``n``.
    """

    def __init__(
        self,
        *,
        dim: int,
        dim_head: int = 32,
        heads: int = 8,
        scale: float = 8,
        flash: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        dim_inner = dim_head * heads
        self.heads = heads
        self.scale = scale
        self.dropout = dropout
        self.flash = flash
        self.attn_dropout = nn.Dropout(dropout)
        self.norm = RMSNorm(dim)
        # The reference wraps the projections in Sequentials with a reshape layer
        # next to them; the explicit indices keep its keys: to_qkv.0.*, to_out.1.*.
        self.to_qkv = nn.Sequential(OrderedDict([("0", nn.Linear(dim, dim_inner * 3, bias=False))]))
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.to_out = nn.Sequential(OrderedDict([("1", nn.Linear(dim_inner, dim, bias=False))]))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        batch, seq_len, _ = x.shape
        # [b, n, (3 h d)] -> [3, b, h, d, n]
        q, k, v = self.to_qkv(x).view(batch, seq_len, 3, self.heads, -1).permute(2, 0, 3, 4, 1)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        q = q * self.temperature.exp()
        if self.flash:
            out = attend(q, k, v, scale=self.scale, dropout_p=self.dropout if self.training else 0.0)
        else:
            out = attend_explicit(q, k, v, scale=self.scale, dropout=self.attn_dropout if self.training else None)
        out = out.permute(0, 3, 1, 2).reshape(batch, seq_len, -1)  # [b, h, d, n] -> [b, n, (h d)]
        return self.to_out(out)


class Transformer(nn.Module):
    """``depth`` pre-norm residual blocks (attention, then feed-forward): ``[b, n, D] -> [b, n, D]``.

    ``norm_output`` adds a final RMSNorm (key ``norm.gamma``): Mel-Band-RoFormer
    uses it on every transformer, BS-RoFormer does not (it has one ``final_norm``).
    """

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        dim_head: int = 64,
        heads: int = 8,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        ff_mult: float = 4,
        norm_output: bool = True,
        rotary_embed: RotaryEmbedding | None = None,
        pope_embed: PolarEmbedding | None = None,
        flash_attn: bool = True,
        linear_attn: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            attn: nn.Module
            if linear_attn:
                attn = LinearAttention(
                    dim=dim, dim_head=dim_head, heads=heads, dropout=attn_dropout, flash=flash_attn
                )
            else:
                attn = Attention(
                    dim=dim,
                    heads=heads,
                    dim_head=dim_head,
                    dropout=attn_dropout,
                    rotary_embed=rotary_embed,
                    flash=flash_attn,
                    pope_embed=pope_embed,
                )
            self.layers.append(nn.ModuleList([attn, FeedForward(dim, mult=ff_mult, dropout=ff_dropout)]))
        self.norm: nn.Module = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        for attn, ff in self.layers:  # type: ignore[misc]
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)
