"""Dataset building from committed stems (synthetic stems committed with stemflow.store.commit; no model)."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from stemflow.audio.encode import encode_audio
from stemflow.errors import ConfigError, StemflowError
from stemflow.karaoke.card import text_histogram
from stemflow.karaoke.dataset import (
    COMPLETE_NAME,
    DatasetTrack,
    assign_split,
    backing_of,
    build_dataset,
    group_key,
    model_short,
    version_name,
)
from stemflow.karaoke.settings import DatasetSettings, load_settings, settings_from_dict
from stemflow.measures.loudness import integrated_loudness, true_peak_dbtp
from stemflow.store.commit import commit_track, write_stem

RATE = 44100
MODEL_ID = "toy-4stem-0123456789ab-s0badcafe"
DAY = date(2026, 11, 24)


def _noise(seconds: float, amplitude: float, seed: int) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal((2, int(seconds * RATE)))).astype(np.float32)


def commit_toy_track(output_url: str, track_id: str, stems: dict[str, np.ndarray], model_id: str = MODEL_ID) -> None:
    """Store stems as 24-bit FLAC and commit them, as a separation run does."""
    objects = [write_stem(output_url, model_id, track_id, name, "flac", encode_audio(audio, RATE))
               for name, audio in stems.items()]
    commit_track(output_url, model_id, track_id, objects, source_url=f"file:///music/{track_id}.wav", run_id="r1")


def four_stems(vocal_gain: float, seed: int, seconds: float = 2.0) -> dict[str, np.ndarray]:
    parts = {name: _noise(seconds, 0.015, seed + i) for i, name in enumerate(("drums", "bass", "other"))}
    return {"vocals": _noise(seconds, 0.02 * vocal_gain, seed + 9), **parts}


def test_group_key_and_splits_are_stable() -> None:
    assert group_key(" The Band ", "t1", "artist") == "artist:the band"
    assert group_key(None, "t1", "artist") == group_key("", "t1", "artist") == "track:t1"
    assert assign_split("artist:x", (0.8, 0.1, 0.1), 0) == assign_split("artist:x", (0.8, 0.1, 0.1), 0)
    keys = [f"artist:{i}" for i in range(3000)]
    splits = [assign_split(k) for k in keys]
    counts = Counter(splits)
    assert set(counts) == {"train", "validation", "test"}
    assert abs(counts["train"] / 3000 - 0.8) < 0.03 and abs(counts["test"] / 3000 - 0.1) < 0.03
    # catalogue growth never moves an existing group; another seed does
    assert [assign_split(k) for k in keys[:100]] == splits[:100]
    assert [assign_split(k, seed=1) for k in keys] != splits
    assert {assign_split(k, (1.0, 0.0, 0.0)) for k in keys[:200]} == {"train"}
    assert {assign_split(k, (0.0, 0.0, 1.0)) for k in keys[:200]} == {"test"}


def test_settings_file_and_validation(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings == DatasetSettings()  # configs/karaoke.yaml holds the built-in defaults
    assert load_settings(format="wav").format == "wav"
    with pytest.raises(ConfigError, match="unknown dataset keys"):
        settings_from_dict({"dataset": {"fromat": "wav"}})
    with pytest.raises(ConfigError, match="unknown sections"):
        settings_from_dict({"datasets": {}})
    with pytest.raises(ConfigError, match="splits"):
        settings_from_dict({"dataset": {"splits": [0.5, 0.1, 0.1]}})
    with pytest.raises(ConfigError, match="format"):
        DatasetSettings(format="mp3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bit_depth"):
        DatasetSettings(format="flac", bit_depth=32)
    assert DatasetSettings(format="wav", bit_depth=32).bit_depth == 32


def test_version_name() -> None:
    settings = DatasetSettings()
    a, b = DatasetTrack("a", group_value="X"), DatasetTrack("b")
    name = version_name(MODEL_ID, settings, [b, a], DAY)
    assert name.startswith("v20261124-toy-4stem-01234567-")
    assert name == version_name(MODEL_ID, settings, [a, b], DAY)
    assert name == version_name(MODEL_ID, settings, [DatasetTrack("a", "file:///elsewhere", " x"), b], DAY)
    assert name != version_name(MODEL_ID, DatasetSettings(seed=1), [a, b], DAY)
    assert name != version_name(MODEL_ID, settings, [a, b, DatasetTrack("c")], DAY)
    assert name != version_name(MODEL_ID, settings, [DatasetTrack("a", group_value="Y"), b], DAY)  # regrouped
    assert model_short("not a model id!") == "not-a-model-id-"


def test_backing_of() -> None:
    stems = four_stems(1.0, 0)
    backing, source = backing_of(stems)
    assert source == "drums+bass+other"
    np.testing.assert_allclose(backing, stems["drums"] + stems["bass"] + stems["other"], atol=1e-7)
    two = {"vocals": stems["vocals"], "instrumental": backing}
    assert backing_of(two)[1] == "instrumental"
    with pytest.raises(StemflowError):
        backing_of({"drums": backing})
    with pytest.raises(StemflowError):
        backing_of({"vocals": backing, "drums": backing})


def test_text_histogram() -> None:
    lines = text_histogram(np.array([0.0, 0.0, 0.4, 2.0]), bins=2, width=9)
    assert lines == ["     0.000 .. 1.000          3  #########", "     1.000 .. 2.000          1  ###"]
    assert text_histogram(np.array([])) == []


def test_build_dataset_from_committed_stems(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    dataset = str(tmp_path / "dataset")
    commit_toy_track(out, "normal1", four_stems(1.0, 10))
    commit_toy_track(out, "normal2", four_stems(1.0, 20))
    commit_toy_track(out, "loud", four_stems(6.0, 30))
    commit_toy_track(out, "inst", {**four_stems(1.0, 40), "vocals": np.zeros((2, 2 * RATE), np.float32)})
    tracks = [DatasetTrack("normal1", group_value="Ann"), DatasetTrack("normal2", group_value="ann "),
              DatasetTrack("loud", group_value="Bob"), DatasetTrack("inst"), DatasetTrack("missing")]
    settings = DatasetSettings(stems4=True, webdataset=True, residue=False)
    result = build_dataset(tracks, output_url=out, model_id=MODEL_ID, dataset_url=dataset, settings=settings,
                           models={"separation": "toy"}, day=DAY)
    assert result.created and result.tracks == 5 and result.accepted == 2
    root = tmp_path / "dataset" / result.version
    assert result.version.startswith("v20261124-toy-4stem-01234567-")
    rows = {r["track_id"]: r for r in pq.read_table(root / "manifest.parquet").to_pylist()}
    assert set(rows) == {"normal1", "normal2", "loud", "inst", "missing"}
    assert rows["inst"]["instrumental_only"] and rows["inst"]["reasons"] == ["instrumental_only"]
    assert rows["loud"]["vocals_too_loud"] and rows["loud"]["reasons"] == ["vocals_too_loud"]
    assert rows["missing"]["reasons"] == ["error"] and "not committed" in rows["missing"]["error"]
    assert rows["normal1"]["group"] == rows["normal2"]["group"] == "artist:ann"
    assert rows["normal1"]["split"] == rows["normal2"]["split"]
    assert rows["inst"]["group"] == "track:inst"
    for track_id in ("normal1", "normal2"):
        row = rows[track_id]
        assert row["accepted"] and row["backing_source"] == "drums+bass+other"
        assert row["backing_path"] == f"{row['split']}/{track_id}/backing.flac"
        backing, rate = sf.read(root / row["backing_path"], always_2d=True)
        vocals, _ = sf.read(root / row["vocals_path"], always_2d=True)
        assert rate == row["sample_rate"] == RATE and backing.shape[0] / rate == pytest.approx(row["duration_s"])
        # backing at -14 LUFS unless the -1 dBTP ceiling limited the gain; the vocal got the same gain
        lufs = integrated_loudness(backing.T, RATE)
        assert lufs == pytest.approx(row["backing_lufs_out"], abs=0.05)
        peak = true_peak_dbtp(backing.T, RATE)
        assert lufs == pytest.approx(-14.0, abs=0.05) or peak == pytest.approx(-1.0, abs=0.05)
        assert max(true_peak_dbtp(backing.T, RATE), true_peak_dbtp(vocals.T, RATE)) <= -1.0 + 0.05
        assert integrated_loudness(vocals.T, RATE) - lufs == pytest.approx(row["vocal_to_backing_lu"], abs=0.05)
        for stem in ("drums", "bass", "other"):
            assert (root / row[f"{stem}_path"]).is_file()
    assert rows["loud"]["backing_path"] is None  # rejected: no audio by default
    assert not (root / rows["loud"]["split"] / "loud").exists()
    card = (root / "README.md").read_text()
    assert "## Score distributions" in card and "vocal_coverage" in card and "| **all** | 5 | 2 |" in card
    assert "| `vocals_too_loud` | 1 |" in card and "(card/vocal_share.png)" in card
    assert (root / "card" / "vocal_share.png").read_bytes()[:4] == b"\x89PNG"
    marker = json.loads((root / COMPLETE_NAME).read_text())
    assert marker["counts"]["accepted"] == 2 and marker["model_id"] == MODEL_ID
    # stored values readers depend on: the marker's format string and the index's file name
    assert marker["format"] == "stemflow.karaoke-dataset/1" and marker["manifest"] == "manifest.parquet"
    # WebDataset shards hold exactly the accepted tracks
    names = []
    for shard in marker["shards"]:
        with tarfile.open(root / shard) as tar:
            names += tar.getnames()
            member = json.loads(tar.extractfile(f"{names[-1]}").read()) if names[-1].endswith(".json") else None
    assert sorted(n for n in names if n.endswith(".json")) == ["normal1.json", "normal2.json"]
    assert "normal1.backing.flac" in names and "normal1.drums.flac" in names
    assert member is not None and member["accepted"] is True
    # a re-run with the same model, settings and tracks finds the version and writes nothing
    before = sorted(p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file())
    again = build_dataset(tracks, output_url=out, model_id=MODEL_ID, dataset_url=dataset, settings=settings,
                          day=date(2026, 12, 1))
    assert not again.created and again.version == result.version and again.accepted == 2
    assert sorted(p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()) == before
    # other settings: a new version next to it
    other = build_dataset(tracks[:3], output_url=out, model_id=MODEL_ID, dataset_url=dataset,
                          settings=DatasetSettings(format="wav", loudness_lufs=None, residue=False), day=DAY)
    assert other.created and other.version != result.version
    wav_rows = pq.read_table(tmp_path / "dataset" / other.version / "manifest.parquet").to_pylist()
    assert sorted(r["track_id"] for r in wav_rows if r["accepted"]) == ["normal1", "normal2"]
    for row in wav_rows:
        assert row["loudness_gain_db"] <= 0.0  # no normalisation: only the -1 dBTP ceiling can act
        assert row["backing_path"] is None if not row["accepted"] else row["backing_path"].endswith(".wav")


def test_residue_uses_the_vocal_separator(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    stems = four_stems(1.0, 50)
    commit_toy_track(out, "t", stems)
    seen = []

    def leaky_vocal_model(audio: np.ndarray, sample_rate: int) -> np.ndarray:
        seen.append((audio.shape, sample_rate))
        return audio * np.float32(0.5)  # finds half the backing's amplitude as "vocals"

    result = build_dataset([DatasetTrack("t")], output_url=out, model_id=MODEL_ID, dataset_url=str(tmp_path / "d"),
                           settings=DatasetSettings(), vocal_separator=leaky_vocal_model, day=DAY)
    row = pq.read_table(tmp_path / "d" / result.version / "manifest.parquet").to_pylist()[0]
    backing = stems["drums"] + stems["bass"] + stems["other"]
    energy = [float(np.sum(x.astype(np.float64) ** 2)) for x in (0.5 * backing, stems["vocals"])]
    expected = 10 * np.log10(energy[0] / energy[1])
    assert seen == [((2, 2 * RATE), RATE)]
    assert row["vocal_residue_db"] == pytest.approx(expected, abs=0.01)  # FLAC 24-bit round trip
    assert "vocal_residue" in row["reasons"]


def test_incomplete_version_is_completed_and_a_complete_one_never_rewritten(tmp_path: Path) -> None:
    out, dataset = str(tmp_path / "out"), str(tmp_path / "dataset")
    commit_toy_track(out, "a", four_stems(1.0, 60))
    tracks = [DatasetTrack("a", group_value="Ann")]
    settings = DatasetSettings(residue=False)
    first = build_dataset(tracks, output_url=out, model_id=MODEL_ID, dataset_url=dataset, settings=settings, day=DAY)
    root = tmp_path / "dataset" / first.version
    backing = next(root.rglob("backing.flac"))  # in whichever split the group hashes to
    audio_bytes = backing.read_bytes()
    # a crash before the marker: the dataset index and the marker are missing
    (root / COMPLETE_NAME).unlink()
    (root / "manifest.parquet").unlink()
    again = build_dataset(tracks, output_url=out, model_id=MODEL_ID, dataset_url=dataset, settings=settings, day=DAY)
    assert again.created and again.version == first.version and again.accepted == 1
    assert backing.read_bytes() == audio_bytes and (root / "manifest.parquet").is_file()
    assert (root / COMPLETE_NAME).is_file()


def test_dataset_on_an_object_store(tmp_path: Path) -> None:
    import fsspec

    from stemflow.karaoke.index import read_index

    out, dataset = "memory://karaoke-test/out", "memory://karaoke-test/dataset"
    commit_toy_track(out, "m", four_stems(1.0, 70))
    result = build_dataset([DatasetTrack("m")], output_url=out, model_id=MODEL_ID, dataset_url=dataset,
                           settings=DatasetSettings(residue=False, webdataset=True), day=DAY)
    rows = read_index(result.version_url).to_pylist()
    assert [r["track_id"] for r in rows] == ["m"] and rows[0]["accepted"]
    fs = fsspec.filesystem("memory")
    data = fs.cat_file(f"/karaoke-test/dataset/{result.version}/{rows[0]['vocals_path']}")
    vocals, rate = sf.read(io.BytesIO(data), always_2d=True)
    assert rate == RATE and vocals.shape == (2 * RATE, 2)
    again = build_dataset([DatasetTrack("m")], output_url=out, model_id=MODEL_ID, dataset_url=dataset,
                          settings=DatasetSettings(residue=False, webdataset=True), day=DAY)
    assert not again.created and again.version == result.version
    fs.rm("/karaoke-test", recursive=True)
