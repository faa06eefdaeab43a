"""The decoded-bytes limit in the catalogue path (an error row naming it) and in the CLI (a clear message, exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from stemflow.audio import ffmpeg

REPO_ROOT = Path(__file__).resolve().parents[2]


def lengthless_flac(path: Path, seconds: float = 2.0, rate: int = 96000, channels: int = 6) -> Path:
    """A FLAC whose STREAMINFO states no length (as one written to a pipe): only decoding tells its size."""
    noise = np.random.default_rng(1).uniform(-0.1, 0.1, (int(seconds * rate), channels)).astype(np.float32)
    sf.write(path, noise, rate, format="FLAC", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


@pytest.mark.skipif(not ffmpeg.ffmpeg_available(), reason="needs ffmpeg (no length in the header)")
def test_the_worker_records_an_error_row_naming_the_limit(tmp_path: Path, tiny_model: Any) -> None:
    from stemflow.hub.spec import ModelSpec
    from stemflow.stage.settings import ShardJob
    from stemflow.stage.worker import TrackWorker

    source = lengthless_flac(tmp_path / "piped.flac")  # 2 s x 96 kHz x 6 ch x 4 B = 4.6 MB decoded
    job = ShardJob(output_url=str(tmp_path / "out"), model_id="m", run_id="r", run_date="2026-12-02")
    worker = TrackWorker(ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint), job=job,
                         torch_threads=1, max_decoded_bytes=2_000_000)
    outcome = worker.finish(worker.separate("t1", str(source), worker.fetch(str(source))))
    assert outcome.status == "error"
    assert "piped.flac: decoding stopped after" in outcome.error and "max_decoded_bytes=2000000" in outcome.error
    assert not any((tmp_path / "out").rglob("_COMMITTED.json"))
    ok = TrackWorker(ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint),
                     job=job, torch_threads=1).fetch(str(source))
    # no length in the header: within the limit it streams (opened, its exact length counted first)
    assert ok.error is None and ok.decoded is None and ok.streamed is not None
    try:
        assert ok.streamed.num_samples == 88200
    finally:
        ok.streamed.stack.close()


@pytest.mark.skipif(not ffmpeg.ffmpeg_available(), reason="needs ffmpeg (no length in the header)")
def test_the_cli_refuses_an_input_over_the_limit_with_a_clear_message(tmp_path: Path, tiny_model: Any) -> None:
    source = lengthless_flac(tmp_path / "piped.flac")
    done = subprocess.run(
        [sys.executable, "-m", "stemflow", "separate", str(source), "-o", str(tmp_path / "out"),
         "--config", tiny_model.config, "--checkpoint", tiny_model.checkpoint, "--max-decoded-bytes", "2000000"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    text = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, text
    assert "piped.flac: decoding stopped after" in text and "max_decoded_bytes=2000000" in text, text
    assert "0 separated, 1 failed" in text
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))
