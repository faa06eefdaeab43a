"""`stemflow separate` with the habits of demucs / audio-separator users: device, stems, formats, layout.

Run in-process through :func:`stemflow.cli.main` (the real argument parsing and
error handling) with the tiny Mel-Band-RoFormer fixture (vocals + the
instrumental complement), so each call takes about a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from stemflow.audio import ffmpeg
from stemflow.cli import main

RATE = 44100


def tone(seconds: float = 0.4, seed: int = 0, gain: float = 0.3) -> np.ndarray:
    """Stereo ``[N, 2]`` float32 (soundfile's layout)."""
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    x = np.stack([np.sin(2 * np.pi * (220 + 30 * seed) * t), np.sin(2 * np.pi * 330 * t)], axis=1)
    return (gain * x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``stemflow ARGS`` in-process: exit code, stdout, stderr."""
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.replace("\n", " ")


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COLUMNS", "240")
    monkeypatch.setenv("STEMFLOW_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def model(tiny_model: Any) -> tuple[str, ...]:
    return ("--config", tiny_model.config, "--checkpoint", tiny_model.checkpoint)


def test_version_and_models_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(capsys, "--version")
    assert code == 0 and stdout.startswith("stemflow 0.1.0 (torch ")
    code, stdout, _ = run(capsys, "models", "list", "--json")
    rows = {row["name"]: row for row in json.loads(stdout)}
    assert code == 0 and "model_bs_roformer_ep_317_sdr_12.9755.ckpt" in rows["bs-roformer-viperx-1297"]["aliases"]
    assert set(rows["spleeter-2stems"]) >= {"architecture", "stems", "reported_sdr", "license", "cached", "aliases"}
    code, stdout, _ = run(capsys, "models", "list")
    assert code == 0 and "also known as" in stdout and "spleeter:2stems" in stdout
    # completion is on (--install-completion); typer finds the user's shell among the process's parents, so
    # the command runs as a child of bash, as a user types it (in-process, the parents are whatever ran pytest,
    # which in CI may be no shell at all); the trailing `; exit` keeps bash from exec'ing its single command
    command = f"'{Path(sys.executable).parent / 'stemflow'}' --show-completion; exit $?"
    shown = subprocess.run(["bash", "-c", command],
                           capture_output=True, text=True, timeout=120, cwd=Path.home(), check=False)
    assert shown.returncode == 0, shown.stderr
    assert "_stemflow_completion()" in shown.stdout and "_STEMFLOW_COMPLETE" in shown.stdout


def test_device_auto_is_the_default_and_a_missing_gpu_is_a_clear_error(
        capsys: pytest.CaptureFixture[str], model: tuple[str, ...], tmp_path: Path) -> None:
    import torch

    sf.write(tmp_path / "song.wav", tone(), RATE)
    code, _, err = run(capsys, "separate", str(tmp_path / "song.wav"), "-o", str(tmp_path / "out"), *model)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert code == 0 and f"device {expected}" in err, err
    code, _, err = run(capsys, "separate", str(tmp_path / "song.wav"), "-o", str(tmp_path / "o2"), *model,
                       "--device", f"cuda:{torch.cuda.device_count() + 3}")
    assert code == 2 and "CUDA device" in err and "Traceback" not in err
    code, _, err = run(capsys, "separate", str(tmp_path / "song.wav"), "-o", str(tmp_path / "o2"), *model,
                       "--device", "tpu")
    assert code == 2 and "use auto, cpu, cuda, cuda:N or mps" in err


def test_two_stems_and_single_stems(capsys: pytest.CaptureFixture[str], model: tuple[str, ...],
                                    tmp_path: Path) -> None:
    mixture = tone()
    sf.write(tmp_path / "song.wav", mixture, RATE, subtype="FLOAT")
    code, _, err = run(capsys, "separate", str(tmp_path / "song.wav"), "-o", str(tmp_path / "two"), *model,
                       "--two-stems", "vocals", "--format", "wav", "--bit-depth", "32")
    assert code == 0, err
    folder = tmp_path / "two" / "song"
    assert sorted(p.name for p in folder.glob("*.wav")) == ["no_vocals.wav", "vocals.wav"]
    vocals, _ = sf.read(folder / "vocals.wav", dtype="float32")
    rest, _ = sf.read(folder / "no_vocals.wav", dtype="float32")
    np.testing.assert_allclose(vocals + rest, mixture, atol=1e-6)
    code, _, err = run(capsys, "separate", str(tmp_path / "song.wav"), "-o", str(tmp_path / "one"), *model,
                       "--stem", "instrumental")
    assert code == 0 and [p.name for p in (tmp_path / "one" / "song").glob("*.flac")] == ["instrumental.flac"]
    code, _, err = run(capsys, "separate", str(tmp_path / "song.wav"), "-o", str(tmp_path / "bad"), *model,
                       "--two-stems", "drums")
    assert code == 2 and "the model gives vocals, instrumental; no drums" in err
    assert not (tmp_path / "bad").exists()
    code, _, err = run(capsys, "separate", str(tmp_path / "song.wav"), "-o", str(tmp_path / "streamed"), *model,
                       "--two-stems", "vocals", "--stream")  # --stream takes every option
    assert code == 0 and "streamed" in err, err
    assert sorted(p.name for p in (tmp_path / "streamed" / "song").glob("*.flac")) == ["no_vocals.flac", "vocals.flac"]


@pytest.mark.skipif(not ffmpeg.ffmpeg_available(), reason="ffmpeg is not installed")
def test_formats_bitrate_sample_rate_and_clip_mode(capsys: pytest.CaptureFixture[str], model: tuple[str, ...],
                                                   tmp_path: Path) -> None:
    sf.write(tmp_path / "hot.wav", tone(gain=1.6), RATE, subtype="FLOAT")  # peaks far above full scale
    code, _, err = run(capsys, "separate", str(tmp_path / "hot.wav"), "-o", str(tmp_path / "opus"), *model,
                       "--format", "opus", "--bitrate", "96")
    assert code == 0, err
    assert sf.info(str(tmp_path / "opus" / "hot" / "vocals.opus")).samplerate == 48000 and "opus runs at 48000" in err
    code, _, err = run(capsys, "separate", str(tmp_path / "hot.wav"), "-o", str(tmp_path / "m4a"), *model,
                       "--format", "m4a", "--sample-rate", "22050")
    assert code == 0, err
    assert ffmpeg.probe_streams(tmp_path / "m4a" / "hot" / "vocals.m4a")[0].sample_rate == 22050
    code, _, err = run(capsys, "separate", str(tmp_path / "hot.wav"), "-o", str(tmp_path / "flac"), *model,
                       "--sample-rate", "48000", "--clip-mode", "rescale")
    assert code == 0, err
    rescaled, rate = sf.read(tmp_path / "flac" / "hot" / "instrumental.flac")
    assert rate == 48000 and np.abs(rescaled).max() <= 0.9991 and "samples clipped" not in err
    code, _, err = run(capsys, "separate", str(tmp_path / "hot.wav"), "-o", str(tmp_path / "sat"), *model)
    assert code == 0 and "samples clipped to full scale" in err  # the default saturates and says so
    for bad, message in ((("--format", "flac", "--bitrate", "128"), "--bitrate: a bitrate applies to the lossy "
                                                                    "formats (mp3, ogg, opus, m4a), not to flac"),
                         (("--format", "mp3", "--bitrate", "999"), "mp3 takes a bitrate of 32-320 kb/s, got 999"),
                         (("--sample-rate", "-5"), "--sample-rate must be 8000-384000 Hz")):
        code, _, err = run(capsys, "separate", str(tmp_path / "hot.wav"), "-o", str(tmp_path / "x"), *model, *bad)
        assert code == 2 and message in err and not (tmp_path / "x").exists(), (bad, err)


def test_model_in_the_filename_template(capsys: pytest.CaptureFixture[str], model: tuple[str, ...],
                                        tmp_path: Path) -> None:
    sf.write(tmp_path / "song.wav", tone(), RATE)
    code, _, err = run(capsys, "separate", str(tmp_path / "song.wav"), "-o", str(tmp_path / "out"), *model,
                       "--filename", "{model}/{track}_{stem}.{ext}")
    assert code == 0, err
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.flac")) == [
        "custom-model/song_instrumental.flac", "custom-model/song_vocals.flac"]
    for template, message in (("../{track}/{stem}.{ext}", "relative path without"),
                              ("/abs/{track}/{stem}", "relative path without"),
                              ("{stem}.{ext}", "must include {track} and {stem}"),
                              ("{track}/{stem}/{user}", "must include"), ("{track!r}/{stem}", "no format spec")):
        code, _, err = run(capsys, "separate", str(tmp_path / "song.wav"), "-o", str(tmp_path / "o"), *model,
                           "--filename", template)
        assert code == 2 and message in err, (template, err)
    assert not (tmp_path / "o").exists() and not (tmp_path.parent / "song").exists()


def test_catalogue_commands_without_their_extras_give_an_install_hint(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['prefect'] = None; sys.modules['matplotlib'] = None\n"
            "from stemflow.cli import main\nmain(sys.argv[1:])")
    for args, extra in ((["run", str(tmp_path), str(tmp_path / "out")], "pipeline"),
                        (["status", str(tmp_path)], "pipeline"), (["report", str(tmp_path)], "report"),
                        (["evaluate", str(tmp_path), "-o", str(tmp_path)], "pipeline"),
                        (["karaoke", str(tmp_path), str(tmp_path / "d")], "pipeline")):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                              env={**__import__("os").environ, "COLUMNS": "240"})
        assert done.returncode == 2, (args, done.stderr)
        assert f"pip install 'stemflow[{extra}]'" in done.stderr and "Traceback" not in done.stderr, done.stderr
