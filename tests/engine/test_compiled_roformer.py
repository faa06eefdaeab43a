"""The compiled forward (inductor on this CPU) of the golden Roformer fixtures: equal to eager, compiled once.

``Separator(compile=True)`` pads every batch to ``batch_size`` rows, so tracks of
different lengths (and their short last batches) all reach the graph in one
shape: ``torch._dynamo``'s counters must not move after the first track (no new
graph, no recompilation, no graph break), and the stems must equal the eager
ones within 1e-4.

Inductor's C++ build of the Mel-RoFormer fixture takes about 7 minutes on this
2-core machine (it took hours before :mod:`stemflow.engine.compiled` made a CPU
compile emit OpenMP kernels): it runs in the suite; the BS-RoFormer fixture,
another such build, runs with ``STEMFLOW_COMPILE_TESTS=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from stemflow.engine.separator import Separator
from stemflow.models import load_model

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "roformer"


OPT_IN = pytest.mark.skipif(os.environ.get("STEMFLOW_COMPILE_TESTS") != "1",
                            reason="a second ~7 min inductor build on a 2-core CPU: set STEMFLOW_COMPILE_TESTS=1")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # one C++ build of a few minutes, longer on a loaded machine
@pytest.mark.parametrize("name", ["mel_roformer_vocals", pytest.param("bs_roformer_4stem", marks=OPT_IN)])
def test_compiled_equals_eager_and_never_recompiles_across_track_lengths(name: str) -> None:
    folder = FIXTURES / name
    model = load_model(folder / "config.yaml", folder / "model.ckpt")
    mix = np.load(folder / "demix_input.npy")
    chunk = model.config.audio.chunk_size
    # three lengths: one full batch and a tail, a single short batch, a track shorter than a chunk
    tracks = [mix, mix[:, : chunk + chunk // 3], mix[:, : chunk // 2 + 17]]
    eager = Separator(model, batch_size=3).separate_many(tracks, model.config.audio.sample_rate)
    torch._dynamo.reset()
    counters.clear()
    compiled_separator = Separator(model, batch_size=3, compile=True)
    compiled = [compiled_separator.separate(tracks[0], model.config.audio.sample_rate)]
    first = (dict(counters["stats"]), dict(counters["frames"]))  # what compiling the forward took
    compiled += [compiled_separator.separate(track, model.config.audio.sample_rate) for track in tracks[1:]]
    assert compiled_separator.compiled  # inductor ran (gcc is installed), not the eager fallback
    for want, got in zip(eager, compiled):
        for stem in compiled_separator.stems:
            assert got[stem].shape == want[stem].shape
            assert np.abs(got[stem] - want[stem]).max() <= 1e-4, stem
    # compiled once, by the first track: the other lengths (a short last batch, a track under one chunk)
    # reuse the same graphs (the forward is two frames for dynamo, each compiled once)
    assert first[0]["unique_graphs"] >= 1 and first[1]["ok"] == first[1]["total"]
    assert (dict(counters["stats"]), dict(counters["frames"])) == first
    assert not counters["recompiles"], dict(counters["recompiles"])
    assert not counters["graph_break"], dict(counters["graph_break"])
