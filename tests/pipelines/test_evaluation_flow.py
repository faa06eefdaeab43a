"""The evaluation flow end to end (Prefect test harness), on a tiny MUSDB18-style folder.

The model is the fixture Mel-Band-RoFormer (vocals + the instrumental complement).
The in-process engine's numbers are checked against the Separator run here and
the metrics computed directly; the Ray engine's against the in-process ones
(its stems go through 24-bit FLAC, so they agree to a few millidecibels).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="stemflow-prefect-"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

from stemflow.measures.metrics import csdr, sdr  # noqa: E402

pytestmark = pytest.mark.prefect

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "roformer" / "mel_roformer_vocals"
CONFIG = str(FIXTURE / "config.yaml")
CHECKPOINT = str(FIXTURE / "model.ckpt")
SAMPLE_RATE = 44100
STEMS = ("drums", "bass", "other", "vocals")




def _stem(seed: int, seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    tone = 0.15 * np.sin(2 * np.pi * (110 * (seed % 5 + 1)) * t)
    return (np.stack([tone, 0.7 * tone]) + 0.02 * rng.standard_normal((2, t.size))).astype(np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("musdb") / "test"
    for index, name in enumerate(("song a", "song b")):
        folder = root / name
        folder.mkdir(parents=True)
        stems = {s: _stem(10 * index + i) for i, s in enumerate(STEMS)}
        for stem, audio in stems.items():
            sf.write(folder / f"{stem}.wav", audio.T, SAMPLE_RATE, subtype="FLOAT")
        sf.write(folder / "mixture.wav", np.sum(list(stems.values()), axis=0).T, SAMPLE_RATE, subtype="FLOAT")
    broken = root / "song c"
    broken.mkdir()
    (broken / "mixture.wav").write_bytes(b"RIFF not really a wave file" * 10)
    sf.write(broken / "vocals.wav", _stem(99).T, SAMPLE_RATE, subtype="FLOAT")
    return root


def _expected(dataset: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """(track, stem) -> (uSDR, cSDR) of the fixture model, computed here without the flow."""
    import soundfile

    from stemflow.engine.separator import Separator
    from stemflow.hub.loading import load_custom

    separator = Separator(load_custom(CONFIG, CHECKPOINT).model)
    out = {}
    for name in ("song a", "song b"):
        mixture, _ = soundfile.read(dataset / name / "mixture.wav", dtype="float32", always_2d=True)
        refs = {s: soundfile.read(dataset / name / f"{s}.wav", dtype="float32", always_2d=True)[0].T for s in STEMS}
        refs["instrumental"] = refs["drums"] + refs["bass"] + refs["other"]
        stems = separator.separate(mixture.T, SAMPLE_RATE)
        for stem in ("vocals", "instrumental"):
            out[(name, stem)] = (sdr(refs[stem], stems[stem]), csdr(refs[stem], stems[stem], SAMPLE_RATE))
    return out


@pytest.mark.slow  # ~40 s on 2 busy cores (Prefect harness + two separations)
def test_local_engine_metrics_leaderboard_and_baseline(prefect_api: str, dataset: Path, tmp_path: Path) -> None:
    from pipelines.evaluate import evaluate

    result = evaluate(str(dataset), str(tmp_path / "out"), [CONFIG], checkpoints={CONFIG: CHECKPOINT},
                      engine="local", eval_id="eval-local")
    metrics = pq.read_table(tmp_path / "out" / "evaluation" / "eval-local" / "metrics.parquet").to_pylist()
    model_rows = [r for r in metrics if r["model_name"] != "mixture"]
    ok = {(r["track"], r["stem"]): r for r in model_rows if r["status"] == "ok"}
    assert sorted(ok) == [("song a", "instrumental"), ("song a", "vocals"),
                          ("song b", "instrumental"), ("song b", "vocals")]
    for key, (usdr, csdr_value) in _expected(dataset).items():
        assert ok[key]["usdr_db"] == pytest.approx(usdr, abs=1e-4)
        assert ok[key]["csdr_db"] == pytest.approx(csdr_value, abs=1e-4)
        assert ok[key]["reference"] == ("vocals" if key[1] == "vocals" else "drums+bass+other")
    name = result["info"]["models"][0]["name"]  # the model_id's name part, chosen by pipelines.runtime
    assert {r["model_name"] for r in model_rows} == {name}
    errors = [r for r in metrics if r["status"] == "error"]
    assert {(r["model_name"], r["track"]) for r in errors} == {(name, "song c"), ("mixture", "song c")}
    assert result["errors"] == 2
    board = {(r["model_name"], r["stem"]): r for r in result["leaderboard"]}
    assert board[(name, "vocals")]["tracks"] == 2
    assert board[("mixture", "vocals")]["tracks"] == 2 and board[("mixture", "instrumental")]["tracks"] == 2
    mean_usdr = np.mean([ok[("song a", "vocals")]["usdr_db"], ok[("song b", "vocals")]["usdr_db"]])
    assert board[(name, "vocals")]["usdr_mean"] == pytest.approx(mean_usdr, abs=1e-9)
    assert [r["model_name"] for r in result["leaderboard"]][-1] == "mixture"
    assert not (tmp_path / "out" / "stems").exists()  # the local engine stores no stems


@pytest.mark.ray
@pytest.mark.slow
def test_ray_engine_commits_stems_and_matches_local(prefect_api: str, dataset: Path, tmp_path: Path) -> None:
    from pipelines.evaluate import evaluate
    from stemflow.store.commit import committed_tracks
    from stemflow.store.records import read_records

    out = tmp_path / "out"
    result = evaluate(str(dataset), str(out), [CONFIG], checkpoints={CONFIG: CHECKPOINT}, engine="ray",
                      eval_id="eval-ray", stage={"local_num_cpus": 2, "tracks_per_call": 1})
    model_id = result["info"]["models"][0]["model_id"]
    assert len(list(committed_tracks(str(out), model_id))) == 2
    records = read_records(str(out), model_id=model_id).to_pylist()
    assert {r["run_id"] for r in records} == {"eval-ray"} and sum(r["status"] == "error" for r in records) == 1
    metrics = pq.read_table(out / "evaluation" / "eval-ray" / "metrics.parquet").to_pylist()
    ok = {(r["track"], r["stem"]): r for r in metrics if r["status"] == "ok" and r["model_name"] != "mixture"}
    for key, (usdr, _) in _expected(dataset).items():
        assert ok[key]["usdr_db"] == pytest.approx(usdr, abs=0.01)
    assert result["errors"] == 2
