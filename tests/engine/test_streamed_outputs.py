"""The streamed path's output stems (two_stems, sum_to_mixture, a selection) equal the in-memory path's.

The in-memory reference is what ``stemflow separate --in-memory`` writes:
:func:`separate_track` (``sum_to_mixture`` applied in
:func:`stemflow.engine.track.measure_track`) then
:func:`stemflow.engine.track.split_two_stems`. Outputs are float WAV, so the
files hold the float32 samples as computed: the comparison is exact.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from stemflow.engine.separator import Separator
from stemflow.engine.streaming import separate_file
from stemflow.engine.track import separate_track, split_two_stems
from stemflow.errors import ConfigError

RATE = 44100


def in_memory(separator: Separator, path: Path, *, two_stems: str | None, sum_to_mixture: bool) -> dict[str, Any]:
    stems = separate_track(separator, path, name="in", measure_quality=False, sum_to_mixture=sum_to_mixture).stems
    return split_two_stems(stems, two_stems) if two_stems else stems


def streamed(separator: Separator, path: Path, folder: Path, names: tuple[str, ...], **options: Any) -> dict[str, Any]:
    outputs = {name: folder / f"{name}.wav" for name in names}
    separate_file(separator, path, outputs, block_seconds=0.013, bit_depth=32, **options)
    return {name: sf.read(file, dtype="float32", always_2d=True)[0].T for name, file in outputs.items()}


@pytest.mark.parametrize(
    ("two_stems", "sum_to_mixture", "names"),
    [
        ("vocals", False, ("vocals", "no_vocals")),
        ("vocals", True, ("vocals", "no_vocals")),
        ("drums", True, ("no_drums",)),
        (None, True, ("drums", "bass", "other", "vocals")),
        (None, True, ("other",)),
    ],
)
def test_two_stems_and_sum_to_mixture_stream_to_the_in_memory_stems(
    tmp_path: Path, stand_ins: Any, two_stems: str | None, sum_to_mixture: bool, names: tuple[str, ...]
) -> None:
    config = stand_ins.make_config(512, 4, stems=("drums", "bass", "other", "vocals"))
    separator = Separator(stand_ins.ConvModel(config, seed=7), batch_size=3)
    mixture = stand_ins.random_mix(20011, seed=4)
    sf.write(tmp_path / "in.wav", mixture.T, RATE, subtype="FLOAT")
    expected = in_memory(separator, tmp_path / "in.wav", two_stems=two_stems, sum_to_mixture=sum_to_mixture)
    got = streamed(separator, tmp_path / "in.wav", tmp_path, names, two_stems=two_stems, sum_to_mixture=sum_to_mixture)
    for name in names:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    if two_stems == "vocals" and sum_to_mixture:  # then no_vocals is exactly mixture - vocals, to float rounding
        np.testing.assert_allclose(got["vocals"] + got["no_vocals"], mixture, atol=2e-6, rtol=0)


def test_sum_to_mixture_streams_for_a_model_with_its_own_segmentation(tmp_path: Path) -> None:
    """A Spleeter (frame segments, summed outputs): the block's input is still readable when it is yielded."""
    from test_frame_segments import mix, small_spleeter  # this folder's small random-weight Spleeter

    model = small_spleeter(seed=5)
    separator = Separator(model, batch_size=2)
    sf.write(tmp_path / "in.wav", mix(30001, seed=2).T, RATE, subtype="FLOAT")
    names = separator.all_stems
    with pytest.raises(ConfigError, match="neither 'instrumental' nor 'other'"):
        streamed(separator, tmp_path / "in.wav", tmp_path, names, sum_to_mixture=True)
    expected = in_memory(separator, tmp_path / "in.wav", two_stems="vocals", sum_to_mixture=False)
    got = streamed(separator, tmp_path / "in.wav", tmp_path, ("vocals", "no_vocals"), two_stems="vocals")
    for name in ("vocals", "no_vocals"):
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    model.config = dataclasses.replace(model.config, instruments=("vocals", "other"))  # "other" takes the residual
    separator = Separator(model, batch_size=2)
    expected = in_memory(separator, tmp_path / "in.wav", two_stems=None, sum_to_mixture=True)
    got = streamed(separator, tmp_path / "in.wav", tmp_path, ("vocals", "other"), sum_to_mixture=True)
    for name in ("vocals", "other"):
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_outputs_the_options_do_not_give_are_refused_before_anything_is_written(tmp_path: Path, stand_ins: Any) -> None:
    config = stand_ins.make_config(256, 2, stems=("vocals", "other"))
    separator = Separator(stand_ins.GainModel(config))
    sf.write(tmp_path / "in.wav", stand_ins.random_mix(1000).T, RATE, subtype="FLOAT")
    for outputs, options, message in (
        ({"vocals": "v.wav"}, {"two_stems": "piano"}, "two_stems 'piano' is not one of"),
        ({"other": "o.wav"}, {"two_stems": "vocals"}, r"unknown stems \['other'\]"),
        ({"no_vocals": "n.wav"}, {}, r"unknown stems \['no_vocals'\]"),
    ):
        with pytest.raises(ConfigError, match=message):
            separate_file(separator, tmp_path / "in.wav", {k: tmp_path / v for k, v in outputs.items()}, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]
