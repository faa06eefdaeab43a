"""The command line end to end, on real files, through the real entry points."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemflow.cli import track_name, unique_names

ROOT = Path(__file__).resolve().parents[2]
MEL = ROOT.parent / "shared" / "fixtures" / "roformer" / "mel_roformer_vocals"
BS = ROOT.parent / "shared" / "fixtures" / "roformer" / "bs_roformer_4stem"


def run_cli(*args: str, cache: Path, script: bool = False) -> subprocess.CompletedProcess[str]:
    # the ephemeral Prefect server may need more than its 20 s default to start on a loaded machine
    env = {**os.environ, "STEMFLOW_CACHE": str(cache), "COLUMNS": "200",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    command = [str(Path(sys.executable).parent / "stemflow")] if script else [sys.executable, "-m", "stemflow"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=600)


def _tone(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    return np.stack([mono * (0.8 + 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    (folder / "nested").mkdir(parents=True)
    sf.write(folder / "song.wav", _tone(0.5, 44100, 2, 1), 44100, subtype="PCM_24")
    sf.write(folder / "nested" / "mono48k.flac", _tone(0.4, 48000, 1, 2), 48000)
    (folder / "nested" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (folder / "notes.txt").write_text("not audio, not an audio extension: ignored")
    return folder


def test_separate_folder_with_config_and_checkpoint(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("separate", str(inputs), "-o", str(out), "--config", str(MEL / "config.yaml"),
                     "--checkpoint", str(MEL / "model.ckpt"), "--format", "wav", "--bit-depth", "32",
                     "--batch-size", "3", cache=tmp_path / "cache")
    # one bad file: reported, the others go on, exit code 1
    assert result.returncode == 1, result.stderr
    assert "broken.wav" in result.stderr and "2 separated, 1 failed" in result.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == [
        "mono48k/instrumental.wav", "mono48k/vocals.wav", "song/instrumental.wav", "song/vocals.wav",
    ]
    mixture, rate = sf.read(inputs / "song.wav", dtype="float32", always_2d=True)
    vocals, _ = sf.read(out / "song" / "vocals.wav", dtype="float32", always_2d=True)
    instrumental, _ = sf.read(out / "song" / "instrumental.wav", dtype="float32", always_2d=True)
    assert rate == 44100 and vocals.shape == mixture.shape
    # the complement of a single-target model is mixture - target
    np.testing.assert_allclose(vocals + instrumental, mixture, atol=1e-6)
    assert np.abs(vocals).max() > 1e-4  # the random model does change the signal
    # the mono 48 kHz input was resampled to the model's rate and made stereo, and said so
    resampled, rate = sf.read(out / "mono48k" / "vocals.wav", always_2d=True)
    assert rate == 44100 and resampled.shape == (round(0.4 * 44100), 2)
    assert "mono duplicated to stereo" in result.stderr and "resampled 48000 -> 44100" in result.stderr


def test_console_script_streaming_flac_matches_in_memory(tmp_path: Path) -> None:
    source = tmp_path / "track.wav"
    sf.write(source, _tone(0.3, 44100, 2, 3), 44100, subtype="FLOAT")
    common = ("--config", str(BS / "config.yaml"), "--checkpoint", str(BS / "model.ckpt"))
    memory = run_cli("separate", str(source), "-o", str(tmp_path / "a"), *common, cache=tmp_path / "c", script=True)
    streamed = run_cli("separate", str(source), "-o", str(tmp_path / "b"), *common, "--stream", cache=tmp_path / "c")
    assert memory.returncode == 0, memory.stderr
    assert streamed.returncode == 0, streamed.stderr
    for stem in ("drums", "bass", "other", "vocals"):
        a, _ = sf.read(tmp_path / "a" / "track" / f"{stem}.flac")
        b, _ = sf.read(tmp_path / "b" / "track" / f"{stem}.flac")
        assert sf.info(str(tmp_path / "a" / "track" / f"{stem}.flac")).subtype == "PCM_24"
        np.testing.assert_array_equal(a, b)


def test_usage_errors_and_models_list(tmp_path: Path) -> None:
    missing = run_cli("separate", str(tmp_path / "nothing"), "-o", str(tmp_path / "o"), "--config",
                      str(MEL / "config.yaml"), cache=tmp_path)
    assert missing.returncode != 0 and "--checkpoint" in missing.stderr + missing.stdout
    listing = run_cli("models", "list", cache=tmp_path)
    assert listing.returncode == 0, listing.stderr
    for name in ("spleeter-2stems", "bs-roformer-musdb18-4stem", "mel-roformer-kj-vocals"):
        assert name in listing.stdout
    offline = run_cli("separate", str(MEL / "config.yaml"), "-o", str(tmp_path / "o"), "--model",
                      "bs-roformer-viperx-1297", "--offline", cache=tmp_path)
    assert offline.returncode == 2
    assert str(tmp_path / "weights") in offline.stderr.replace("\n", "")


def test_output_names() -> None:
    assert track_name(Path("a/Falcon 69.stem.mp4")) == "Falcon 69"
    assert track_name(Path("b/x.flac")) == "x"
    assert unique_names([Path("a/x.wav"), Path("b/x.flac"), Path("c/y.wav")]) == ["x", "x-2", "y"]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_separate_real_music_with_the_offline_default(tmp_path: Path) -> None:
    stempeg = pytest.importorskip("stempeg")
    result = run_cli("separate", stempeg.example_stem_path(), "-o", str(tmp_path / "out"), cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert "spleeter-2stems" in result.stderr
    folder = tmp_path / "out" / "The Easton Ellises - Falcon 69"
    # the stems, each with its owner record (input and model: what lets a re-run replace them safely)
    assert sorted(p.name for p in folder.iterdir()) == [
        ".instrumental.flac.stemflow.json", ".vocals.flac.stemflow.json", "instrumental.flac", "vocals.flac"]
    info = sf.info(str(folder / "vocals.flac"))
    assert info.samplerate == 44100 and info.channels == 2 and info.subtype == "PCM_24"


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.ray
def test_run_and_status_on_a_folder_catalogue(tmp_path: Path) -> None:
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    for i in range(2):
        sf.write(catalogue / f"t{i}.wav", _tone(0.3, 44100, 2, 10 + i), 44100)
    (catalogue / "bad.flac").write_bytes(b"not audio at all")
    out = tmp_path / "out"
    env_args = dict(cache=tmp_path / "cache")
    model = ("--model", str(MEL / "config.yaml"), "--checkpoint", str(MEL / "model.ckpt"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    first = run_cli("run", str(catalogue), str(out), *model, "--shard-size", "2", **env_args)
    assert first.returncode == 1, first.stderr  # one bad file: an error row, the rest committed
    assert "2 committed, 1 errors" in first.stdout.replace("\n", " ")
    markers = sorted(out.glob("stems/*/*/_COMMITTED.json"))
    assert len(markers) == 2
    # a failed track is not committed, so the next run retries it (and only it)
    retry = run_cli("run", str(catalogue), str(out), *model, **env_args)
    assert "0 committed, 1 errors" in retry.stdout.replace("\n", " ")
    (catalogue / "bad.flac").unlink()
    again = run_cli("run", str(catalogue), str(out), *model, **env_args)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    status = run_cli("status", str(out), **env_args)
    assert status.returncode == 0, status.stderr
    model_id = markers[0].parent.parent.name
    row = next(line for line in status.stdout.splitlines() if model_id[:20] in line)
    # committed, ok tracks in Parquet, rows (2 stems x 2 tracks + 2 error rows), error rows
    assert [cell.strip() for cell in row.split("│")[2:6]] == ["2", "2", "6", "2"]
