"""benchmarks/bench_efficiency.py: FLOP counting, the matmul peak, and the profile summary on the fixture model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from stemflow.models import build_model
from stemflow.models.config import load_config

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "roformer" / "bs_roformer_4stem"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench_efficiency = _load("bench_efficiency")


def test_meta_device_count_is_the_cpu_count_plus_attention() -> None:
    chunk = 3528
    flops, per_op, device = bench_efficiency.count_flops(FIXTURE / "config.yaml", chunk)
    assert device == "meta"
    model = build_model(load_config(FIXTURE / "config.yaml")).eval()
    # MFU counts the reference's (useful) FLOPs: the meta device runs the per-band modules, and so
    # does this CPU count; the grouped kernels add the multiplications by their zero padding.
    model.grouped_band_kernels = False
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.separate_chunks(torch.zeros(1, 2, chunk))
    # On the CPU, FlopCounterMode has no formula for the fused attention kernel
    # (aten::_scaled_dot_product_flash_attention_for_cpu) and counts it as 0; on the meta
    # device attention runs as two bmm's (Q K^T and A V), 4 * batch * heads * n^2 * dim_head.
    # Fixture: heads 2, dim_head 16, 9 frames, 62 bands, one time and one freq transformer.
    attention = 4 * (62 * 2) * 9**2 * 16 + 4 * (9 * 2) * 62**2 * 16
    assert flops - counter.get_total_flops() == attention == 5_071_104
    assert sum(per_op.values()) == flops


def test_flops_grow_with_the_chunk() -> None:
    short, _, _ = bench_efficiency.count_flops(FIXTURE / "config.yaml", 3528)
    long, _, _ = bench_efficiency.count_flops(FIXTURE / "config.yaml", 2 * 3528)
    # 9 -> 17 STFT frames: linear layers scale with frames, time attention faster.
    assert 17 / 9 * 0.99 < long / short < (17 / 9) ** 2


def test_matmul_peak_is_a_plausible_rate() -> None:
    peak = bench_efficiency.matmul_peak(torch.float32, 256, seconds=0.05)
    assert 1e8 < peak < 1e14


@pytest.mark.parametrize(
    ("name", "category"),
    [("aten::addmm", "matmul"), ("aten::bmm", "matmul"), ("aten::_fft_r2c", "fft/stft"),
     ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"), ("aten::copy_", "data movement"),
     ("aten::gelu", "norm/activation"), ("aten::mul", "elementwise"), ("aten::something_new", "other")],
)
def test_categorise(name: str, category: str) -> None:
    assert bench_efficiency.categorise(name) == category


def test_profile_summary_adds_up() -> None:
    model = build_model(load_config(FIXTURE / "config.yaml")).eval()
    x = torch.from_numpy(np.load(FIXTURE / "forward_input.npy"))
    profile = bench_efficiency.profile_forward(model, x, top=5)
    assert profile["total_self_cpu_s"] > 0
    assert sum(c["percent"] for c in profile["categories"].values()) == pytest.approx(100.0)
    assert len(profile["top_ops"]) == 5
    assert profile["top_ops"][0]["percent"] >= profile["top_ops"][-1]["percent"]
    assert "matmul" in profile["categories"]
