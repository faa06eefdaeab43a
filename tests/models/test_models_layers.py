"""Building blocks: attention (SDPA vs explicit), rotary embedding, RMSNorm, linear attention, mel bands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from stemflow.models import load_model
from stemflow.models.layers import (
    Attention,
    LinearAttention,
    PolarEmbedding,
    RMSNorm,
    RotaryEmbedding,
    attend,
    attend_explicit,
)
from stemflow.models.mel_bands import hz_to_mel, mel_band_membership, mel_filterbank, mel_to_hz

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "roformer"


@pytest.mark.parametrize("scale", [None, 8.0])
def test_sdpa_matches_explicit_softmax_attention(scale: float | None) -> None:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 4, 37, 16, generator=generator) for _ in range(3))
    if scale is not None:  # the linear-attention regime: unit-norm rows, large fixed scale
        q, k = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
    fused = attend(q, k, v, scale=scale)
    explicit = attend_explicit(q, k, v, scale=scale)
    torch.testing.assert_close(fused, explicit, rtol=0, atol=2e-6)
    # and against a float64 version written from the definition
    weights = torch.softmax(q.double() @ k.double().transpose(-1, -2) * (scale or 16**-0.5), dim=-1)
    torch.testing.assert_close(fused.double(), weights @ v.double(), rtol=0, atol=2e-6)


@pytest.mark.parametrize("fixture", ["bs_roformer_4stem", "mel_roformer_vocals"])
def test_model_with_explicit_attention_matches_sdpa(fixture: str) -> None:
    model = load_model(FIXTURES / fixture / "config.yaml", FIXTURES / fixture / "model.ckpt")
    x = torch.from_numpy(np.load(FIXTURES / fixture / "forward_input.npy"))
    with torch.inference_mode():
        fused = model(x)
        for module in model.modules():
            if isinstance(module, (Attention, LinearAttention)):
                module.flash = False
        explicit = model(x)
    assert (fused - explicit).abs().max().item() <= 1e-6


def test_rotary_freqs_are_standard_theta_10000() -> None:
    rotary = RotaryEmbedding(16)
    expected = torch.tensor([10000.0 ** (-2 * i / 16) for i in range(8)])
    torch.testing.assert_close(rotary.freqs.data, expected)
    assert not rotary.freqs.requires_grad


def test_rotary_rotates_adjacent_pairs() -> None:
    """Against the interleaved formulation: t * cos(repeat(f)) + rotate_half_pairs(t) * sin(repeat(f))."""
    rotary = RotaryEmbedding(8)
    t = torch.randn(2, 3, 11, 8)
    positions = torch.arange(11.0)[:, None]
    angles = (positions * rotary.freqs.data).repeat_interleave(2, dim=-1)  # [n, d], pairs share a frequency
    pairs = t.unflatten(-1, (-1, 2))
    rotated_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    expected = t * angles.cos() + rotated_half * angles.sin()
    torch.testing.assert_close(rotary.rotate(t), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(rotary.rotate(t)[..., 0, :], t[..., 0, :])  # position 0: identity


def test_rotary_scores_depend_on_relative_position_only() -> None:
    rotary = RotaryEmbedding(16)
    q, k = torch.randn(16), torch.randn(16)
    sequence_q = q.expand(20, 16)
    sequence_k = k.expand(20, 16)
    rq, rk = rotary.rotate(sequence_q), rotary.rotate(sequence_k)
    assert torch.allclose(rq[5] @ rk[2], rq[15] @ rk[12], atol=1e-5)
    assert not torch.allclose(rq[5] @ rk[2], rq[5] @ rk[4], atol=1e-3)


def test_rms_norm_uses_gamma_and_sqrt_dim() -> None:
    norm = RMSNorm(6)
    norm.gamma.data = torch.arange(1.0, 7.0)
    x = torch.randn(4, 6)
    expected = x / x.pow(2).mean(dim=-1, keepdim=True).sqrt() * norm.gamma.data
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-6)


def test_linear_attention_matches_its_definition() -> None:
    torch.manual_seed(0)
    layer = LinearAttention(dim=12, dim_head=4, heads=3).eval()
    layer.temperature.data = torch.tensor([0.5, -0.2, 0.1]).view(3, 1, 1)
    x = torch.randn(2, 9, 12)
    with torch.inference_mode():
        out = layer(x)
        normed = layer.norm(x)
        qkv = normed @ layer.to_qkv[0].weight.T  # [b, n, 3 h d]
        q, k, v = qkv.view(2, 9, 3, 3, 4).unbind(2)  # each [b, n, h, d]
        heads = []
        for h in range(3):
            qh = torch.nn.functional.normalize(q[:, :, h].transpose(1, 2), dim=-1)  # [b, d, n]
            kh = torch.nn.functional.normalize(k[:, :, h].transpose(1, 2), dim=-1)
            qh = qh * math.exp(layer.temperature[h].item())
            weights = torch.softmax(qh @ kh.transpose(1, 2) * 8, dim=-1)  # [b, d, d]
            heads.append((weights @ v[:, :, h].transpose(1, 2)).transpose(1, 2))  # [b, n, d]
        expected = torch.cat(heads, dim=-1) @ getattr(layer.to_out, "1").weight.T
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_mel_scale_known_values() -> None:
    assert hz_to_mel(0.0) == 0.0
    assert hz_to_mel(1000.0) == pytest.approx(15.0)
    assert hz_to_mel(6400.0) == pytest.approx(15.0 + 27.0)  # log part: 27 mels per factor 6.4
    frequencies = np.array([0.0, 440.0, 999.0, 1000.0, 5000.0, 22050.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(frequencies)), frequencies, rtol=1e-12)


def test_mel_filterbank_is_slaney_normalised() -> None:
    weights = mel_filterbank(44100, 2048, 60)
    assert weights.shape == (60, 1025) and weights.dtype == np.float32
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(22050.0), 62))
    # Slaney normalisation: each triangle peaks at 2 / (bandwidth in Hz)
    peaks = 2.0 / (edges[2:] - edges[:-2])
    assert np.all(weights.max(axis=1) <= peaks * (1 + 1e-6))
    assert np.all(weights.max(axis=1) >= 0.5 * peaks)


def test_mel_bands_match_reference_layout() -> None:
    meta = json.loads((FIXTURES / "mel_roformer_vocals" / "meta.json").read_text())
    membership = mel_band_membership(44100, 2048, 60)
    ranges = []
    for band in membership:
        bins = np.flatnonzero(band)
        assert np.array_equal(bins, np.arange(bins[0], bins[-1] + 1))  # contiguous
        ranges.append(f"{bins[0]}-{bins[-1]}")
    assert ranges == meta["mel_band_bin_ranges_inclusive"]
    assert membership.sum(axis=0).max() == meta["num_bands_per_freq_max"]
    widths = [str(4 * n) for n in membership.sum(axis=1)]  # stereo x (re, im)
    assert " ".join(widths) == meta["band_split_dim_inputs"]


def test_polar_embedding_scores_follow_the_pope_formula() -> None:
    """q'.k' = sum_j softplus(q_j) softplus(k_j) cos((m - n) w_j - bias_hj), bias clamped to [-2 pi, 0]."""
    pope = PolarEmbedding(8, heads=2)
    pope.bias.data = torch.tensor([[-0.3, 0.5, -7.0, -1.0, 0.0, -2.0, -0.1, -6.5], [0.0] * 8])
    q, k = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    q_out, k_out = pope.apply_to_qk(q, k)
    assert q_out.shape == k_out.shape == (1, 2, 6, 16)
    inv_freqs = torch.tensor([10000.0 ** (-j / 8) for j in range(8)])
    torch.testing.assert_close(pope.inv_freqs, inv_freqs)
    bias = pope.bias.data.clamp(-2 * math.pi, 0)
    softplus = torch.nn.functional.softplus
    for m, n, h in [(4, 1, 0), (5, 2, 0), (2, 5, 1), (3, 3, 0)]:
        magnitudes = softplus(q[0, h, m]) * softplus(k[0, h, n])
        expected = (magnitudes * torch.cos((m - n) * inv_freqs - bias[h])).sum()
        torch.testing.assert_close(q_out[0, h, m] @ k_out[0, h, n], expected, rtol=1e-5, atol=1e-5)
