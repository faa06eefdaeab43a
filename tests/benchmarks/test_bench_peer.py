"""benchmarks/bench_peer.py: its helpers, its mid-size config, and its child roles on the reference fixture.

The audio-separator checks run only where ``benchmarks/peer_setup.sh`` made the
peer virtualenv (``benchmarks/.peer-venv``); they pin the finding the benchmark
reports: audio-separator's Roformer forward equals ours without the reference's
DC-bin zeroing, and differs from the reference (and us) by exactly that.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from stemflow.models import build_model, load_model
from stemflow.models.config import load_config

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "roformer" / "bs_roformer_4stem"
PEER_PYTHON = ROOT / "benchmarks" / ".peer-venv" / "bin" / "python"


def _load(name: str) -> ModuleType:
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench_peer = _load("bench_peer")


def test_sdr_db_of_a_known_error() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((2, 10_000)).astype(np.float32)
    error = np.float32(0.01) * reference  # error power exactly 1e-4 of the signal's: 40 dB
    assert bench_peer.sdr_db(reference, reference + error) == pytest.approx(40.0, abs=1e-3)
    assert bench_peer.sdr_db(reference, reference) == math.inf


def test_music_like_is_deterministic_stereo_and_in_range() -> None:
    a = bench_peer.music_like(2.0, 44100, seed=1)
    b = bench_peer.music_like(2.0, 44100, seed=1)
    c = bench_peer.music_like(2.0, 44100, seed=2)
    assert a.shape == (2, 88200) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a).max() == pytest.approx(0.8)
    assert np.abs(a[0] - a[1]).max() > 0.05  # the channels differ


def test_mid_config_shares_the_real_configs_stft_bands_and_chunk() -> None:
    mid = load_config(bench_peer.MID_BS)
    real = load_config(bench_peer.REAL_BS)
    for key in ("freqs_per_bands", "stft_n_fft", "stft_hop_length", "stft_win_length", "num_stems", "dim_head", "heads"):
        assert mid.model[key] == real.model[key], key
    assert mid.audio.chunk_size == real.audio.chunk_size == 485100
    assert (mid.model["dim"], mid.model["depth"]) == (128, 4)
    # audio-separator derives its chunk from inference.dim_t: hop * (dim_t - 1) must be the chunk.
    assert mid.model["stft_hop_length"] * (mid.inference.extra["dim_t"] - 1) == mid.audio.chunk_size
    assert mid.stems == ("drums", "bass", "other", "vocals")
    params = sum(p.numel() for p in build_model(mid).parameters())
    assert 15e6 < params < 25e6


def test_yaml_tuples_load_like_stemflows_loader() -> None:
    raw = bench_peer.load_yaml_with_tuples(bench_peer.MID_BS)
    assert isinstance(raw["model"]["freqs_per_bands"], tuple)
    assert raw["model"]["freqs_per_bands"] == load_config(bench_peer.MID_BS).model["freqs_per_bands"]


def _ours_forward(tmp_path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    spec = {"config": str(FIXTURE / "config.yaml"), "checkpoint": str(FIXTURE / "model.ckpt"),
            "input": str(FIXTURE / "forward_input.npy"), "repeats": 2, "threads": 1,
            "output": str(tmp_path / "ours.npy"), "output_no_zero_dc": str(tmp_path / "ours_no_dc.npy")}
    threads = torch.get_num_threads()
    try:
        result = bench_peer.child_ours_forward(spec)
    finally:
        torch.set_num_threads(threads)
    return result, np.load(tmp_path / "ours.npy"), np.load(tmp_path / "ours_no_dc.npy")


def test_our_forward_child_reproduces_the_reference_and_the_no_dc_variant(tmp_path: Path) -> None:
    result, ours, no_dc = _ours_forward(tmp_path)
    assert len(result["forward_s"]) == 2 and result["zero_dc"] is True
    np.testing.assert_allclose(ours, np.load(FIXTURE / "forward_output.npy"), atol=1e-5, rtol=0)
    # The captured variant is exactly the model built with zero_dc=False.
    config = load_config(FIXTURE / "config.yaml")
    model = build_model(dataclasses.replace(config, model={**config.model, "zero_dc": False}))
    model.load_state_dict(load_model(FIXTURE / "config.yaml", FIXTURE / "model.ckpt").state_dict())
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(np.load(FIXTURE / "forward_input.npy"))).numpy()
    np.testing.assert_allclose(no_dc, expected, atol=1e-6, rtol=0)
    assert np.abs(no_dc - ours).max() > 1e-4  # the DC bin matters at this size


@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="peer venv missing: run benchmarks/peer_setup.sh")
def test_peer_forward_equals_ours_without_dc_zeroing(tmp_path: Path) -> None:
    _, ours, no_dc = _ours_forward(tmp_path)
    spec = {"config": str(FIXTURE / "config.yaml"), "checkpoint": str(FIXTURE / "model.ckpt"),
            "input": str(FIXTURE / "forward_input.npy"), "repeats": 1, "threads": 1, "tag": "fixture",
            "output": str(tmp_path / "peer.npy")}
    result = bench_peer.run_child(PEER_PYTHON, "peer-forward", spec, tmp_path, timeout_s=300)
    peer = np.load(tmp_path / "peer.npy")
    assert result["class"] == "BSRoformer" and result["peak_rss_mib"] > 50
    assert peer.shape == ours.shape
    assert np.abs(peer - no_dc).max() < 1e-5
    assert np.abs(peer - ours).max() > 1e-4
    assert np.abs(peer - np.load(FIXTURE / "forward_output.npy")).max() > 1e-4


def test_run_child_reports_a_failing_child(tmp_path: Path) -> None:
    spec = {"config": str(tmp_path / "missing.yaml"), "checkpoint": "x", "input": "x", "repeats": 1,
            "threads": 1, "tag": "bad", "output": str(tmp_path / "o.npy"), "output_no_zero_dc": "x"}
    with pytest.raises(RuntimeError, match="exit code"):
        bench_peer.run_child(Path(sys.executable), "ours-forward", spec, tmp_path)


def test_cli_rejects_a_missing_peer_venv(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_peer.py"), "--peer-python", str(tmp_path / "none"),
         "--out", str(tmp_path / "out.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "peer_setup.sh" in proc.stderr
    assert not (tmp_path / "out.json").exists()
