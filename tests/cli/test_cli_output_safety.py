"""`stemflow separate` keeps every write under -o, one result per input, never over another track or model.

Hostile and colliding input names: same names in different folders, a name
equal to another input's suffixed name, names of only dots, leading dots,
unicode, 240-character names, symlinks leading out of -o, -o inside an input
folder, results of another input or another model from an earlier run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from stemflow.cli import main, unique_names
from stemflow.commandline.outputs import safe_component, track_name

RATE = 44100


def write_song(path: Path, seed: int) -> np.ndarray:
    """A distinct 0.3 s stereo song at ``path``; returns it as ``[N, 2]``."""
    t = np.arange(int(0.3 * RATE)) / RATE
    x = (0.2 * np.stack([np.sin(2 * np.pi * (200 + 40 * seed) * t), np.sin(2 * np.pi * (310 + 7 * seed) * t)],
                        axis=1)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, RATE, subtype="FLOAT", format="WAV")
    return x


def separate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        main(["separate", *args, "--format", "wav", "--bit-depth", "32"])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err.replace("\n", " ")


def sums(folder: Path) -> np.ndarray:
    """vocals + instrumental of a result folder (the tiny model's stems sum to its input)."""
    return sum(sf.read(folder / f"{stem}.wav", dtype="float32")[0] for stem in ("vocals", "instrumental"))


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix == ".wav")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COLUMNS", "240")
    monkeypatch.setenv("STEMFLOW_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def model(tiny_model: Any) -> tuple[str, ...]:
    return ("--config", tiny_model.config, "--checkpoint", tiny_model.checkpoint)


def test_same_names_in_different_folders_get_one_result_each(capsys: pytest.CaptureFixture[str],
                                                              model: tuple[str, ...], tmp_path: Path) -> None:
    songs = {p: write_song(tmp_path / p, i) for i, p in enumerate(("d1/a.wav", "d2/a.wav", "d3/a-2.wav"))}
    out = tmp_path / "out"
    args = [str(tmp_path / p) for p in songs] + ["-o", str(out), *model]
    code, err = separate(capsys, *args)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a", "a-2", "a-2-2"]
    for folder, song in zip(("a", "a-2", "a-2-2"), songs.values()):
        np.testing.assert_allclose(sums(out / folder), song, atol=1e-6)  # each folder holds its own input
    # the same command again reuses the same folders (same inputs, same model): no a-3, nothing renamed
    code, err = separate(capsys, *args)
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["a", "a-2", "a-2-2"] and "a-3" not in err
    # an earlier run's result folder of another input is never overwritten: y/a.wav goes next to it
    other = write_song(tmp_path / "y" / "a.wav", 9)
    code, err = separate(capsys, str(tmp_path / "y" / "a.wav"), "-o", str(out), *model)
    assert code == 0 and "is another input's: using a-3" in err
    np.testing.assert_allclose(sums(out / "a-3"), other, atol=1e-6)
    np.testing.assert_allclose(sums(out / "a"), songs["d1/a.wav"], atol=1e-6)
    assert unique_names([Path("d1/a.wav"), Path("d2/a.wav"), Path("d3/a-2.wav")]) == ["a", "a-2", "a-2-2"]


def test_another_models_stems_are_refused_before_any_work(capsys: pytest.CaptureFixture[str],
                                                           model: tuple[str, ...], shared_fixtures: Path,
                                                           tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.wav", 1)
    out = tmp_path / "out"
    assert separate(capsys, str(tmp_path / "song.wav"), "-o", str(out), *model)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bs = shared_fixtures / "roformer" / "bs_roformer_4stem"
    other = ("--config", str(bs / "config.yaml"), "--checkpoint", str(bs / "model.ckpt"))
    code, err = separate(capsys, str(tmp_path / "song.wav"), "-o", str(out), *other)
    assert code == 2 and "holds stems of model" in err and "--filename '{model}/{track}/{stem}.{ext}'" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    code, err = separate(capsys, str(tmp_path / "song.wav"), "-o", str(tmp_path / "both"), *model,
                         "--filename", "{model}/{track}/{stem}.{ext}")
    assert code == 0, err
    np.testing.assert_allclose(sums(tmp_path / "both" / "custom-model" / "song"), song, atol=1e-6)


def test_hostile_names_stay_under_the_output_folder(capsys: pytest.CaptureFixture[str], model: tuple[str, ...],
                                                    tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    names = ["...wav", "..wav", ".hidden.wav", "Ünïcødé 曲 [live].wav", "x" * 240 + ".wav", "con\u200bfusing.wav"]
    for i, name in enumerate(names):
        write_song(inputs / name, i)
    out = tmp_path / "deep" / "out"
    code, err = separate(capsys, str(inputs), "-o", str(out), *model)
    assert code == 0, err
    results = sorted(p.name for p in out.iterdir())
    assert len(results) == len(names), results  # one result folder per input
    assert all(not name.startswith(".") and len(name.encode()) <= 150 for name in results)
    assert "_hidden" in results and "Ünïcødé 曲 [live]" in results and "track" in results and "track-2" in results
    # nothing was written anywhere but under -o
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]
    assert set(os.listdir(tmp_path)) <= {"cache", "deep", "in"}


def test_symlinks_never_lead_writes_out_of_the_output_folder(capsys: pytest.CaptureFixture[str],
                                                             model: tuple[str, ...], tmp_path: Path) -> None:
    song = write_song(tmp_path / "in" / "song.wav", 3)
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "song").symlink_to(outside, target_is_directory=True)  # OUT/song leads elsewhere
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in", target_is_directory=True)  # a folder loop
    code, err = separate(capsys, str(tmp_path / "in"), "-o", str(out), *model)
    assert code == 0, err
    assert list(outside.iterdir()) == []
    np.testing.assert_allclose(sums(out / "song-2"), song, atol=1e-6)


def test_output_inside_the_input_folder_is_not_read_back(capsys: pytest.CaptureFixture[str],
                                                         model: tuple[str, ...], tmp_path: Path) -> None:
    write_song(tmp_path / "album" / "one.wav", 1)
    out = tmp_path / "album" / "stems"
    for _ in range(2):
        code, err = separate(capsys, str(tmp_path / "album"), "-o", str(out), *model)
        assert code == 0 and "1 separated, 0 failed" in err, err
    assert files_under(out) == ["one/instrumental.wav", "one/vocals.wav"]


def test_an_input_given_twice_is_separated_once(capsys: pytest.CaptureFixture[str], model: tuple[str, ...],
                                                tmp_path: Path) -> None:
    write_song(tmp_path / "a.wav", 1)
    (tmp_path / "link.wav").symlink_to(tmp_path / "a.wav")
    code, err = separate(capsys, str(tmp_path / "a.wav"), str(tmp_path / "a.wav"), str(tmp_path / "link.wav"),
                         "-o", str(tmp_path / "out"), *model)
    assert code == 0 and "1 separated, 0 failed" in err
    assert files_under(tmp_path / "out") == ["a/instrumental.wav", "a/vocals.wav"]


def test_safe_components() -> None:
    assert track_name(Path("a/Falcon 69.stem.mp4")) == "Falcon 69"
    assert track_name(Path("...wav")) == "track" and track_name(Path("..")) == "track"
    assert track_name(Path(".hidden.flac")) == "_hidden"
    assert safe_component("a/b\\c\x00d\ne") == "a_b_c_d_e"
    assert safe_component("e\u0301") == "\u00e9"  # NFC
    long = safe_component("é" * 200)
    assert len(long.encode()) <= 150 and long != safe_component("é" * 201)  # a hash keeps long names apart
