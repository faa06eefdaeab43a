"""Decoding through ffmpeg: AAC/M4A, multi-stream ``.stem.mp4``, the real MUSDB excerpt."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemflow.audio import decode, ffmpeg, resample
from stemflow.errors import AudioDecodeError

pytestmark = pytest.mark.skipif(not ffmpeg.ffmpeg_available(), reason="ffmpeg/ffprobe not installed")

RATE = 44100


def sine(freq: float, rate: int, frames: int, amplitude: float = 0.5, channels: int = 2) -> np.ndarray:
    t = np.arange(frames) / rate
    return np.asarray([amplitude * np.sin(2 * np.pi * freq * t + c) for c in range(channels)], dtype=np.float32)


def run_ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples[0] * np.hanning(samples.shape[1])))
    return float(np.argmax(spectrum) * rate / samples.shape[1])


@pytest.fixture
def m4a_path(tmp_path: Path) -> Path:
    wav = tmp_path / "tone.wav"
    sf.write(wav, sine(1000.0, 48000, 48000).T, 48000, subtype="PCM_16")
    out = tmp_path / "tone.m4a"
    run_ffmpeg("-i", str(wav), "-c:a", "aac", "-b:a", "192k", str(out))
    return out


def test_aac_m4a_decodes_and_resamples(m4a_path: Path) -> None:
    native = decode.load_audio(m4a_path, sample_rate=None)
    assert native.source_sample_rate == native.sample_rate == 48000
    assert native.samples.shape[0] == 2
    assert abs(native.samples.shape[1] - 48000) <= 1024  # AAC frame granularity
    assert native.notes == ("decoded audio stream 0 with ffmpeg",)
    middle = native.samples[:, 4800:-4800]
    assert abs(dominant_frequency(middle, 48000) - 1000.0) < 3.0
    np.testing.assert_allclose(np.sqrt(np.mean(middle**2)), 0.5 / np.sqrt(2), rtol=0.02)

    converted = decode.load_audio(m4a_path)  # default: 44100 Hz
    assert converted.sample_rate == RATE
    assert converted.samples.shape[1] == resample.resampled_length(native.samples.shape[1], 48000, RATE)
    info = decode.probe(m4a_path)
    assert (info.sample_rate, info.channels, info.format, info.streams) == (48000, 2, "AAC", 1)
    assert info.duration_s is not None and abs(info.duration_s - 1.0) < 0.05


def test_m4a_from_bytes_and_under_a_wrong_extension(m4a_path: Path, tmp_path: Path) -> None:
    reference = decode.load_audio(m4a_path).samples
    from_bytes = decode.load_audio(m4a_path.read_bytes(), name="s3://bucket/a/tone.m4a")
    np.testing.assert_array_equal(from_bytes.samples, reference)
    disguised = tmp_path / "tone.wav"
    disguised.write_bytes(m4a_path.read_bytes())
    decoded = decode.load_audio(disguised)
    np.testing.assert_array_equal(decoded.samples, reference)
    assert decoded.notes[0] == "decoded with ffmpeg (libsndfile could not read it)"
    # bytes without a telling name go libsndfile -> ffmpeg as well
    np.testing.assert_array_equal(decode.load_audio(m4a_path.read_bytes()).samples, reference)


@pytest.fixture
def synthetic_stem_file(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """A 3-stream MP4 (ALAC, lossless) whose streams are distinct 16-bit sines."""
    signals = [sine(f, RATE, 8000, amplitude=0.3) for f in (220.0, 440.0, 880.0)]
    inputs: list[str] = []
    for index, signal in enumerate(signals):
        wav = tmp_path / f"s{index}.wav"
        sf.write(wav, signal.T, RATE, subtype="PCM_16")
        inputs += ["-i", str(wav)]
    out = tmp_path / "synthetic.stem.mp4"
    run_ffmpeg(*inputs, "-map", "0", "-map", "1", "-map", "2", "-c:a", "alac", str(out))
    written = [sf.read(tmp_path / f"s{index}.wav", dtype="float32")[0].T for index in range(len(signals))]
    return out, written


def test_synthetic_stem_mp4(synthetic_stem_file: tuple[Path, list[np.ndarray]]) -> None:
    path, expected = synthetic_stem_file
    info = decode.probe(path)
    assert (info.streams, info.sample_rate, info.channels, info.format) == (3, RATE, 2, "ALAC")
    for index, signal in enumerate(expected):
        decoded = decode.load_audio(path, stream=index)
        np.testing.assert_allclose(decoded.samples, signal, atol=1e-7)
    stems = decode.load_stems(path, names=("mixture", "a", "b"))
    assert list(stems) == ["mixture", "a", "b"]
    for stem, signal in zip(stems.values(), expected, strict=True):
        np.testing.assert_allclose(stem, signal, atol=1e-7)
    with pytest.raises(AudioDecodeError, match=r"synthetic\.stem\.mp4: has 3 audio stream\(s\); stream 3 does not exist"):
        decode.load_audio(path, stream=3)
    with pytest.raises(AudioDecodeError, match="has 3 audio streams but 5 stem names"):
        decode.load_stems(path)


def test_musdb_excerpt_from_stempeg() -> None:
    stempeg = pytest.importorskip("stempeg")
    path = Path(stempeg.example_stem_path())
    info = decode.probe(path)
    assert (info.streams, info.sample_rate, info.channels) == (5, 44100, 2)
    stems = decode.load_stems(path)
    assert list(stems) == list(decode.MUSDB_STEM_NAMES)
    lengths = {s.shape for s in stems.values()}
    assert len(lengths) == 1 and lengths.pop() == (2, info.frames)
    mixture = stems["mixture"]
    total = sum(stems[name] for name in ("drums", "bass", "other", "vocals"))
    residual_db = 10 * np.log10(np.sum((mixture - total) ** 2) / np.sum(mixture**2))
    print(f"MUSDB excerpt: mixture - sum(stems) residual = {residual_db:.2f} dB")
    # AAC-coded streams (and a mastered mixture): close, not exact; measured -15.37 dB
    assert -25.0 < residual_db < -10.0
    # the same samples stempeg's own ffmpeg reader produces
    reference, rate = stempeg.read_stems(str(path))
    assert rate == 44100
    np.testing.assert_allclose(mixture, reference[0].T, atol=1e-6)
    np.testing.assert_allclose(stems["vocals"], reference[4].T, atol=1e-6)


def test_missing_ffmpeg_is_a_clear_error(m4a_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ffmpeg, "FFPROBE_BINARY", "stemflow-no-such-ffprobe")
    monkeypatch.setattr(ffmpeg, "FFMPEG_BINARY", "stemflow-no-such-ffmpeg")
    assert not ffmpeg.ffmpeg_available()
    with pytest.raises(AudioDecodeError, match=r"tone\.m4a: probing: the `stemflow-no-such-ffprobe` binary was not found"):
        decode.load_audio(m4a_path)
    with pytest.raises(AudioDecodeError, match="install ffmpeg"):
        decode.load_audio(m4a_path)


def test_unreadable_by_libsndfile_without_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ffmpeg, "FFMPEG_BINARY", "stemflow-no-such-ffmpeg")
    path = tmp_path / "junk.wav"
    path.write_bytes(b"not audio at all" * 32)
    with pytest.raises(AudioDecodeError, match=r"junk\.wav: not decodable by libsndfile .* ffmpeg is not installed"):
        decode.load_audio(path)


def test_ffmpeg_encoder_round_trip() -> None:
    tone = sine(1000.0, RATE, RATE)
    data = ffmpeg.encode_with_ffmpeg(tone, RATE, output_args=["-c:a", "flac", "-sample_fmt", "s32", "-f", "flac"])
    decoded = decode.load_audio(data)
    assert decoded.notes == ()  # a complete FLAC header: libsndfile reads it
    np.testing.assert_allclose(decoded.samples, tone, atol=2.0**-23)


def test_streamed_flac_without_length_falls_back_to_ffmpeg(tmp_path: Path) -> None:
    tone = sine(1000.0, RATE, RATE)
    wav = tmp_path / "tone.wav"
    sf.write(wav, tone.T, RATE, subtype="PCM_24")
    piped = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(wav), "-c:a", "flac", "-f", "flac", "pipe:1"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    assert sf.info(io.BytesIO(piped)).frames > 2**62  # libsndfile: length unknown
    decoded = decode.load_audio(piped, name="streamed.flac")
    assert decoded.notes == ("decoded with ffmpeg (libsndfile could not read it)",)
    np.testing.assert_allclose(decoded.samples, tone, atol=2.0**-23)
    info = decode.probe(piped, name="streamed.flac")
    assert (info.format, info.frames, info.duration_s, info.sample_rate) == ("FLAC", None, None, RATE)


def test_mp3_made_by_lame_decodes_sample_aligned(tmp_path: Path) -> None:
    tone = sine(1000.0, RATE, RATE)
    wav = tmp_path / "tone.wav"
    sf.write(wav, tone.T, RATE, subtype="PCM_16")
    mp3 = tmp_path / "tone.mp3"
    run_ffmpeg("-i", str(wav), "-c:a", "libmp3lame", "-b:a", "192k", str(mp3))
    decoded = decode.load_audio(mp3)
    assert decoded.samples.shape == (2, RATE)  # encoder delay and padding removed (LAME header)
    assert decoded.notes == ()
    middle = slice(2000, RATE - 2000)
    error = decoded.samples[:, middle] - tone[:, middle]
    snr = 10 * np.log10(np.sum(tone[:, middle] ** 2) / np.sum(error**2))
    assert snr > 25.0, snr  # measured 30.5 dB; a one-frame misalignment gives < 10 dB


def test_probe_errors_name_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.m4a"
    junk.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(AudioDecodeError, match=r"junk\.m4a: not decodable"):
        decode.probe(junk)
    with pytest.raises(AudioDecodeError, match="s3://b/empty.flac: the input is empty"):
        decode.probe(b"", name="s3://b/empty.flac")
