"""Decoding with soundfile: format round trips, channel policy, resampling, bad inputs.

All audio is generated in ``tmp_path``; ffmpeg-based containers live in
``test_audio_ffmpeg.py`` and the encoder's clipping policy in ``test_audio_encode.py``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemflow.audio import decode, ffmpeg, formats, resample
from stemflow.errors import AudioDecodeError

RATE = 44100


def sine(freq: float, rate: int, frames: int, amplitude: float = 0.5, channels: int = 2) -> np.ndarray:
    """``[channels, frames]`` float32 sine, channel ``c`` phase-shifted by ``c`` radians."""
    t = np.arange(frames) / rate
    rows = [amplitude * np.sin(2 * np.pi * freq * t + c) for c in range(channels)]
    return np.asarray(rows, dtype=np.float32)


def write(path: Path, samples: np.ndarray, rate: int, subtype: str, format: str | None = None) -> Path:
    sf.write(path, samples.T, rate, subtype=subtype, format=format)
    return path


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2)))


# --------------------------------------------------------------------------- round trips

LOSSLESS_CASES = [
    ("wav", "PCM_16", 2.0**-15),
    ("wav", "PCM_24", 2.0**-23),
    ("wav", "FLOAT", 0.0),
    ("flac", "PCM_16", 2.0**-15),
    ("flac", "PCM_24", 2.0**-23),
    ("aiff", "PCM_16", 2.0**-15),
    ("aiff", "PCM_24", 2.0**-23),
    ("wav", "PCM_U8", 2.0**-7),
    ("wav", "PCM_32", 2.0**-31),
]


@pytest.mark.parametrize(("extension", "subtype", "tolerance"), LOSSLESS_CASES)
def test_lossless_round_trip(tmp_path: Path, extension: str, subtype: str, tolerance: float) -> None:
    original = sine(440.0, RATE, 4000)
    path = write(tmp_path / f"tone.{extension}", original, RATE, subtype)
    decoded = decode.load_audio(path)
    assert decoded.samples.dtype == np.float32
    assert decoded.samples.shape == (2, 4000)
    assert decoded.sample_rate == decoded.source_sample_rate == RATE
    assert decoded.source_channels == 2
    assert decoded.notes == ()
    np.testing.assert_allclose(decoded.samples, original, rtol=0, atol=tolerance + 1e-9)
    info = decode.probe(path)
    assert (info.sample_rate, info.channels, info.frames, info.subtype) == (RATE, 2, 4000, subtype)


@pytest.mark.parametrize(("subtype", "extension"), [("VORBIS", "ogg"), ("MPEG_LAYER_III", "mp3")])
def test_lossy_decode_keeps_the_tone(tmp_path: Path, subtype: str, extension: str) -> None:
    original = sine(1000.0, RATE, RATE)
    path = write(tmp_path / f"tone.{extension}", original, RATE, subtype)
    decoded = decode.load_audio(path)
    assert decoded.samples.shape[0] == 2
    assert abs(decoded.samples.shape[1] - RATE) <= 2048  # codec padding at most
    frames = min(RATE, decoded.samples.shape[1])
    quality = snr_db(original[:, 2048 : frames - 2048], decoded.samples[:, 2048 : frames - 2048])
    assert quality > 20.0, quality


@pytest.mark.parametrize("kind", ["bytes", "bytesio", "path_str"])
def test_accepts_bytes_and_file_objects(tmp_path: Path, kind: str) -> None:
    original = sine(330.0, RATE, 2000)
    path = write(tmp_path / "tone.flac", original, RATE, "PCM_24")
    source: object = {"bytes": path.read_bytes(), "bytesio": io.BytesIO(path.read_bytes()), "path_str": str(path)}[kind]
    decoded = decode.load_audio(source)  # type: ignore[arg-type]
    np.testing.assert_allclose(decoded.samples, original, atol=2.0**-23)


def test_wrong_extension_is_decoded_by_content(tmp_path: Path) -> None:
    original = sine(550.0, RATE, 3000)
    flac_named_wav = write(tmp_path / "really_flac.wav", original, RATE, "PCM_24", format="FLAC")
    np.testing.assert_allclose(decode.load_audio(flac_named_wav).samples, original, atol=2.0**-23)
    wav_named_mp3 = write(tmp_path / "really_wav.mp3", original, RATE, "PCM_16", format="WAV")
    np.testing.assert_allclose(decode.load_audio(wav_named_mp3).samples, original, atol=2.0**-15)


# --------------------------------------------------------------------------- channel policy


def test_mono_is_duplicated(tmp_path: Path) -> None:
    mono = sine(440.0, RATE, 1000, channels=1)
    decoded = decode.load_audio(write(tmp_path / "mono.wav", mono, RATE, "FLOAT"))
    assert decoded.samples.shape == (2, 1000)
    assert decoded.source_channels == 1
    np.testing.assert_array_equal(decoded.samples[0], mono[0])
    np.testing.assert_array_equal(decoded.samples[1], mono[0])
    assert decoded.notes == ("mono duplicated to stereo",)


def test_six_channels_keep_the_first_two(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    surround = np.stack([np.full(500, 0.1 * (c + 1), dtype=np.float32) for c in range(6)])
    path = write(tmp_path / "surround.wav", surround, RATE, "FLOAT")
    with caplog.at_level(logging.WARNING, logger="stemflow.audio"):
        decoded = decode.load_audio(path)
    np.testing.assert_array_equal(decoded.samples, surround[:2])
    assert decoded.source_channels == 6
    assert decoded.notes == ("kept the first two of 6 channels",)
    assert "surround.wav" in caplog.text and "6 channels" in caplog.text


def test_mono_output_averages_channels(tmp_path: Path) -> None:
    stereo = np.stack([np.full(100, 0.2, np.float32), np.full(100, 0.6, np.float32)])
    decoded = decode.load_audio(write(tmp_path / "s.wav", stereo, RATE, "FLOAT"), channels=1)
    assert decoded.samples.shape == (1, 100)
    np.testing.assert_allclose(decoded.samples, 0.4, atol=1e-7)


def test_to_stereo_does_not_mutate_its_input() -> None:
    mono = np.ones((1, 10), np.float32)
    stereo, note = resample.to_stereo(mono)
    stereo[0, 0] = 5.0
    assert mono[0, 0] == 1.0 and note == "mono duplicated to stereo"
    same, none = resample.to_stereo(np.zeros((2, 4), np.float32))
    assert same.shape == (2, 4) and none is None


# --------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("from_rate", [48000, 8000, 192000])
def test_resampled_sine_keeps_frequency_amplitude_and_phase(from_rate: int) -> None:
    frames = from_rate // 2 + 123
    original = sine(1000.0, from_rate, frames, amplitude=0.5)
    converted = resample.resample(original, from_rate, RATE)
    expected_length = int(np.floor(frames * RATE / from_rate + 0.5))
    assert converted.shape == (2, expected_length)
    assert converted.dtype == np.float32
    reference = sine(1000.0, RATE, expected_length, amplitude=0.5)
    edge = 2000  # the filter's transient at both ends
    error = np.max(np.abs(converted[:, edge:-edge] - reference[:, edge:-edge]))
    assert error < 2e-4, error
    np.testing.assert_allclose(np.sqrt(np.mean(converted[:, edge:-edge] ** 2)), 0.5 / np.sqrt(2), rtol=1e-3)


def test_downsampling_removes_content_above_the_new_nyquist() -> None:
    rate = 192000
    tone = sine(1000.0, rate, rate // 4, amplitude=0.5)
    ultrasonic = sine(30000.0, rate, rate // 4, amplitude=0.5)
    converted = resample.resample(tone + ultrasonic, rate, RATE)
    reference = resample.resample(tone, rate, RATE)
    assert snr_db(reference[:, 1000:-1000], converted[:, 1000:-1000]) > 80.0


@pytest.mark.parametrize("frames", [1, 7, 1000, 44101, 100003])
@pytest.mark.parametrize(("from_rate", "to_rate"), [(48000, 44100), (8000, 44100), (192000, 44100), (44100, 48000)])
def test_resampled_length_is_rounded_half_up(frames: int, from_rate: int, to_rate: int) -> None:
    expected = int(np.floor(frames * to_rate / from_rate + 0.5))
    assert resample.resampled_length(frames, from_rate, to_rate) == expected
    if frames <= 1000:
        assert resample.resample(np.zeros(frames, np.float32), from_rate, to_rate).shape == (expected,)


def test_load_audio_resamples_and_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "hi.wav", sine(1000.0, 48000, 48000, channels=1), 48000, "PCM_24")
    decoded = decode.load_audio(path, sample_rate=RATE)
    assert decoded.samples.shape == (2, RATE)
    assert (decoded.sample_rate, decoded.source_sample_rate) == (RATE, 48000)
    assert decoded.notes == ("mono duplicated to stereo", "resampled 48000 -> 44100 Hz (soxr VHQ)")
    native = decode.load_audio(path, sample_rate=None)
    assert native.sample_rate == 48000 and native.samples.shape == (2, 48000)


# --------------------------------------------------------------------------- bad inputs


def _assert_decode_error(source: object, needle: str, name: str | None = None) -> None:
    with pytest.raises(AudioDecodeError) as excinfo:
        decode.load_audio(source, name=name)  # type: ignore[arg-type]
    assert needle in str(excinfo.value), str(excinfo.value)


def test_zero_byte_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _assert_decode_error(empty, "empty.wav: the file is empty (0 bytes)")
    _assert_decode_error(b"", "s3://bucket/track.flac: the input is empty", name="s3://bucket/track.flac")
    _assert_decode_error(io.BytesIO(b""), "<file object>: the input is empty")


def test_missing_file(tmp_path: Path) -> None:
    _assert_decode_error(tmp_path / "nowhere.flac", "nowhere.flac: cannot read the file")


def test_truncated_header(tmp_path: Path) -> None:
    full = write(tmp_path / "full.wav", sine(440.0, RATE, 1000), RATE, "PCM_16").read_bytes()
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(full[:20])
    _assert_decode_error(truncated, "truncated.wav")
    _assert_decode_error(full[:20], "upload.wav: not decodable", name="upload.wav")


@pytest.mark.parametrize("extension", [".wav", ".mp3", ".flac", ".m4a"])
def test_non_audio_bytes(tmp_path: Path, extension: str) -> None:
    path = tmp_path / f"notes{extension}"
    path.write_bytes(b"These are liner notes, not audio.\n" * 64)
    without_ffmpeg = extension == ".m4a" and not ffmpeg.ffmpeg_available()
    _assert_decode_error(path, f"notes{extension}: probing" if without_ffmpeg else f"notes{extension}: not decodable")


def test_zero_frames(tmp_path: Path) -> None:
    path = write(tmp_path / "silent.wav", np.zeros((2, 0), np.float32), RATE, "PCM_16")
    _assert_decode_error(path, "silent.wav: contains no audio samples (0 frames)")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path: Path, bad_value: float) -> None:
    samples = sine(440.0, RATE, 1000)
    samples[1, 10] = bad_value
    samples[0, 500] = bad_value
    path = write(tmp_path / "broken.wav", samples, RATE, "FLOAT")
    _assert_decode_error(path, "broken.wav: 2 of 2000 samples are NaN or infinite")


def test_invalid_arguments_are_value_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "ok.wav", sine(440.0, RATE, 100), RATE, "PCM_16")
    with pytest.raises(ValueError, match="channels"):
        decode.load_audio(path, channels=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sample_rate"):
        decode.load_audio(path, sample_rate=0)


def test_supported_extensions() -> None:
    for extension in (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".m4a", ".mp4", ".aac"):
        assert extension in formats.DECODABLE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in formats.DECODABLE_EXTENSIONS)


def test_truncated_data_decodes_the_frames_present(tmp_path: Path) -> None:
    original = sine(440.0, RATE, 1000)
    full = write(tmp_path / "full.wav", original, RATE, "PCM_16").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full[: len(full) - 400 * 4])  # drop the last 400 stereo 16-bit frames
    decoded = decode.load_audio(cut)
    assert decoded.samples.shape == (2, 600)
    np.testing.assert_allclose(decoded.samples, original[:, :600], atol=2.0**-15)


def test_sample_rate_must_be_an_integer(tmp_path: Path) -> None:
    path = write(tmp_path / "ok.wav", sine(440.0, RATE, 100), RATE, "PCM_16")
    with pytest.raises(TypeError):
        decode.load_audio(path, sample_rate=44100.0)  # type: ignore[arg-type]
    assert decode.load_audio(path, sample_rate=np.int64(22050)).samples.shape == (2, 50)


def test_garbage_named_mp3_never_reaches_libmpg123(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fake.mp3"
    path.write_bytes(b"\x00" * 4096)
    with pytest.raises(AudioDecodeError, match=r"fake\.mp3"):
        decode.load_audio(path)
    assert "MPEG-Header" not in capfd.readouterr().err
