"""Tests of the separation engine (stemflow.engine.separator) with small stand-in models.

The oracle is a literal batch-size-1 rendition of the community ``demix``
recipe (whole-track reflect padding, per-chunk padding, windows, division),
written independently of the engine's sliding accumulator.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from stemflow.engine.separator import Separator
from stemflow.errors import AudioDecodeError, ConfigError, StemflowError

SAMPLE_RATE = 44100


def reference_demix(model: nn.Module, mix: torch.Tensor, chunk_size: int, num_overlap: int) -> np.ndarray:
    """The recipe chunk by chunk with the whole-track padding: float32 ``[S, 2, N]``."""
    step = chunk_size // num_overlap
    border = chunk_size - step
    fade = chunk_size // 10
    length = mix.shape[-1]
    padded = length > 2 * border and border > 0
    if padded:
        mix = nn.functional.pad(mix, (border, border), mode="reflect")
    window = torch.ones(chunk_size)
    if fade:
        window[-fade:] = torch.linspace(1, 0, fade)
        window[:fade] = torch.linspace(0, 1, fade)
    total = mix.shape[-1]
    result = torch.zeros((model.num_output_stems,) + mix.shape)
    counter = torch.zeros((model.num_output_stems,) + mix.shape)
    start = 0
    while start < total:
        part = mix[:, start : start + chunk_size]
        valid = part.shape[-1]
        mode = "reflect" if valid > chunk_size // 2 else "constant"
        part = nn.functional.pad(part, (0, chunk_size - valid), mode=mode)
        y = model.separate_chunks(part.unsqueeze(0))[0]
        w = window.clone()
        if border > 0:
            if start == 0:
                w[:fade] = 1
            if start + step >= total:
                w[chunk_size - fade :] = 1
        else:
            w[:] = 1  # no overlap: no cross-fade (the reference would zero chunk edges here)
        result[..., start : start + valid] += y[..., :valid] * w[:valid]
        counter[..., start : start + valid] += w[:valid]
        start += step
    out = np.nan_to_num((result / counter).numpy(), nan=0.0)
    return out[..., border:-border] if padded else out


@settings(max_examples=150, deadline=None)
@given(
    chunk_size=st.integers(1, 120),
    num_overlap=st.integers(1, 12),
    length=st.integers(1, 700),
    batch_size=st.integers(1, 5),
)
def test_identity_model_reconstructs_any_length(chunk_size, num_overlap, length, batch_size, stand_ins):
    num_overlap = min(num_overlap, chunk_size)
    model = stand_ins.GainModel(stand_ins.make_config(chunk_size, num_overlap))
    mix = stand_ins.random_mix(length, seed=length)
    out = Separator(model, batch_size=batch_size).separate(mix, SAMPLE_RATE)
    assert out["vocals"].shape == (2, length)
    assert out["vocals"].dtype == np.float32
    np.testing.assert_allclose(out["vocals"], mix, atol=1e-6, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    chunk_size=st.integers(2, 90),
    num_overlap=st.integers(1, 6),
    length=st.integers(1, 400),
)
def test_matches_chunk_by_chunk_reference(chunk_size, num_overlap, length, stand_ins):
    num_overlap = min(num_overlap, chunk_size)
    config = stand_ins.make_config(chunk_size, num_overlap, stems=("drums", "bass"))
    model = stand_ins.ConvModel(config).eval()
    mix = stand_ins.random_mix(length, seed=7)
    with torch.no_grad():
        expected = reference_demix(model, torch.from_numpy(mix), chunk_size, num_overlap)
    out = Separator(model, batch_size=3).separate(mix, SAMPLE_RATE)
    got = np.stack([out["drums"], out["bass"]])
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("length", [1, 50, 400, 401, 799, 800, 801, 5000])
def test_batch_size_does_not_change_output(length, stand_ins):
    config = stand_ins.make_config(400, 4, stems=("drums", "bass", "other", "vocals"))
    model = stand_ins.ConvModel(config, seed=3)
    mix = stand_ins.random_mix(length, seed=length)
    outs = [Separator(model, batch_size=b).separate(mix, SAMPLE_RATE) for b in (1, 2, 4)]
    for other in outs[1:]:
        for stem in config.stems:
            np.testing.assert_allclose(other[stem], outs[0][stem], atol=1e-6, rtol=0)
    # and it is not trivially the input
    assert np.abs(outs[0]["drums"] - mix).max() > 0.1


def test_gain_model_and_complement_is_mixture_minus_target(stand_ins):
    config = stand_ins.make_config(300, 2, stems=("vocals", "other"), target="vocals")
    model = stand_ins.GainModel(config, gains=(0.25,))
    mix = stand_ins.random_mix(2000)
    sep = Separator(model, batch_size=2)
    assert sep.stems == ("vocals", "instrumental")
    out = sep.separate(torch.from_numpy(mix), SAMPLE_RATE)
    np.testing.assert_allclose(out["vocals"], 0.25 * mix, atol=1e-6, rtol=0)
    np.testing.assert_allclose(out["instrumental"], mix - out["vocals"], atol=1e-7, rtol=0)
    np.testing.assert_allclose(out["instrumental"], 0.75 * mix, atol=1e-6, rtol=0)


def test_complement_uses_unpadded_mixture_with_nonlinear_model(stand_ins):
    config = stand_ins.make_config(64, 4, stems=("vocals", "other"), target="vocals")
    model = stand_ins.ConvModel(config, seed=5)
    mix = stand_ins.random_mix(1000)
    out = Separator(model).separate(mix, SAMPLE_RATE)
    np.testing.assert_array_equal(out["instrumental"], mix - out["vocals"])


def test_stems_selection_and_defaults_from_config(stand_ins):
    config = stand_ins.make_config(256, 4, stems=("drums", "bass", "other", "vocals"))
    model = stand_ins.GainModel(config, gains=(1.0, 2.0, 3.0, 4.0))
    sep = Separator(model, stems=["vocals", "bass"])
    assert (sep.chunk_size, sep.num_overlap, sep.batch_size) == (256, 4, 1)
    assert sep.stems == ("bass", "vocals")  # config order
    mix = stand_ins.random_mix(700)
    out = sep.separate(mix, SAMPLE_RATE)
    assert list(out) == ["bass", "vocals"]
    np.testing.assert_allclose(out["vocals"], 4 * mix, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="unknown stems"):
        Separator(model, stems=["piano"])


def test_overrides_change_the_plan(stand_ins):
    model = stand_ins.GainModel(stand_ins.make_config(256, 4))
    sep = Separator(model, chunk_size=100, num_overlap=2, batch_size=3)
    plan = sep.plan(1000)
    assert (plan.chunk_size, plan.step, plan.pad) == (100, 50, 50)
    assert [c.start for c in plan.chunks][:3] == [0, 50, 100]


def test_input_validation(stand_ins):
    model = stand_ins.GainModel(stand_ins.make_config(128, 4))
    sep = Separator(model)
    good = stand_ins.random_mix(500)
    with pytest.raises(AudioDecodeError, match="48000 Hz"):
        sep.separate(good, 48000)
    with pytest.raises(AudioDecodeError, match="stereo"):
        sep.separate(good[:1], SAMPLE_RATE)
    with pytest.raises(AudioDecodeError, match="stereo"):
        sep.separate(np.zeros((3, 100), np.float32), SAMPLE_RATE)
    with pytest.raises(AudioDecodeError, match="empty"):
        sep.separate(np.zeros((2, 0), np.float32), SAMPLE_RATE)
    with pytest.raises(AudioDecodeError, match="floating"):
        sep.separate(np.zeros((2, 10), np.int16), SAMPLE_RATE)
    for bad_value in (np.nan, np.inf):
        bad = good.copy()
        bad[1, 17] = bad_value
        with pytest.raises(AudioDecodeError, match="NaN or infinite"):
            sep.separate(bad, SAMPLE_RATE)
    assert np.isfinite(good).all()  # input not mutated


def test_settings_validation(stand_ins):
    model = stand_ins.GainModel(stand_ins.make_config(128, 4))
    with pytest.raises(ConfigError, match="precision"):
        Separator(model, precision="int8")
    with pytest.raises(ConfigError, match="CUDA"):
        Separator(model, precision="float16")
    with pytest.raises(ConfigError, match="num_overlap"):
        Separator(model, num_overlap=500)
    with pytest.raises(ConfigError, match="batch_size"):
        Separator(model, batch_size=0)
    with pytest.raises(ConfigError, match="config"):
        Separator(nn.Linear(2, 2))


def test_model_output_shape_is_checked(stand_ins):
    class Squeezed(stand_ins.GainModel):
        def separate_chunks(self, x: torch.Tensor) -> torch.Tensor:
            return x  # stem axis dropped

    with pytest.raises(StemflowError, match="expected"):
        Separator(Squeezed(stand_ins.make_config(64, 2))).separate(stand_ins.random_mix(300), SAMPLE_RATE)


def test_bfloat16_autocast_on_cpu_is_close(stand_ins):
    config = stand_ins.make_config(512, 4, stems=("drums", "bass"))

    class LinearModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.num_output_stems = 2
            self.mix = nn.Linear(2, 4)
            with torch.no_grad():
                self.mix.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, -0.5]]))
                self.mix.bias.zero_()

        def separate_chunks(self, x: torch.Tensor) -> torch.Tensor:
            y = self.mix(x.transpose(1, 2)).transpose(1, 2)  # autocast runs this in bf16
            return y.reshape(x.shape[0], 2, 2, x.shape[-1])

    model = LinearModel()
    mix = stand_ins.random_mix(3000)
    full = Separator(model).separate(mix, SAMPLE_RATE)
    half = Separator(model, precision="bfloat16").separate(mix, SAMPLE_RATE)
    for stem in ("drums", "bass"):
        assert half[stem].dtype == np.float32
        err = half[stem] - full[stem]
        sdr = 10 * np.log10(np.sum(full[stem] ** 2) / np.sum(err**2))
        assert 35 < sdr < 80  # bf16 has ~8 bits of mantissa: close, but really bf16


def test_separate_many_packs_tracks_and_matches_one_by_one(stand_ins):
    config = stand_ins.make_config(200, 4, stems=("vocals", "other"), target="vocals")
    model = stand_ins.ConvModel(config, seed=9)
    tracks = [stand_ins.random_mix(n, seed=n) for n in (1, 300, 5000, 77, 1234)]
    sep = Separator(model, batch_size=4)
    together = sep.separate_many(tracks, SAMPLE_RATE)
    assert len(together) == len(tracks)
    one_by_one = Separator(model, batch_size=1)
    for mix, out in zip(tracks, together):
        alone = one_by_one.separate(mix, SAMPLE_RATE)
        assert list(out) == ["vocals", "instrumental"]
        for stem in out:
            assert out[stem].shape == mix.shape
            np.testing.assert_allclose(out[stem], alone[stem], atol=1e-6, rtol=0)
    with pytest.raises(AudioDecodeError, match="stereo"):
        sep.separate_many([tracks[1], tracks[2][:1]], SAMPLE_RATE)


def test_accumulator_memory_is_per_track_in_flight(stand_ins):
    from stemflow.engine.overlap_add import OverlapAdd

    plan = Separator(stand_ins.GainModel(stand_ins.make_config(100, 4)), batch_size=2).plan(10_000)
    accumulator = OverlapAdd(plan, 1, span=100 + 2 * 25)
    assert accumulator._weights.numel() == 0  # nothing allocated before the first chunk
    sizes = []
    for chunk in plan.chunks:
        accumulator.add(chunk, torch.ones(1, 2, 100))
        sizes.append(accumulator._weights.numel())
        if chunk.index % 2 == 1 or chunk.index == len(plan.chunks) - 1:
            block = accumulator.pop(plan.final_before(chunk.index))
            assert torch.allclose(block.stems, torch.ones(()))
    assert max(sizes) == 150  # chunk + batch * step, however long the track
    assert accumulator._weights.numel() == 0  # freed when the track is finished


def test_accepts_float64_big_endian_and_read_only_arrays(stand_ins):
    model = stand_ins.GainModel(stand_ins.make_config(128, 4), gains=(2.0,))
    sep = Separator(model)
    mix = stand_ins.random_mix(1000)
    expected = sep.separate(mix, SAMPLE_RATE)["vocals"]
    frozen = mix.copy()
    frozen.flags.writeable = False
    for variant in (mix.astype(np.float64), mix.astype(">f4"), frozen, np.asfortranarray(mix)):
        np.testing.assert_allclose(sep.separate(variant, SAMPLE_RATE)["vocals"], expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(expected, 2 * mix, atol=1e-6, rtol=0)


def test_progress_reports_every_block_up_to_the_track_length(stand_ins) -> None:
    separator = Separator(stand_ins.ConvModel(stand_ins.make_config(64, 2)), batch_size=2)
    calls: list[tuple[int, int]] = []
    audio = np.random.default_rng(5).standard_normal((2, 1000)).astype(np.float32)
    separator.separate(audio, separator.sample_rate, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (1000, 1000)
    assert all(total == 1000 for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


@pytest.mark.slow
def test_compiled_separator_matches_eager(stand_ins) -> None:
    audio = np.random.default_rng(6).standard_normal((2, 700)).astype(np.float32)
    eager = Separator(stand_ins.ConvModel(stand_ins.make_config(64, 2)), batch_size=4).separate(audio, SAMPLE_RATE)
    compiled_separator = Separator(stand_ins.ConvModel(stand_ins.make_config(64, 2)), batch_size=4, compile=True)
    compiled = compiled_separator.separate(audio, SAMPLE_RATE)
    assert compiled_separator.compiled  # compiled on this machine (gcc is installed), not the fallback
    for stem in eager:
        np.testing.assert_allclose(compiled[stem], eager[stem], atol=1e-6)
