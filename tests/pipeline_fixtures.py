"""Shared helpers of the Ray stage and pipeline tests: a tiny real model and a small catalogue.

The model is the Mel-Band-RoFormer fixture (``../shared/fixtures/roformer/
mel_roformer_vocals``: vocals + the instrumental complement), fast enough to
separate a one-second track in well under a second on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from stemflow.audio.decode import load_audio
from stemflow.store.paths import filesystem

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
MODEL_DIR = FIXTURES / "roformer" / "mel_roformer_vocals"
MODEL_CONFIG = str(MODEL_DIR / "config.yaml")
MODEL_CHECKPOINT = str(MODEL_DIR / "model.ckpt")
SAMPLE_RATE = 44100
#: Bad inputs and the words their error rows must contain.
BAD_FILES = {"bad/empty.wav": "empty", "bad/not-audio.mp3": "decod", "bad/nan.wav": "NaN",
             "bad/corrupt.flac": "decod"}


def tone_track(index: int, seconds: float = 1.0) -> np.ndarray:
    """A deterministic stereo ``[2, N]`` float32 test signal (two tones plus a little noise)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(index)
    x = np.stack([0.3 * np.sin(2 * np.pi * (220 + 20 * index) * t), 0.2 * np.sin(2 * np.pi * (330 + 7 * index) * t)])
    return (x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)


def write_catalogue(folder: Path, good: int, *, bad: bool = True, seconds: float = 1.0) -> list[Path]:
    """``good`` 16-bit WAV tracks (``tNN.wav``) plus, with ``bad``, the :data:`BAD_FILES`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(good):
        path = folder / f"t{i:02d}.wav"
        sf.write(path, tone_track(i, seconds).T, SAMPLE_RATE, subtype="PCM_16")
        paths.append(path)
    if bad:
        (folder / "bad").mkdir(exist_ok=True)
        (folder / "bad" / "empty.wav").write_bytes(b"")
        (folder / "bad" / "not-audio.mp3").write_bytes(b"this is a text file, not an mp3\n" * 20)
        nan = np.zeros((4410, 2), np.float32)
        nan[100, 0] = np.nan
        sf.write(folder / "bad" / "nan.wav", nan, SAMPLE_RATE, subtype="FLOAT")
        # a FLAC stream header followed by garbage frames
        flac = folder / "bad" / "corrupt.flac"
        sf.write(flac, tone_track(99, 0.5).T, SAMPLE_RATE, subtype="PCM_16")
        data = flac.read_bytes()
        flac.write_bytes(data[:64] + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    return paths


def upload_folder(folder: Path, url: str, storage_options: Any) -> None:
    """Copy a local folder's files under ``url`` (an ``s3://`` prefix in the tests)."""
    fs, root = filesystem(url, storage_options)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{root}/{path.relative_to(folder).as_posix()}", path.read_bytes())


def decode(data: bytes) -> np.ndarray:
    """Decode stored stem bytes to ``[2, N]`` float32."""
    return load_audio(data, sample_rate=None, name="stem").samples


def residual_db(mixture: np.ndarray, stems: list[np.ndarray]) -> float:
    """Energy of ``mixture - sum(stems)`` relative to the mixture, in dB."""
    residual = mixture.astype(np.float64) - np.sum([s.astype(np.float64) for s in stems], axis=0)
    return float(10 * np.log10(max(np.sum(residual**2), 1e-30) / np.sum(mixture.astype(np.float64) ** 2)))

