"""The engine with the real RoFormer runtime against the reference ``demix`` fixtures.

``demix_output.npy`` is the reference run with batch size 1; our output must
match it for every batch size (the reference's own batch-4 output differs, and
we must not match that one where it differs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemflow.engine.separator import Separator
from stemflow.models import load_model

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "roformer"
SETS = sorted(p.name for p in FIXTURES.glob("*/") if (p / "demix_output.npy").exists())
TOLERANCE = 1e-5


@pytest.fixture(scope="module", params=SETS)
def fixture_set(request):
    folder = FIXTURES / request.param
    model = load_model(folder / "config.yaml", folder / "model.ckpt")
    return folder, model


def test_fixture_sets_present():
    assert SETS == ["bs_roformer_4stem", "mel_roformer_vocals"]


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_separate_matches_reference_demix(fixture_set, batch_size):
    folder, model = fixture_set
    mix = np.load(folder / "demix_input.npy")
    expected = np.load(folder / "demix_output.npy")
    sep = Separator(model, batch_size=batch_size)
    out = sep.separate(mix, model.config.audio.sample_rate)
    got = np.stack([out[stem] for stem in model.config.model_stems])
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE
    if model.config.complement_stem is not None:
        np.testing.assert_allclose(out[model.config.complement_stem], mix - got[0], atol=1e-7, rtol=0)
    batch4 = folder / "demix_output_batch4.npy"
    if batch4.exists():  # the reference's batch-dependent output is not ours
        assert np.abs(got - np.load(batch4)).max() > 100 * TOLERANCE


def test_separate_many_matches_reference_demix(fixture_set):
    folder, model = fixture_set
    mix = np.load(folder / "demix_input.npy")
    expected = np.load(folder / "demix_output.npy")
    sep = Separator(model, batch_size=4)
    outs = sep.separate_many([mix[:, :1000], mix, mix[:, :5000]], model.config.audio.sample_rate)
    got = np.stack([outs[1][stem] for stem in model.config.model_stems])
    assert np.abs(got - expected).max() <= TOLERANCE
    short = sep.separate(mix[:, :5000], model.config.audio.sample_rate)
    for stem in sep.stems:
        assert np.abs(outs[2][stem] - short[stem]).max() <= 1e-6
