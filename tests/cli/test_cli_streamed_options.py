"""`stemflow separate` streams with every option and writes the files of ``--in-memory``.

Each case runs the CLI twice in-process (the tiny Mel-Band-RoFormer fixture:
vocals + the instrumental complement) on a short input that goes beyond full
scale, once by default (streamed) and once with ``--in-memory``, and compares
every stem file: PCM, MP3 and M4A files are the same bytes, Ogg files
(Vorbis, Opus) the same decoded samples (their stream serial number is drawn
at random by the encoders), and the notes shown (resampling, clipping) are the
same, "streamed" aside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from stemflow.audio import ffmpeg
from stemflow.audio.decode import load_audio
from stemflow.cli import main

RATE = 44100
SAME_BYTES = (".flac", ".wav", ".mp3", ".m4a")

pytestmark = pytest.mark.skipif(not ffmpeg.ffmpeg_available(), reason="ffmpeg is not installed")


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COLUMNS", "240")
    monkeypatch.setenv("STEMFLOW_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def hot_input(tmp_path: Path) -> Path:
    """0.4 s of two tones peaking at 1.6 (beyond full scale), float WAV."""
    t = np.arange(int(0.4 * RATE)) / RATE
    x = 1.6 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1)
    sf.write(tmp_path / "hot.wav", x.astype(np.float32), RATE, subtype="FLOAT")
    return tmp_path / "hot.wav"


def separate(capsys: pytest.CaptureFixture[str], model: Any, source: Path, output: Path, *options: str) -> list[str]:
    """Run ``stemflow separate``; the notes it showed for the input (one per line)."""
    try:
        main(
            [
                "separate",
                str(source),
                "-o",
                str(output),
                "--config",
                model.config,
                "--checkpoint",
                model.checkpoint,
                *options,
            ]
        )
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    err = capsys.readouterr().err
    assert code == 0, err
    return [line.split(f"{source.name}: ", 1)[1].strip() for line in err.splitlines() if f"{source.name}: " in line]


def without_peak_time(data: bytes) -> bytes:
    """File bytes with the time stamp of a float WAV's PEAK chunk zeroed (libsndfile writes the wall clock)."""
    at = data.find(b"PEAK", 0, 256)
    return data if at < 0 else data[: at + 12] + bytes(4) + data[at + 16 :]


@pytest.mark.parametrize(
    "options",
    [
        ("--format", "flac", "--bit-depth", "16", "--stem", "instrumental", "--sum-to-mixture"),
        ("--format", "wav", "--two-stems", "vocals", "--sum-to-mixture", "--clip-mode", "clamp"),
        ("--format", "wav", "--bit-depth", "32", "--sample-rate", "48000", "--clip-mode", "rescale"),
        ("--format", "mp3", "--sample-rate", "48000", "--clip-mode", "rescale"),
        ("--format", "mp3", "--bitrate", "128", "--two-stems", "instrumental"),
        ("--format", "ogg", "--bitrate", "96", "--sample-rate", "32000", "--clip-mode", "clamp"),
        ("--format", "opus", "--two-stems", "vocals", "--sample-rate", "22050", "--clip-mode", "rescale"),
        ("--format", "m4a", "--sample-rate", "22050", "--stem", "vocals"),
    ],
    ids=lambda options: " ".join(options),
)
def test_every_option_streams_to_the_in_memory_files(
    capsys: pytest.CaptureFixture[str], tiny_model: Any, hot_input: Path, tmp_path: Path, options: tuple[str, ...]
) -> None:
    streamed_notes = separate(capsys, tiny_model, hot_input, tmp_path / "streamed", *options)
    memory_notes = separate(capsys, tiny_model, hot_input, tmp_path / "memory", *options, "--in-memory")
    assert streamed_notes == [*memory_notes, "streamed"]
    streamed = sorted((tmp_path / "streamed" / "hot").iterdir())
    in_memory = sorted((tmp_path / "memory" / "hot").iterdir())
    assert [p.name for p in streamed] == [p.name for p in in_memory]
    stems = [p for p in streamed if not p.name.startswith(".")]
    assert len(stems) == (2 if "--two-stems" in options or "--stem" not in options else 1)
    for path in stems:
        twin = tmp_path / "memory" / "hot" / path.name
        if path.suffix in SAME_BYTES:
            assert without_peak_time(path.read_bytes()) == without_peak_time(twin.read_bytes()), path.name
        got, expected = load_audio(path, name="streamed"), load_audio(twin, name="in memory")
        assert got.sample_rate == expected.sample_rate
        np.testing.assert_array_equal(got.samples, expected.samples, err_msg=path.name)
