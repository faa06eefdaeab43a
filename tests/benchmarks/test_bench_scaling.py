"""benchmarks/bench_scaling.py: one case in a fresh subprocess gives the engine's own output and a real peak RSS."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from stemflow.engine.separator import Separator
from stemflow.models import load_model

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench_scaling = _load("bench_scaling")


def test_a_case_runs_in_a_child_and_matches_an_in_process_separation(tmp_path: Path) -> None:
    config, ckpt = bench_scaling.model_files("fixture", tmp_path)
    inputs = [bench_scaling.track(tmp_path, 0.5, seed) for seed in (1, 2)]
    spec = {"config": config, "checkpoint": ckpt, "chunk_size": 3528, "num_overlap": 2, "batch_size": 2,
            "threads": 1, "precision": "float32", "tag": "t", "inputs": inputs,
            "save_prefix": str(tmp_path / "stems")}
    result = bench_scaling.run_one(spec, tmp_path)
    assert [t["track_s"] for t in result["tracks"]] == [0.5, 0.5]
    # 0.5 s = 22050 samples, reflect-padded by 1764 each side, a chunk every 1764 samples.
    assert all(t["separate_s"] > 0 and t["chunks"] == 15 for t in result["tracks"])
    assert 100 < result["peak_rss_mib"] < 4000  # torch alone is >100 MiB resident
    assert result["process_wall_s"] > result["load_model_s"]
    separator = Separator(load_model(config, ckpt), chunk_size=3528, num_overlap=2, batch_size=1)
    for index, path in enumerate(inputs):
        expected = np.stack(list(separator.separate(np.load(path), 44100).values()))
        got = np.load(tmp_path / f"stems_{index}.npy")
        assert got.shape == (4, 2, 22050)
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_tracks_are_cached_and_deterministic(tmp_path: Path) -> None:
    first = bench_scaling.track(tmp_path, 0.25, 3)
    again = bench_scaling.track(tmp_path, 0.25, 3)
    assert first == again
    np.testing.assert_array_equal(np.load(first), bench_scaling.music_like(0.25, 44100, seed=3))
