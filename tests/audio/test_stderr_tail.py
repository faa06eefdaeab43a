"""A child's stderr is drained into a bounded tail: a flood of messages costs neither memory nor disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stemflow.audio import decode, ffmpeg
from stemflow.audio.encode_sinks import FfmpegSink
from stemflow.audio.stderr_tail import KEEP_LINES, MAX_LINE_BYTES, StderrTail
from stemflow.errors import AudioDecodeError, AudioEncodeError
from stemflow.tempfiles import temp_root

FLOOD = """
import sys
err = sys.stderr.buffer
for i in range(300_000):
    err.write(b"problem %d in frame\\n" % i)
err.write(b"x" * 3_000_000 + b"\\n")
err.write(b"last words without a newline")
"""


def test_a_flood_of_messages_is_counted_and_only_its_tail_is_kept() -> None:
    with StderrTail() as errors:
        process = subprocess.Popen([sys.executable, "-c", FLOOD], stderr=errors)
        errors.child_started()
        assert process.wait(timeout=120) == 0  # ~8 MB of messages never blocked the child
        errors.finish()
        assert errors.count == 300_002
        assert errors.last == "last words without a newline"
        kept = errors.lines
        assert len(kept) == KEEP_LINES
        assert kept[0] == f"problem {300_000 - KEEP_LINES + 2} in frame"
        assert kept[-2] == "x" * MAX_LINE_BYTES  # a 3 MB line is kept as its last 2 KiB
        assert all(len(line) <= MAX_LINE_BYTES for line in kept)


def test_the_write_end_is_given_once_and_closing_ends_the_thread() -> None:
    errors = StderrTail()
    assert errors.fileno() > 2
    errors.child_started()
    with pytest.raises(ValueError, match="write end is closed"):
        errors.fileno()
    errors.close()
    errors.close()  # idempotent
    assert (errors.count, errors.last) == (0, None)
    assert not errors._thread.is_alive()


@pytest.fixture
def damaged_m4a(tmp_path: Path) -> Path:
    """60 s of AAC with every 97th byte of its middle inverted: ffmpeg reports thousands of bad frames."""
    if not ffmpeg.ffmpeg_available():
        pytest.skip("ffmpeg/ffprobe not installed")
    clean = tmp_path / "clean.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=f=1000:d=60", "-ac", "2",
                    "-c:a", "aac", "-b:a", "128k", str(clean)], check=True)
    data = bytearray(clean.read_bytes())
    for i in range(len(data) // 10, len(data) - len(data) // 10, 97):
        data[i] ^= 0xFF
    damaged = tmp_path / "damaged.m4a"
    damaged.write_bytes(bytes(data))
    return damaged


def _temp_files() -> set[str]:
    return set(os.listdir(temp_root()))


def test_a_damaged_aac_fails_with_ffmpegs_last_message_and_leaves_no_file(damaged_m4a: Path) -> None:
    found = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(damaged_m4a), "-f", "f32le", "-"],
                           capture_output=True, check=False)
    messages = found.stderr.decode().strip().splitlines()
    assert len(messages) > 1000  # what the tail spares the decoder from holding
    before = _temp_files()
    for stream in (True, False):
        with pytest.raises(AudioDecodeError, match=r"damaged\.m4a: .*(Invalid data|exceeds limit|error)") as caught:
            if stream:
                with decode.open_track(damaged_m4a, sample_rate=44100, channels=2) as track:
                    for _ in track.blocks:
                        pass
            else:
                decode.load_audio(damaged_m4a)
        assert messages[-1].split("] ")[-1] in str(caught.value)
    assert _temp_files() == before


def test_an_encoder_failure_names_ffmpegs_last_message(tmp_path: Path) -> None:
    if not ffmpeg.ffmpeg_available():
        pytest.skip("ffmpeg/ffprobe not installed")
    before = _temp_files()
    sink = FfmpegSink(tmp_path / "out.mp3", 44100, 2, output_args=["-c:a", "no_such_codec", "-f", "mp3"],
                      name="song/vocals.mp3")
    with pytest.raises(AudioEncodeError, match=r"song/vocals\.mp3: encoding failed .*ffmpeg: .*no_such_codec"):
        for _ in range(50):
            sink.write(np.zeros((2, 44100), dtype=np.float32))
        sink.close()
    sink.abort()
    assert _temp_files() == before
