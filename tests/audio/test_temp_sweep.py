"""Temporary files: named with the owner's pid, left behind by a SIGKILL mid-decode, swept by the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemflow.audio import ffmpeg
from stemflow.tempfiles import set_temp_root, sweep_stale, temp_dir, temp_file

REPO_ROOT = Path(__file__).resolve().parents[2]

_DECODE_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from stemflow.audio import ffmpeg
from stemflow.audio.decode import load_audio
from stemflow.tempfiles import set_temp_root
set_temp_root({temp!r})
ffmpeg.FFMPEG_BINARY = {slow!r}
load_audio(open({source!r}, "rb").read(), name="upload.m4a")  # bytes: spooled to a temporary file for ffmpeg
"""


@pytest.mark.skipif(not ffmpeg.ffmpeg_available(), reason="needs ffmpeg")
def test_a_sigkill_mid_decode_leaves_a_copy_that_the_next_start_sweeps(tmp_path: Path) -> None:
    source = tmp_path / "tone.wav"
    sf.write(source, np.zeros((4410, 2), np.float32), 44100)
    slow = tmp_path / "slow-ffmpeg"  # a decoder that takes its time, so the kill lands mid-decode
    slow.write_text(f"#!/bin/sh\nsleep 60\nexec {ffmpeg.binary_path('ffmpeg', 'test')} \"$@\"\n")
    slow.chmod(0o755)
    temp = tmp_path / "temp"
    script = _DECODE_SCRIPT.format(root=str(REPO_ROOT), temp=str(temp), slow=str(slow), source=str(source))
    child = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any(temp.glob(f"stemflow-audio-{child.pid}-*/input*")):
            assert child.poll() is None and time.monotonic() < deadline, "the decode never made its copy"
            time.sleep(0.1)
        time.sleep(0.5)  # inside ffmpeg now
        os.killpg(child.pid, signal.SIGKILL)  # the decoder process group: python and the slow ffmpeg
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    left = sorted(p.name for p in temp.iterdir())
    assert len(left) == 1 and left[0].startswith(f"stemflow-audio-{child.pid}-"), left  # no finally ran
    set_temp_root(temp)
    try:
        with temp_dir("audio") as mine, temp_file("upload", ".tmp") as (descriptor, spool):
            os.close(descriptor)
            (temp / "stemflow-notes.txt").write_text("not ours: no pid in the name")
            (temp / "other-tool-123-x").mkdir()
            assert sweep_stale() == 1  # only the dead process's folder
            assert mine.is_dir() and spool.is_file()  # this live process's files are kept
            assert sorted(p.name for p in temp.iterdir()) == sorted(
                [mine.name, spool.name, "stemflow-notes.txt", "other-tool-123-x"])
        assert sorted(p.name for p in temp.iterdir()) == ["other-tool-123-x", "stemflow-notes.txt"]
    finally:
        set_temp_root(None)


def test_the_cli_sweeps_dead_processes_temp_files_when_it_starts(tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = temp / f"stemflow-ffmpeg-{int(dead.stdout)}-abc123"
    (stale / "deep").mkdir(parents=True)
    (stale / "deep" / "stream0.f32").write_bytes(b"\0" * 1024)
    empty = tmp_path / "no-audio"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "stemflow", "separate", str(empty), "-o", str(tmp_path / "out"),
                           "--temp-dir", str(temp)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 2 and "no audio files found" in done.stdout + done.stderr
    assert not stale.exists() and temp.is_dir()


def test_kinds_are_plain_words() -> None:
    with pytest.raises(ValueError, match="lower-case letters"):
        with temp_dir("../x"):
            pass
