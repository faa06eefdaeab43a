"""Tests of the bounded-memory file-to-file path (stemflow.engine.streaming)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from stemflow.audio.encode import encode
from stemflow.engine.separator import Separator
from stemflow.engine.streaming import separate_file
from stemflow.errors import AudioDecodeError, ConfigError

SAMPLE_RATE = 44100


def without_peak_time(data: bytes) -> bytes:
    """File bytes with the time stamp of a float WAV's PEAK chunk zeroed (libsndfile writes the wall clock)."""
    at = data.find(b"PEAK", 0, 256)
    return data if at < 0 else data[: at + 12] + bytes(4) + data[at + 16 :]


def write_input(path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    sf.write(path, audio.T, sample_rate, subtype="FLOAT")


@pytest.mark.parametrize(
    ("length", "batch_size", "block_seconds"),
    [(1, 1, 0.001), (150, 2, 0.001), (1000, 1, 0.002), (9526, 4, 0.003), (20011, 3, 1.0)],
)
def test_streaming_equals_in_memory(tmp_path, length, batch_size, block_seconds, stand_ins):
    config = stand_ins.make_config(512, 4, stems=("drums", "bass", "other", "vocals"))
    sep = Separator(stand_ins.ConvModel(config, seed=11), batch_size=batch_size)
    mix = stand_ins.random_mix(length, seed=length)
    write_input(tmp_path / "in.wav", mix)
    expected = sep.separate(mix, SAMPLE_RATE)
    outputs = {stem: tmp_path / f"{stem}.wav" for stem in config.stems}
    seen = []
    result = separate_file(
        sep, tmp_path / "in.wav", outputs, block_seconds=block_seconds, bit_depth=32,
        progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert result.num_samples == length
    assert seen[-1] == (length, length)
    for stem, path in outputs.items():
        got, rate = sf.read(path, dtype="float32", always_2d=True)
        assert rate == SAMPLE_RATE and got.shape == (length, 2)
        np.testing.assert_allclose(got.T, expected[stem], atol=1e-7, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.wav"] + [f"{s}.wav" for s in config.stems])


def test_streaming_complement_and_mono_input(tmp_path, stand_ins):
    config = stand_ins.make_config(300, 2, stems=("vocals", "other"), target="vocals")
    sep = Separator(stand_ins.ConvModel(config, seed=2), batch_size=2)
    mono = stand_ins.random_mix(5000)[:1]
    write_input(tmp_path / "mono.wav", mono)
    outputs = {"instrumental": tmp_path / "inst.wav", "vocals": tmp_path / "voc.wav"}
    result = separate_file(sep, tmp_path / "mono.wav", outputs, block_seconds=0.01, bit_depth=32)
    assert result.mono_input
    stereo = np.repeat(mono, 2, axis=0)
    expected = sep.separate(stereo, SAMPLE_RATE)
    vocals = sf.read(outputs["vocals"], dtype="float32")[0].T
    instrumental = sf.read(outputs["instrumental"], dtype="float32")[0].T
    np.testing.assert_allclose(vocals, expected["vocals"], atol=1e-7, rtol=0)
    np.testing.assert_allclose(instrumental, stereo - vocals, atol=1e-7, rtol=0)


def test_flac_24_bit_output_is_quantised_in_memory_result(tmp_path, stand_ins):
    config = stand_ins.make_config(256, 4, stems=("vocals", "other"))
    sep = Separator(stand_ins.GainModel(config, gains=(0.5, 3.0)))
    mix = stand_ins.random_mix(3000)
    write_input(tmp_path / "in.wav", mix)
    outputs = {"vocals": tmp_path / "v.flac", "other": tmp_path / "o.flac"}
    result = separate_file(sep, tmp_path / "in.wav", outputs)
    assert sf.info(outputs["vocals"]).subtype == "PCM_24"
    got = sf.read(outputs["vocals"], dtype="float32")[0].T
    np.testing.assert_allclose(got, 0.5 * mix, atol=0.51 / 2**23 + 1e-7, rtol=0)
    # 3x gain exceeds full scale: saturated (not wrapped) and counted
    loud = sf.read(outputs["other"], dtype="float32")[0].T
    over = np.abs(3 * mix) > 1
    assert result.clipped_samples["other"] == int(over.sum()) > 0
    assert result.clipped_samples["vocals"] == 0
    np.testing.assert_allclose(loud[over], np.sign(mix[over]) * (1 - (mix[over] > 0) / 2**23), atol=1e-6)


@pytest.mark.parametrize(("extension", "bit_depth"), [("flac", 16), ("flac", 24), ("wav", 24), ("aiff", 16), ("wav", 32)])
def test_streamed_files_are_the_bytes_of_the_in_memory_encoder(tmp_path, extension, bit_depth, stand_ins):
    config = stand_ins.make_config(256, 4, stems=("vocals", "other"))
    sep = Separator(stand_ins.GainModel(config, gains=(0.5, 3.0)))  # 3x gain: saturation included
    mix = stand_ins.random_mix(6000)
    write_input(tmp_path / "in.wav", mix)
    outputs = {"vocals": tmp_path / f"v.{extension}", "other": tmp_path / f"o.{extension}"}
    result = separate_file(sep, tmp_path / "in.wav", outputs, block_seconds=0.01, bit_depth=bit_depth)
    expected = sep.separate(mix, SAMPLE_RATE)
    for stem, path in outputs.items():
        in_memory = encode(expected[stem], SAMPLE_RATE, format=extension, bit_depth=bit_depth)
        assert without_peak_time(path.read_bytes()) == without_peak_time(in_memory.data)
        assert result.clipped_samples[stem] == in_memory.result.clipped_samples
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.wav", f"v.{extension}", f"o.{extension}"])


def test_memory_is_bounded_by_chunks_not_track(tmp_path, stand_ins):
    config = stand_ins.make_config(1000, 4)
    sep = Separator(stand_ins.GainModel(config), batch_size=2)
    length = 200_000
    write_input(tmp_path / "long.wav", stand_ins.random_mix(length))
    result = separate_file(sep, tmp_path / "long.wav", {"vocals": tmp_path / "v.wav"}, block_seconds=0.05, bit_depth=32)
    block = round(0.05 * SAMPLE_RATE)
    # chunk + batch * step input samples kept, plus one block being read
    assert result.peak_buffered_frames <= 1000 + 2 * 250 + 250 + block
    np.testing.assert_allclose(sf.read(tmp_path / "v.wav", dtype="float32")[0].T, stand_ins.random_mix(length), atol=1e-6)


def test_failure_leaves_no_output_and_keeps_existing_file(tmp_path, stand_ins):
    config = stand_ins.make_config(256, 4, stems=("vocals", "other"))
    sep = Separator(stand_ins.GainModel(config))
    mix = stand_ins.random_mix(20000)
    mix[0, 15000] = np.nan
    write_input(tmp_path / "bad.wav", mix)
    (tmp_path / "v.flac").write_bytes(b"previous")
    outputs = {"vocals": tmp_path / "v.flac", "other": tmp_path / "o.flac"}
    with pytest.raises(AudioDecodeError, match="NaN"):
        separate_file(sep, tmp_path / "bad.wav", outputs, block_seconds=0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav", "v.flac"]
    assert (tmp_path / "v.flac").read_bytes() == b"previous"


def test_input_checks(tmp_path, stand_ins):
    config = stand_ins.make_config(256, 4, stems=("vocals", "other"))
    sep = Separator(stand_ins.GainModel(config))
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    with pytest.raises(AudioDecodeError, match="junk.wav: not decodable"):
        separate_file(sep, tmp_path / "junk.wav", {"vocals": tmp_path / "v.wav"})
    write_input(tmp_path / "ok.wav", stand_ins.random_mix(100))
    with pytest.raises(ConfigError, match="unknown stems"):
        separate_file(sep, tmp_path / "ok.wav", {"piano": tmp_path / "p.wav"})
    with pytest.raises(ConfigError, match="no output format for '.xyz'"):
        separate_file(sep, tmp_path / "ok.wav", {"vocals": tmp_path / "v.xyz"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.wav", "ok.wav"]


@pytest.mark.parametrize(("rate", "channels"), [(48000, 2), (48000, 4), (22050, 1)])
def test_streaming_applies_the_input_policy_like_load_audio(tmp_path, stand_ins, rate, channels):
    """Other rates and channel counts stream through the input policy and give the in-memory stems exactly."""
    from stemflow.audio.decode import load_audio

    config = stand_ins.make_config(512, 4, stems=("vocals", "other"))
    sep = Separator(stand_ins.ConvModel(config, seed=5), batch_size=2)
    mix = np.random.default_rng(3).uniform(-0.5, 0.5, (channels, 30011)).astype(np.float32)
    sf.write(tmp_path / "in.wav", mix.T, rate, subtype="FLOAT")
    decoded = load_audio(tmp_path / "in.wav", sample_rate=SAMPLE_RATE)
    expected = sep.separate(decoded.samples, SAMPLE_RATE)
    outputs = {stem: tmp_path / f"{stem}.wav" for stem in config.stems}
    result = separate_file(sep, tmp_path / "in.wav", outputs, block_seconds=0.05, bit_depth=32)
    assert result.num_samples == decoded.samples.shape[-1]
    assert result.notes == decoded.notes
    for stem, path in outputs.items():
        got = sf.read(path, dtype="float32", always_2d=True)[0].T
        np.testing.assert_array_equal(got, expected[stem])
