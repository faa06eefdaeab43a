"""Tests of the one-track path (stemflow.engine.track) that the CLI and the Ray stage share.

The model is the tiny Mel-Band-RoFormer fixture (``shared/fixtures/roformer/
mel_roformer_vocals``: one target, ``vocals``, plus the ``instrumental``
complement), so these tests run the real runtime, the real decoder and the real
quality measures on short signals.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemflow.audio.decode import load_audio
from stemflow.engine.separator import Separator
from stemflow.engine.track import decode_track, encode_stems, separate_decoded, separate_track
from stemflow.errors import AudioDecodeError, StemflowError
from stemflow.measures.quality import STEM_COLUMNS
from stemflow.models import load_model

RATE = 44100
TIMINGS = {"decode", "separate", "quality"}


@pytest.fixture(scope="module")
def separator(tiny_model) -> Separator:
    return Separator(load_model(tiny_model.config, tiny_model.checkpoint))


def music(seconds: float, *, sample_rate: int = RATE, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A short stereo signal with a level that passes the loudness gate: a chord, a pulse and some noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    pulse = np.sin(2 * np.pi * 2.0 * t) ** 8 * np.sin(2 * np.pi * 880.0 * t)
    rows = [0.3 * chord + 0.2 * pulse * (1 + 0.3 * c) + 0.03 * rng.standard_normal(t.size) for c in range(channels)]
    return np.stack(rows).astype(np.float32)


def write(path: Path, samples: np.ndarray, sample_rate: int = RATE, subtype: str = "PCM_24") -> Path:
    sf.write(path, samples.T, sample_rate, subtype=subtype)
    return path


def test_separate_track_gives_the_separator_stems_of_the_decoded_file(tmp_path, separator):
    path = write(tmp_path / "song.flac", music(1.5, sample_rate=48000, channels=1), 48000)
    result = separate_track(separator, path, name="song.flac")
    decoded = load_audio(path, sample_rate=RATE)
    expected = separator.separate(decoded.samples, RATE)
    assert result.name == "song.flac" and result.sample_rate == RATE
    assert list(result.stems) == ["vocals", "instrumental"] == list(separator.stems)
    np.testing.assert_array_equal(result.mixture, decoded.samples)
    for stem, audio in expected.items():
        assert result.stems[stem].shape == decoded.samples.shape == (2, 66150)  # 1.5 s at 44.1 kHz, stereo
        np.testing.assert_array_equal(result.stems[stem], audio)
    assert result.duration_s == pytest.approx(1.5)
    assert result.decoded.notes == ("mono duplicated to stereo", "resampled 48000 -> 44100 Hz (soxr VHQ)")
    assert (result.decoded.source_sample_rate, result.decoded.source_channels) == (48000, 1)


def test_separate_track_matches_the_reference_demix(tmp_path, separator, tiny_model):
    fixture = Path(tiny_model.config).parent
    mixture = np.load(fixture / "demix_input.npy")
    path = write(tmp_path / "demix.wav", mixture, subtype="FLOAT")  # float WAV: decoding is lossless
    result = separate_track(separator, path, name="demix.wav", measure_quality=False)
    np.testing.assert_array_equal(result.mixture, mixture)
    assert np.abs(result.stems["vocals"] - np.load(fixture / "demix_output.npy")[0]).max() <= 1e-5
    np.testing.assert_allclose(result.stems["instrumental"], mixture - result.stems["vocals"], atol=1e-7, rtol=0)


def test_quality_columns_are_present_and_finite(tmp_path, separator):
    result = separate_track(separator, write(tmp_path / "a.wav", music(1.2)), name="a.wav")
    assert set(result.stem_quality) == {"vocals", "instrumental"}
    for stem, columns in result.stem_quality.items():
        assert tuple(columns) == STEM_COLUMNS
        assert all(math.isfinite(value) for value in columns.values()), (stem, columns)
        assert columns["duration_s"] == pytest.approx(1.2) and columns["sample_rate_hz"] == RATE
    assert set(result.track_quality) == {"residual_db", "bleed_ratio_vocals", "bleed_ratio_instrumental"}
    assert all(math.isfinite(value) for value in result.track_quality.values())
    assert result.track_quality["residual_db"] < -100  # vocals + instrumental == mixture, to float rounding


def test_timings_are_recorded(tmp_path, separator):
    path = write(tmp_path / "a.wav", music(0.5))
    seen: list[tuple[int, int]] = []
    result = separate_track(separator, path, name="a.wav", progress=lambda done, total: seen.append((done, total)))
    assert set(result.timings_s) == TIMINGS
    assert all(seconds >= 0 for seconds in result.timings_s.values())
    assert result.timings_s["separate"] > 0
    assert seen and seen[-1] == (22050, 22050)
    unmeasured = separate_track(separator, path, name="a.wav", measure_quality=False)
    assert set(unmeasured.timings_s) == TIMINGS
    assert unmeasured.stem_quality == {} and unmeasured.track_quality == {}


def test_decode_errors_name_the_file(tmp_path, separator):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioDecodeError, match=r"empty\.wav: the file is empty"):
        separate_track(separator, tmp_path / "empty.wav", name=str(tmp_path / "empty.wav"))
    with pytest.raises(AudioDecodeError, match=r"^s3://bucket/junk\.wav: "):
        separate_track(separator, b"this is not audio at all" * 20, name="s3://bucket/junk.wav")
    broken = music(0.2)
    broken[1, 100] = np.nan
    with pytest.raises(AudioDecodeError, match=r"^nan\.wav: 1 of .* samples are NaN or infinite"):
        separate_track(separator, write(tmp_path / "nan.wav", broken, subtype="FLOAT").read_bytes(), name="nan.wav")


def test_separate_decoded_equals_separating_each_track(tmp_path, separator):
    packed = Separator(separator.model, batch_size=4)
    names = ["short.wav", "long.wav", "tail.wav"]
    signals = [music(0.1, seed=1), music(0.9, seed=2), music(0.35, seed=3)]
    paths = [write(tmp_path / name, signal) for name, signal in zip(names, signals)]
    tracks = [(decode_track(packed, path, name=name), name, 0.25 * i) for i, (path, name) in enumerate(zip(paths, names))]
    results = separate_decoded(packed, tracks)
    assert [r.name for r in results] == names
    for (decoded, name, decode_s), result, path in zip(tracks, results, paths):
        alone = separate_track(separator, path, name=name)
        np.testing.assert_array_equal(result.mixture, decoded.samples)
        for stem in separator.stems:
            np.testing.assert_allclose(result.stems[stem], alone.stems[stem], atol=1e-6, rtol=0)
        assert result.stem_quality.keys() == alone.stem_quality.keys()
        assert result.track_quality == pytest.approx(alone.track_quality, rel=1e-3, abs=1e-4)
        assert set(result.timings_s) == TIMINGS and result.timings_s["decode"] == decode_s
    assert separate_decoded(packed, []) == []


def test_separate_decoded_refuses_mixed_sample_rates(tmp_path, separator):
    path = write(tmp_path / "a.wav", music(0.1))
    at_model_rate = decode_track(separator, path, name="a.wav")
    other_rate = load_audio(path, sample_rate=22050)
    with pytest.raises(StemflowError, match="different sample rates"):
        separate_decoded(separator, [(at_model_rate, "a", 0.0), (other_rate, "b", 0.0)])


@pytest.mark.parametrize(("format", "bit_depth", "tolerance"), [("flac", 24, 2.0**-23), ("wav", 32, 0.0)])
def test_encode_stems_round_trips(tmp_path, separator, format, bit_depth, tolerance):
    result = separate_track(separator, write(tmp_path / "a.wav", music(0.4)), name="a.wav", measure_quality=False)
    encoded = encode_stems(result, format=format, bit_depth=bit_depth)
    assert list(encoded) == list(result.stems)
    for stem, item in encoded.items():
        assert (item.result.format, item.result.sample_rate, item.result.frames) == (format, RATE, 17640)
        assert item.result.clipped_samples == 0 and item.result.num_bytes == len(item.data)
        decoded = load_audio(item.data, sample_rate=None, name=f"a.wav/{stem}")
        assert decoded.sample_rate == RATE
        np.testing.assert_allclose(decoded.samples, result.stems[stem], atol=tolerance, rtol=0)
