"""Encoding: formats and bit depths, the typed clipping policy, atomic saves."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemflow.audio import decode, ffmpeg
from stemflow.audio import encode as audio_encode
from stemflow.errors import AudioEncodeError

RATE = 44100


def sine(frames: int = 4410, amplitude: float = 0.5, freq: float = 441.0) -> np.ndarray:
    t = np.arange(frames) / RATE
    return np.stack([amplitude * np.sin(2 * np.pi * freq * t), amplitude * np.cos(2 * np.pi * freq * t)]).astype(
        np.float32
    )


def hot_signal() -> np.ndarray:
    """[2, 1000] at 0.5 with exactly 7 samples beyond full scale (3 above +1, 4 below -1)."""
    signal = np.full((2, 1000), 0.5, np.float32)
    signal[0, [10, 20, 30]] = [1.5, 1.2, 2.0]
    signal[1, [5, 6, 7, 8]] = [-1.5, -1.01, -3.0, -1.1]
    return signal


ENCODE_CASES = [
    ("flac", 16, "PCM_16", 2.0**-16),
    ("flac", 24, "PCM_24", 2.0**-24),
    ("wav", 16, "PCM_16", 2.0**-16),
    ("wav", 24, "PCM_24", 2.0**-24),
    ("wav", 32, "FLOAT", 0.0),
    ("aiff", 24, "PCM_24", 2.0**-24),
]


@pytest.mark.parametrize(("format", "bit_depth", "subtype", "tolerance"), ENCODE_CASES)
def test_encode_round_trip_within_half_an_lsb(format: str, bit_depth: int, subtype: str, tolerance: float) -> None:
    original = sine()
    encoded = audio_encode.encode(original, RATE, format=format, bit_depth=bit_depth)  # type: ignore[arg-type]
    assert encoded.result.subtype == subtype
    assert (encoded.result.channels, encoded.result.frames, encoded.result.sample_rate) == (2, 4410, RATE)
    assert encoded.result.num_bytes == len(encoded.data)
    assert encoded.result.clipped_samples == 0 and encoded.result.gain == 1.0
    info = sf.info(io.BytesIO(encoded.data))
    assert (info.format, info.subtype) == (format.upper(), subtype)
    decoded = decode.load_audio(encoded.data)
    np.testing.assert_allclose(decoded.samples, original, rtol=0, atol=tolerance + 1e-9)


def test_encode_audio_returns_the_same_bytes() -> None:
    original = sine()
    assert audio_encode.encode_audio(original, RATE, format="flac") == audio_encode.encode(original, RATE).data


@pytest.mark.parametrize("format", ["mp3", "ogg"])
def test_lossy_encoders(format: str) -> None:
    original = sine(RATE)
    encoded = audio_encode.encode(original, RATE, format=format)  # type: ignore[arg-type]
    decoded = decode.load_audio(encoded.data).samples
    assert decoded.shape == (2, RATE)
    error = decoded[:, 2000:-2000] - original[:, 2000:-2000]
    snr = 10 * np.log10(np.sum(original[:, 2000:-2000] ** 2) / np.sum(error**2))
    assert snr > 25.0, snr
    assert encoded.result.num_bytes < len(audio_encode.encode_audio(original, RATE, format="wav", bit_depth=16))


@pytest.mark.parametrize(("format", "bit_depth"), [("wav", 16), ("wav", 24), ("flac", 16), ("flac", 24)])
def test_integer_output_saturates_and_reports(format: str, bit_depth: int, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stemflow.audio"):
        encoded = audio_encode.encode(hot_signal(), RATE, format=format, bit_depth=bit_depth, clip="none", name="hot.flac")  # type: ignore[arg-type]
    assert encoded.result.clipped_samples == 7
    assert encoded.result.peak == 3.0
    assert "hot.flac: 7 samples beyond full scale" in caplog.text
    decoded = decode.load_audio(encoded.data).samples
    full_scale = 1 - 2.0 ** -(bit_depth - 1)
    np.testing.assert_allclose(decoded[0, [10, 20, 30]], full_scale)  # saturated, never wrapped
    np.testing.assert_allclose(decoded[1, [5, 6, 7, 8]], -1.0)
    np.testing.assert_allclose(decoded[0, 100], 0.5)


def test_exact_full_scale_counts_as_clipped_only_when_it_does_not_fit() -> None:
    signal = np.array([[1.0, -1.0, 1 - 2.0**-15, 0.0]], np.float32)
    assert audio_encode.encode(signal, RATE, format="wav", bit_depth=16).result.clipped_samples == 1  # +1.0 only


def test_float_wav_is_never_clipped_silently() -> None:
    hot = hot_signal()
    encoded = audio_encode.encode(hot, RATE, format="wav", bit_depth=32, clip="none")
    assert encoded.result.clipped_samples == 0
    assert encoded.result.over_full_scale == 7
    np.testing.assert_array_equal(decode.load_audio(encoded.data).samples, hot)


def test_clamp_policy() -> None:
    hot = hot_signal()
    as_float = audio_encode.encode(hot, RATE, format="wav", bit_depth=32, clip="clamp")
    assert as_float.result.clipped_samples == 7 and as_float.result.over_full_scale == 0
    np.testing.assert_array_equal(decode.load_audio(as_float.data).samples, np.clip(hot, -1, 1))
    as_int = audio_encode.encode(hot, RATE, format="flac", bit_depth=24, clip="clamp")
    assert as_int.result.clipped_samples == 7
    same_as_none = audio_encode.encode(hot, RATE, format="flac", bit_depth=24, clip="none")
    assert as_int.data == same_as_none.data  # integer formats saturate either way
    decoded = decode.load_audio(as_int.data).samples
    np.testing.assert_allclose(decoded[0, [10, 20, 30]], 1 - 2.0**-23)
    np.testing.assert_allclose(decoded[1, [5, 6, 7, 8]], -1.0)


@pytest.mark.parametrize(("format", "bit_depth"), [("flac", 24), ("wav", 16), ("wav", 32)])
def test_rescale_policy(format: str, bit_depth: int) -> None:
    hot = hot_signal()
    encoded = audio_encode.encode(hot, RATE, format=format, bit_depth=bit_depth, clip="rescale")  # type: ignore[arg-type]
    assert encoded.result.clipped_samples == 0
    assert encoded.result.gain == pytest.approx(0.999 / 3.0)
    decoded = decode.load_audio(encoded.data).samples
    assert np.max(np.abs(decoded)) == pytest.approx(0.999, abs=2.0**-15)
    np.testing.assert_allclose(decoded, hot * (0.999 / 3.0), atol=2.0**-15)


def test_rescale_leaves_a_quiet_signal_alone() -> None:
    encoded = audio_encode.encode(sine(amplitude=0.9), RATE, clip="rescale")
    assert encoded.result.gain == 1.0 and encoded.result.clipped_samples == 0


def test_lossy_output_reports_clipping() -> None:
    encoded = audio_encode.encode(np.tile(hot_signal(), (1, 5)), RATE, format="mp3", clip="none")
    assert encoded.result.clipped_samples == 35


def test_encoder_rejects_bad_input() -> None:
    bad = sine()
    bad[0, 3] = np.nan
    with pytest.raises(AudioEncodeError, match="stem.flac: the samples contain NaN or inf"):
        audio_encode.encode(bad, RATE, name="stem.flac")
    with pytest.raises(AudioEncodeError, match="bit_depth must be 16 or 24"):
        audio_encode.encode(sine(), RATE, format="flac", bit_depth=32)
    with pytest.raises(AudioEncodeError, match="unknown format 'wma'"):
        audio_encode.encode(sine(), RATE, format="wma")  # type: ignore[arg-type]
    with pytest.raises(AudioEncodeError, match="unknown clip policy 'soft'"):
        audio_encode.encode(sine(), RATE, clip="soft")  # type: ignore[arg-type]
    with pytest.raises(AudioEncodeError, match="non-empty"):
        audio_encode.encode(np.zeros((2, 0), np.float32), RATE)
    with pytest.raises(AudioEncodeError, match="cannot encode mp3 .* at 96000 Hz"):
        audio_encode.encode(sine(), 96000, format="mp3")


def test_encode_does_not_mutate_and_accepts_mono_vectors() -> None:
    hot = hot_signal()
    copy = hot.copy()
    audio_encode.encode(hot, RATE, clip="rescale")
    audio_encode.encode(hot, RATE, clip="clamp")
    np.testing.assert_array_equal(hot, copy)
    mono = audio_encode.encode(sine()[0], RATE, format="wav", bit_depth=32)
    assert mono.result.channels == 1
    assert sf.info(io.BytesIO(mono.data)).channels == 1


# --------------------------------------------------------------------------- save_audio


def test_save_audio_infers_the_format_and_leaves_no_temp_files(tmp_path: Path) -> None:
    original = sine()
    results = {
        name: audio_encode.save_audio(tmp_path / name, original, RATE, bit_depth=16)
        for name in ("vocals.flac", "vocals.wav", "vocals.aiff", "vocals.mp3", "vocals.ogg", "vocals.stem")
    }
    assert {name: r.format for name, r in results.items()} == {
        "vocals.flac": "flac", "vocals.wav": "wav", "vocals.aiff": "aiff",
        "vocals.mp3": "mp3", "vocals.ogg": "ogg", "vocals.stem": "flac",
    }  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(results)
    assert sf.info(tmp_path / "vocals.stem").format == "FLAC"
    assert (tmp_path / "vocals.flac").stat().st_mode & 0o644 == 0o644
    np.testing.assert_allclose(decode.load_audio(tmp_path / "vocals.wav").samples, original, atol=2.0**-16)


def test_save_audio_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "drums.flac"
    audio_encode.save_audio(target, sine(amplitude=0.1), RATE)
    result = audio_encode.save_audio(target, sine(amplitude=0.2), RATE)
    assert result.subtype == "PCM_24" and result.num_bytes == target.stat().st_size
    assert np.max(np.abs(decode.load_audio(target).samples)) == pytest.approx(0.2, abs=1e-4)
    with pytest.raises(AudioEncodeError, match="NaN"):
        audio_encode.save_audio(target, np.full((2, 10), np.inf, np.float32), RATE)
    assert np.max(np.abs(decode.load_audio(target).samples)) == pytest.approx(0.2, abs=1e-4)  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["drums.flac"]


def test_save_audio_to_missing_folder_and_file_object(tmp_path: Path) -> None:
    with pytest.raises(AudioEncodeError, match="missing"):
        audio_encode.save_audio(tmp_path / "missing" / "bass.flac", sine(), RATE)
    buffer = io.BytesIO()
    result = audio_encode.save_audio(buffer, sine(), RATE, format="wav", bit_depth=32)
    assert result.format == "wav" and len(buffer.getvalue()) == result.num_bytes
    np.testing.assert_array_equal(decode.load_audio(buffer.getvalue()).samples, sine())


@pytest.mark.skipif(not ffmpeg.ffmpeg_available(), reason="ffmpeg not installed")
def test_mp3_falls_back_to_ffmpeg_when_libsndfile_lacks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    formats = {k: v for k, v in sf.available_formats().items() if k != "MP3"}
    monkeypatch.setattr(decode.sf, "available_formats", lambda: formats)
    original = sine(RATE)
    encoded = audio_encode.encode(original, RATE, format="mp3")
    monkeypatch.undo()
    assert encoded.data[:3] == b"ID3" or encoded.data[:2] == b"\xff\xfb"
    decoded = decode.load_audio(encoded.data).samples
    assert decoded.shape == (2, RATE)  # gapless: ffmpeg wrote the LAME header to a seekable file
    middle = slice(2000, RATE - 2000)
    snr = 10 * np.log10(np.sum(original[:, middle] ** 2) / np.sum((decoded[:, middle] - original[:, middle]) ** 2))
    assert snr > 25.0, snr
