"""Lossy outputs with a bitrate: MP3, Ogg Vorbis, Opus and AAC (M4A) through ffmpeg, decoded back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemflow.audio import ffmpeg
from stemflow.audio.decode import load_audio
from stemflow.audio.encode import encode, save_audio
from stemflow.audio.formats import LOSSY_CODECS, format_for_path
from stemflow.errors import AudioEncodeError

pytestmark = pytest.mark.skipif(not ffmpeg.ffmpeg_available(), reason="ffmpeg is not installed")
RATE = 44100


def music(seconds: float = 2.0, rate: int = RATE) -> np.ndarray:
    """A few harmonics plus a little noise, stereo float32 ``[2, N]``."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    left = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (220, 440, 660, 1320, 3520))
    right = sum(0.1 * np.sin(2 * np.pi * f * t + 0.3) for f in (247, 494, 988, 2960))
    return (np.stack([left, right]) + 0.002 * rng.standard_normal((2, t.size))).astype(np.float32)


def aligned_snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    """SNR after the best integer delay within 4000 samples (codecs add priming delay), middle part only."""
    ref = reference[0, 8000:-8000]
    best = -np.inf
    for delay in range(0, 4000):
        est = decoded[0, 8000 + delay: 8000 + delay + ref.size]
        if est.size < ref.size:
            break
        err = np.sum((est - ref) ** 2)
        best = max(best, 10 * np.log10(np.sum(ref**2) / max(err, 1e-20)))
        if best > 15:
            break
    return float(best)


@pytest.mark.parametrize(("format", "kbps"), [("mp3", 128), ("ogg", 128), ("opus", 96), ("m4a", 128)])
def test_lossy_formats_with_a_bitrate_decode_back_to_the_signal(format: str, kbps: int) -> None:
    original = music()
    encoded = encode(original, RATE, format=format, bitrate_kbps=kbps)  # type: ignore[arg-type]
    assert encoded.result.bitrate_kbps == kbps
    decoded = load_audio(encoded.data, sample_rate=None, name=f"x.{format}")
    expected_rate = 48000 if format == "opus" else RATE  # Opus always runs at 48 kHz
    assert encoded.result.sample_rate == decoded.sample_rate == expected_rate
    assert abs(decoded.samples.shape[1] / expected_rate - 2.0) < 0.1
    reference = original if format != "opus" else load_audio(
        encode(original, RATE, format="wav", bit_depth=32).data, sample_rate=48000).samples
    assert aligned_snr_db(reference, decoded.samples) > 15
    # the bitrate is what was asked: about kbps * duration (containers add a little)
    assert 0.5 < encoded.result.num_bytes * 8 / 2.0 / 1000 / kbps < 1.5


def test_a_higher_bitrate_gives_a_bigger_file() -> None:
    original = music()
    for format in ("mp3", "ogg", "opus", "m4a"):
        small = encode(original, RATE, format=format, bitrate_kbps=64).result.num_bytes  # type: ignore[arg-type]
        large = encode(original, RATE, format=format, bitrate_kbps=256).result.num_bytes  # type: ignore[arg-type]
        assert large > 2 * small, format


def test_defaults_without_a_bitrate() -> None:
    original = music(1.0)
    assert encode(original, RATE, format="m4a").result.bitrate_kbps == LOSSY_CODECS["m4a"].default_kbps
    assert encode(original, RATE, format="opus").result.bitrate_kbps == LOSSY_CODECS["opus"].default_kbps
    # MP3 and Vorbis without a bitrate: libsndfile (no ffmpeg needed), as before
    assert encode(original, RATE, format="mp3").result.bitrate_kbps is None


def test_bad_bitrates_and_rates_are_clear_errors() -> None:
    with pytest.raises(AudioEncodeError, match=r"song/vocals: a bitrate applies to the lossy formats .* not to flac"):
        encode(music(0.1), RATE, format="flac", bitrate_kbps=320, name="song/vocals")
    with pytest.raises(AudioEncodeError, match="mp3 takes a bitrate of 32-320 kb/s, got 1000"):
        encode(music(0.1), RATE, format="mp3", bitrate_kbps=1000)
    with pytest.raises(AudioEncodeError, match="opus takes a bitrate of 16-510 kb/s, got 0"):
        encode(music(0.1), RATE, format="opus", bitrate_kbps=0)
    with pytest.raises(AudioEncodeError, match=r"cannot encode m4a \(aac\) at 7000 Hz; it takes 8000"):
        encode(music(0.1, 7000), 7000, format="m4a")


def test_save_audio_infers_opus_and_m4a_from_the_path(tmp_path: Path) -> None:
    assert format_for_path("a/vocals.opus") == "opus" and format_for_path("a/vocals.M4A") == "m4a"
    for name in ("vocals.opus", "vocals.m4a"):
        result = save_audio(tmp_path / name, music(0.5), RATE, bitrate_kbps=96)
        assert result.format == name.split(".")[1] and (tmp_path / name).stat().st_size == result.num_bytes
        assert load_audio(tmp_path / name, sample_rate=None).samples.shape[0] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocals.m4a", "vocals.opus"]  # no temp files left
