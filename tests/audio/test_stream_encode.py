"""Stem files written block by block (stemflow.audio.stream_encode) are the files of the whole-array encoder.

Each case writes the same float32 signal block by block and whole
(:func:`stemflow.audio.encode.save_audio`) and compares: PCM, MP3 and M4A files
are the same bytes; Ogg files (Vorbis, Opus) differ only by the stream serial
number both libsndfile and ffmpeg draw at random, so they are compared by
their decoded samples, which must be equal. The :class:`EncodeResult` fields
must be equal too (``num_bytes`` included).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stemflow.audio import ffmpeg
from stemflow.audio.decode import load_audio
from stemflow.audio.encode import EncodeResult, save_audio
from stemflow.audio.resample import StreamResampler, resample
from stemflow.audio.stream_encode import open_stem_writer
from stemflow.errors import AudioEncodeError
from stemflow.tempfiles import set_temp_root

RATE = 44100
FRAMES = 70001  # more than one 65536-frame libsndfile write
ODD_BLOCKS = (0, 1, 777, 3000, 12345)
SAME_BYTES = {"flac", "wav", "aiff", "mp3", "m4a"}  # Ogg (ogg, opus): a random serial number in each file

pytestmark = pytest.mark.skipif(not ffmpeg.ffmpeg_available(), reason="ffmpeg is not installed")


def signal(gain: float = 0.5, frames: int = FRAMES, seed: int = 0) -> np.ndarray:
    """Stereo float32 ``[2, frames]``: two tones and noise; ``gain`` > 1 goes beyond full scale."""
    t = np.arange(frames) / RATE
    rng = np.random.default_rng(seed)
    x = np.stack([np.sin(2 * np.pi * 440 * t), 0.7 * np.sin(2 * np.pi * 660 * t)]) + 0.02 * rng.standard_normal(
        (2, frames)
    )
    return (gain * x).astype(np.float32)


def blocks(audio: np.ndarray, schedule: str) -> Iterator[np.ndarray]:
    """``audio`` as one block, or as odd-sized blocks (empty ones included)."""
    if schedule == "one":
        yield audio
        return
    start, index = 0, 0
    while start < audio.shape[1]:
        size = ODD_BLOCKS[index % len(ODD_BLOCKS)]
        yield audio[:, start : start + size]
        start, index = start + size, index + 1


def stream(path: Path, audio: np.ndarray, schedule: str = "odd", **options: object) -> EncodeResult:
    writer = open_stem_writer(path, RATE, **options)
    for block in blocks(audio, schedule):
        writer.write(block)
    return writer.close()


def without_peak_time(data: bytes) -> bytes:
    """File bytes with the time stamp of a float WAV's PEAK chunk zeroed (libsndfile writes the wall clock)."""
    at = data.find(b"PEAK", 0, 256)
    return data if at < 0 else data[: at + 12] + bytes(4) + data[at + 16 :]


def assert_same_file(streamed: Path, whole: Path, format: str) -> None:
    if format in SAME_BYTES:
        assert without_peak_time(streamed.read_bytes()) == without_peak_time(whole.read_bytes())
    got, expected = load_audio(streamed, name="streamed"), load_audio(whole, name="whole")
    assert got.sample_rate == expected.sample_rate
    np.testing.assert_array_equal(got.samples, expected.samples)


CASES = [
    ("flac", 16, None), ("flac", 24, None), ("wav", 16, None), ("wav", 24, None), ("wav", 32, None),
    ("aiff", 24, None), ("mp3", 24, None), ("mp3", 24, 128), ("ogg", 24, None), ("ogg", 24, 96),
    ("opus", 24, None), ("m4a", 24, None),
]  # fmt: skip


@pytest.mark.parametrize("schedule", ["one", "odd"])
@pytest.mark.parametrize(("format", "bit_depth", "bitrate"), CASES)
def test_every_format_streams_to_the_whole_array_file(
    tmp_path: Path, format: str, bit_depth: int, bitrate: int | None, schedule: str
) -> None:
    audio = signal(gain=1.2)  # beyond full scale: saturation counted (float WAV keeps it)
    whole = save_audio(
        tmp_path / f"whole.{format}", audio, RATE, format=format, bit_depth=bit_depth, bitrate_kbps=bitrate
    )
    streamed = stream(
        tmp_path / "streamed.tmp", audio, schedule, format=format, bit_depth=bit_depth, bitrate_kbps=bitrate
    )
    assert streamed == whole
    assert whole.clipped_samples > 0 or format == "wav" and bit_depth == 32
    assert_same_file(tmp_path / "streamed.tmp", tmp_path / f"whole.{format}", format)


@pytest.mark.parametrize(("format", "bit_depth", "bitrate", "clip"), [
    ("wav", 32, None, "clamp"), ("flac", 24, None, "rescale"), ("wav", 32, None, "rescale"),
    ("mp3", 24, 128, "rescale"), ("opus", 24, 96, "rescale"), ("ogg", 24, None, "clamp"),
])  # fmt: skip
def test_rescale_and_clamp_of_an_over_full_scale_signal(
    tmp_path: Path, format: str, bit_depth: int, bitrate: int | None, clip: str
) -> None:
    audio = signal(gain=1.6)
    whole = save_audio(
        tmp_path / f"whole.{format}", audio, RATE, format=format, bit_depth=bit_depth, clip=clip, bitrate_kbps=bitrate
    )
    streamed = stream(
        tmp_path / "streamed.tmp", audio, format=format, bit_depth=bit_depth, clip=clip, bitrate_kbps=bitrate
    )
    assert streamed == whole
    if clip == "rescale":
        assert streamed.gain == pytest.approx(0.999 / float(np.abs(audio).max())) and streamed.clipped_samples == 0
    else:
        assert streamed.gain == 1.0 and streamed.clipped_samples == int(np.count_nonzero(np.abs(audio) > 1))
    assert_same_file(tmp_path / "streamed.tmp", tmp_path / f"whole.{format}", format)


@pytest.mark.parametrize(("from_rate", "to_rate", "format", "clip"), [
    (44100, 48000, "flac", "none"), (48000, 22050, "wav", "rescale"), (44100, 48000, "m4a", "none"),
    (48000, 22050, "opus", "rescale"),  # 22050 Hz, then Opus' own 48 kHz
])  # fmt: skip
def test_output_rate_is_resampled_as_it_streams(
    tmp_path: Path, from_rate: int, to_rate: int, format: str, clip: str
) -> None:
    audio = signal(gain=1.3, frames=50003)
    bit_depth = 32 if format == "wav" else 24
    converted = resample(audio, from_rate, to_rate)  # what the CLI's in-memory path encodes
    whole = save_audio(tmp_path / f"whole.{format}", converted, to_rate, format=format, bit_depth=bit_depth, clip=clip)
    writer = open_stem_writer(
        tmp_path / "streamed.tmp", from_rate, format=format, bit_depth=bit_depth, clip=clip, output_rate=to_rate
    )
    for block in blocks(audio, "odd"):
        writer.write(block)
    assert writer.close() == whole
    assert_same_file(tmp_path / "streamed.tmp", tmp_path / f"whole.{format}", format)


@pytest.mark.parametrize(("from_rate", "to_rate"), [(44100, 48000), (48000, 22050), (22050, 44100)])
def test_stream_resampler_is_resample_sample_for_sample(from_rate: int, to_rate: int) -> None:
    audio = signal(frames=20011)
    resampler = StreamResampler(from_rate, to_rate, 2)
    pieces = [resampler.push(block) for block in blocks(audio, "odd")] + [resampler.finish()]
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), resample(audio, from_rate, to_rate))


@pytest.fixture()
def temp_root(tmp_path: Path) -> Iterator[Path]:
    """A private temp root, so the test can see every spool and ffmpeg sink made."""
    root = tmp_path / "tmp"
    root.mkdir()
    set_temp_root(root)
    yield root
    set_temp_root(None)


@pytest.mark.parametrize("format", ["flac", "m4a"])
def test_abort_leaves_no_file_and_no_spool(tmp_path: Path, temp_root: Path, format: str) -> None:
    path = tmp_path / "stem.tmp"
    writer = open_stem_writer(path, RATE, format=format, clip="rescale")
    writer.write(signal(gain=2.0, frames=5000))
    spools = [p.name for p in temp_root.iterdir()]
    assert len(spools) == 1 and spools[0].startswith(f"stemflow-spool-{os.getpid()}-"), spools
    writer.abort()
    writer.abort()  # idempotent
    assert not path.exists() and list(temp_root.iterdir()) == []
    with pytest.raises(AudioEncodeError, match="already closed"):
        writer.write(signal(frames=10))


def test_bad_blocks_and_an_empty_stem_leave_nothing(tmp_path: Path) -> None:
    path = tmp_path / "stem.tmp"
    writer = open_stem_writer(path, RATE, format="mp3", bitrate_kbps=128)
    writer.write(signal(frames=3000))
    bad = signal(frames=100)
    bad[1, 50] = np.nan
    with pytest.raises(AudioEncodeError, match=r"stem\.tmp: the samples contain NaN"):
        writer.write(bad)
    assert not path.exists()
    writer = open_stem_writer(path, RATE, format="flac")
    with pytest.raises(AudioEncodeError, match="expected \\[2, samples\\] blocks"):
        writer.write(np.zeros((1, 10), np.float32))
    writer = open_stem_writer(path, RATE, format="flac", name="track/vocals.flac")
    with pytest.raises(AudioEncodeError, match="track/vocals.flac: expected non-empty"):
        writer.close()
    assert not path.exists()
    for options, message in (
        ({"format": "flac", "bitrate_kbps": 128}, "a bitrate applies to the lossy"),
        ({"format": "flac", "bit_depth": 32}, "bit_depth must be 16 or 24"),
        ({"format": "mp3", "output_rate": 96000}, "cannot encode mp3 .* at 96000 Hz"),
    ):
        with pytest.raises(AudioEncodeError, match=message):
            open_stem_writer(path, RATE, **options)
        assert not path.exists()


def test_an_ffmpeg_killed_mid_stream_is_an_error_naming_the_file(tmp_path: Path, temp_root: Path) -> None:
    path = tmp_path / "stem.tmp"
    writer = open_stem_writer(path, RATE, format="opus", name="out/song/vocals.opus")
    writer.write(signal(frames=20000))
    writer._sink._process.kill()  # type: ignore[union-attr]  # what the OOM killer would do
    writer._sink._process.wait()  # type: ignore[union-attr]
    with pytest.raises(AudioEncodeError, match="out/song/vocals.opus: encoding failed"):
        writer.write(signal(frames=20000))
    assert not path.exists() and list(temp_root.iterdir()) == []


def fake_ffmpeg(folder: Path, body: str) -> str:
    script = folder / "fake-ffmpeg"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_a_failing_or_stuck_ffmpeg_is_an_error_and_leaves_nothing(
    tmp_path: Path, temp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "stem.tmp"
    monkeypatch.setattr(ffmpeg, "FFMPEG_BINARY", fake_ffmpeg(tmp_path, "echo 'Unknown encoder libfoo' >&2; exit 1"))
    writer = open_stem_writer(path, RATE, format="m4a", name="vocals.m4a")
    with pytest.raises(AudioEncodeError, match="vocals.m4a: encoding failed .*ffmpeg: Unknown encoder libfoo"):
        for block in blocks(signal(), "one"):
            writer.write(block)
        writer.close()
    assert not path.exists()
    # an ffmpeg that never reads its input: the watchdog kills it (`exec`: no shell left holding the pipe)
    monkeypatch.setattr(ffmpeg, "FFMPEG_BINARY", fake_ffmpeg(tmp_path, "exec sleep 60"))
    monkeypatch.setattr(ffmpeg, "DEFAULT_TIMEOUT_S", 0.5)
    writer = open_stem_writer(path, RATE, format="m4a", name="stuck.m4a")
    with pytest.raises(
        AudioEncodeError, match=r"stuck.m4a: encoding failed: ffmpeg made no progress for 0.5 s \(killed\)"
    ):
        writer.write(signal(frames=200_000))  # 1.6 MB: more than a pipe holds
    assert not path.exists() and list(temp_root.iterdir()) == []
