"""benchmarks/bench_gpu.py --smoke: the whole GPU script, run as documented, on this CPU with the tiny fixture model.

The compiled run is part of it only with ``STEMFLOW_COMPILE_TESTS=1``: inductor's C++ build
of the tiny fixture takes about seven minutes on a 2-core CPU
(``tests/engine/test_compiled_roformer.py`` has the same switch).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPILE = os.environ.get("STEMFLOW_COMPILE_TESTS") == "1"


@pytest.mark.slow
def test_smoke_mode_runs_every_step_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "gpu_smoke.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    modes = [] if COMPILE else ["--compile-modes"]  # an empty list: eager only
    result = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--smoke", "--device", "cpu", "--out", str(out),
                             *modes], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["track_seconds"] == 3.0 and set(report["matmul_peak_flops"]) == {"float32", "bfloat16"}
    (model,) = report["results"]
    assert model["config"] == "config.yaml" and model["flops_per_chunk"] > 0 and model["ops_per_1s_forward"] > 0
    sweep = {(row["precision"], row["batch"]) for row in model["forward"]}
    assert sweep == {(p, b) for p in ("float32", "bfloat16") for b in (1, 2)}
    assert all(0 < row["mfu"] and row["seconds_per_chunk"] > 0 for row in model["forward"])
    modes = {row["mode"]: row for row in model["track"]}
    assert set(modes) == ({"eager", "compile:default"} if COMPILE else {"eager"})
    if COMPILE:
        compiled = modes["compile:default"]
        # compiled once (inductor on this CPU), not recompiled by the second track of another length
        assert compiled["compiled"] and compiled["graphs"] == 1 and compiled["precision"] == "float32"
        assert min(compiled["sdr_vs_eager_db"].values()) > 80.0
    bf16 = next(row for row in model["track"] if row["precision"] == "bfloat16")
    assert 10.0 < min(bf16["sdr_vs_float32_db"].values()) < 100.0  # half precision: close, not equal
    assert ("peer" in model) == (importlib.util.find_spec("audio_separator") is not None)
