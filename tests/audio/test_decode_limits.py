"""Decoded-bytes limits: checked before decoding from the header, and while decoding whatever the header says."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemflow.audio import ffmpeg
from stemflow.audio.blocks import DecodedSizeError, DecodeLimits, count_frames
from stemflow.audio.decode import load_audio, open_track
from stemflow.audio.source import resolve_source


def flac_claiming(path: Path, seconds: float, rate: int, channels: int, total_samples: int) -> Path:
    """A short FLAC whose STREAMINFO claims ``total_samples`` (0: "unknown", as a FLAC written to a pipe)."""
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, (int(seconds * rate), channels)).astype(np.float32)
    sf.write(path, noise, rate, format="FLAC", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | total_samples
    data[18:26] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def test_a_header_claiming_7000_s_of_8_channel_192k_is_refused_before_decoding(tmp_path: Path) -> None:
    path = flac_claiming(tmp_path / "huge.flac", 0.05, 192000, 8, 7000 * 192000)
    assert path.stat().st_size < 200_000 and sf.info(path).frames == 7000 * 192000
    tracemalloc.start()
    try:
        for attempt in (lambda: load_audio(path), lambda: open_track(path).__enter__()):
            with pytest.raises(DecodedSizeError) as excinfo:
                attempt()
            message = str(excinfo.value)
            assert "huge.flac: its header declares 43.01 GB" in message, message
            assert f"max_decoded_bytes={6 << 30}" in message and "192000 Hz x 8 channels" in message
        assert tracemalloc.get_traced_memory()[1] < 5_000_000  # nothing near 43 GB (nor one block) was allocated
    finally:
        tracemalloc.stop()


@pytest.mark.skipif(not ffmpeg.ffmpeg_available(), reason="needs ffmpeg (the header has no length)")
def test_a_header_without_length_is_stopped_while_decoding(tmp_path: Path) -> None:
    path = flac_claiming(tmp_path / "piped.flac", 2.0, 192000, 8, 0)  # 12.3 MB decoded, no length stated
    limit = 4_000_000
    tracemalloc.start()
    try:
        with pytest.raises(DecodedSizeError) as excinfo:
            load_audio(path, limits=DecodeLimits(max_decoded_bytes=limit))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(excinfo.value)
    assert "piped.flac: decoding stopped after" in message and f"max_decoded_bytes={limit}" in message, message
    assert peak < limit + 4 * (1 << 16) * 8 * 4, peak  # the limit plus a block or two, never the whole file
    with pytest.raises(DecodedSizeError, match=r"piped.flac: decoding stopped after 1 s of audio, over max_duration_s=1;"):
        count_frames(resolve_source(path, None), limits=DecodeLimits(max_decoded_bytes=None, max_duration_s=1))
    # within the limits the same file decodes in full: exact length found by decoding, not from the header
    decoded = load_audio(path, sample_rate=None, channels=2)
    assert decoded.samples.shape == (2, 384000) and decoded.source_channels == 8


@pytest.mark.skipif(not ffmpeg.ffmpeg_available(), reason="needs ffmpeg")
def test_streamed_and_in_memory_decodes_agree_for_mp3_and_lengthless_flac(tmp_path: Path) -> None:
    """The exact length comes from a counting pass where the header does not state it; the blocks equal load_audio."""
    mp3 = tmp_path / "tone.mp3"
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(48000 * 3) / 48000)).astype(np.float32)
    sf.write(tmp_path / "tone.wav", np.stack([tone, tone], 1), 48000)
    ffmpeg._run([ffmpeg.binary_path("ffmpeg", "t"), "-v", "error", "-i", str(tmp_path / "tone.wav"), str(mp3)],
                purpose="encode", error=RuntimeError, stdin=None, timeout_s=60)
    lengthless = flac_claiming(tmp_path / "piped.flac", 1.5, 48000, 2, 0)
    for path in (mp3, lengthless):
        expected = load_audio(path, sample_rate=44100)
        with open_track(path, sample_rate=44100) as track:
            streamed = np.concatenate(list(track.blocks), axis=1)
            assert track.num_samples == expected.samples.shape[-1] and track.notes == expected.notes
        np.testing.assert_array_equal(streamed, expected.samples)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        DecodeLimits(max_decoded_bytes=0)
    with pytest.raises(ValueError, match="must be > 0"):
        DecodeLimits(max_duration_s=-1)
