"""Tests of stemflow.evaluation on synthetic references with known answers.

References are independent white-noise stems; an estimate is the reference plus
noise scaled to an exact energy ratio, so its uSDR is that SNR (to the 1e-7 eps)
and its cSDR (median of 1 s frames) is within a fraction of a dB of it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from stemflow.errors import StorageError
from stemflow.evaluation.leaderboard import LEADERBOARD_SCHEMA, leaderboard, leaderboard_markdown
from stemflow.evaluation.references import (
    MIXTURE_BASELINE,
    References,
    discover_dataset,
    load_references,
    reference_for,
)
from stemflow.evaluation.results import read_evaluations, write_evaluation
from stemflow.evaluation.scoring import METRICS_SCHEMA, baseline_rows, error_metrics_row, metrics_table, score_track

SAMPLE_RATE = 16000
SECONDS = 4


def _noise(seed: int, gain: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((2, SAMPLE_RATE * SECONDS)) * gain).astype(np.float32)


def _references(seed: int) -> References:
    stems = {name: _noise(seed * 10 + i) for i, name in enumerate(("drums", "bass", "other", "vocals"))}
    mixture = np.sum([s.astype(np.float64) for s in stems.values()], axis=0).astype(np.float32)
    return References(mixture, stems, SAMPLE_RATE)


def _at_snr(reference: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """``reference + n`` with ``sum ref^2 / sum n^2 = 10^(snr/10)`` exactly (float64 maths)."""
    ref = reference.astype(np.float64)
    noise = np.random.default_rng(seed).standard_normal(ref.shape)
    noise *= math.sqrt(np.sum(ref**2) / np.sum(noise**2) / 10 ** (snr_db / 10))
    return ref + noise  # float64: no float32 rounding of the known answer


def test_reference_for_maps_two_stem_and_complement_names() -> None:
    refs = _references(1).stems
    label, instrumental = reference_for("instrumental", refs)
    assert label == "drums+bass+other"
    np.testing.assert_allclose(instrumental, refs["drums"] + refs["bass"] + refs["other"], atol=1e-6)
    label, no_drums = reference_for("no_drums", refs)
    assert label == "bass+other+vocals"
    np.testing.assert_allclose(no_drums, refs["bass"] + refs["other"] + refs["vocals"], atol=1e-6)
    assert reference_for("vocals", refs)[0] == "vocals"
    assert reference_for("piano", refs) is None


def test_usdr_equals_the_known_snr_and_csdr_is_close() -> None:
    refs = _references(2)
    estimates = {"vocals": _at_snr(refs.stems["vocals"], 12.0, 5),
                 "instrumental": _at_snr(reference_for("instrumental", refs.stems)[1], 6.0, 6),
                 "piano": refs.mixture}  # no reference: not scored
    rows = score_track(model_name="m", model_id="m-id", track="t", references=refs, estimates=estimates)
    by_stem = {r["stem"]: r for r in rows}
    assert set(by_stem) == {"vocals", "instrumental"}
    assert by_stem["vocals"]["usdr_db"] == pytest.approx(12.0, abs=1e-6)
    assert by_stem["instrumental"]["usdr_db"] == pytest.approx(6.0, abs=1e-6)
    assert by_stem["vocals"]["csdr_db"] == pytest.approx(12.0, abs=0.3)
    assert by_stem["instrumental"]["csdr_db"] == pytest.approx(6.0, abs=0.3)
    # white noise at a known SNR: SI-SDR = 10 log10(alpha^2 |s|^2 / |alpha s - s_hat|^2), alpha ~ 1
    assert by_stem["vocals"]["si_sdr_db"] == pytest.approx(12.0, abs=0.1)
    assert by_stem["instrumental"]["reference"] == "drums+bass+other"
    assert by_stem["vocals"]["duration_s"] == SECONDS and by_stem["vocals"]["sample_rate"] == SAMPLE_RATE
    # quality columns: residual of mixture - (all three estimates), the unscored one included
    residual = refs.mixture.astype(np.float64) - sum(np.asarray(e, dtype=np.float64) for e in estimates.values())
    expected = 10 * math.log10(np.sum(residual**2) / np.sum(refs.mixture.astype(np.float64) ** 2))
    assert by_stem["vocals"]["residual_db"] == pytest.approx(expected, abs=1e-4)
    assert 0 < by_stem["vocals"]["energy_share"] < 1


def test_mixture_baseline_scores_the_energy_ratio() -> None:
    refs = _references(3)
    rows = {r["stem"]: r for r in baseline_rows("t", refs)}
    assert list(rows) == ["vocals", "drums", "bass", "other", "instrumental"]
    energy = {s: float(np.sum(a.astype(np.float64) ** 2)) for s, a in refs.stems.items()}
    err = float(np.sum((refs.mixture.astype(np.float64) - refs.stems["vocals"]) ** 2))
    assert rows["vocals"]["usdr_db"] == pytest.approx(10 * math.log10(energy["vocals"] / err), abs=1e-4)
    assert rows["vocals"]["usdr_db"] == pytest.approx(-4.77, abs=0.15)  # 1 : 3 equal-energy stems
    assert rows["instrumental"]["usdr_db"] == pytest.approx(4.77, abs=0.15)
    assert all(r["model_name"] == MIXTURE_BASELINE and r.get("residual_db") is None for r in rows.values())


@pytest.fixture(scope="module")
def model_rows() -> list[dict]:
    """Model "two" on three tracks at vocals SNR 5, 10, 20 dB (instrumental +3 dB), the baseline, one error."""
    rows = []
    snrs = {"t0": 5.0, "t1": 10.0, "t2": 20.0}
    for i, (track, snr) in enumerate(snrs.items()):
        refs = _references(10 + i)
        est = {"vocals": _at_snr(refs.stems["vocals"], snr, i),
               "instrumental": _at_snr(reference_for("instrumental", refs.stems)[1], snr + 3, 100 + i)}
        rows += score_track(model_name="two", model_id="two-abc", track=track, references=refs, estimates=est)
        rows += baseline_rows(track, refs)
    rows.append(error_metrics_row("two", "two-abc", "broken", "AudioDecodeError: bad"))
    return rows


def test_leaderboard_known_answers_and_baseline_row(model_rows: list[dict]) -> None:
    table = metrics_table(model_rows)
    board = leaderboard(table)
    assert board.schema == LEADERBOARD_SCHEMA
    rows = {(r["model_name"], r["stem"]): r for r in board.to_pylist()}
    assert [r["model_name"] for r in board.to_pylist()][-1] == MIXTURE_BASELINE  # baseline last
    vocals = rows[("two", "vocals")]
    assert vocals["tracks"] == 3  # the error row is not a track here
    assert vocals["usdr_mean"] == pytest.approx((5 + 10 + 20) / 3, abs=1e-5)
    assert vocals["usdr_median"] == pytest.approx(10.0, abs=1e-5)
    assert vocals["csdr_median"] == pytest.approx(10.0, abs=0.3)
    assert rows[("two", "instrumental")]["usdr_mean"] == pytest.approx((8 + 13 + 23) / 3, abs=1e-5)
    assert rows[(MIXTURE_BASELINE, "vocals")]["usdr_mean"] == pytest.approx(-4.77, abs=0.15)
    assert rows[(MIXTURE_BASELINE, "drums")]["tracks"] == 3
    text = leaderboard_markdown(board)
    assert "cSDR median (dB)" in text and "uSDR mean (dB)" in text and "| mixture | vocals | 3 |" in text
    assert "| SDR" not in text  # every SDR is labelled


def test_metrics_parquet_and_leaderboard_files_round_trip(tmp_path: Path, model_rows: list[dict]) -> None:
    rows = model_rows
    table = metrics_table(rows)
    assert table.schema == METRICS_SCHEMA
    model = {"name": "two", "model_id": "two-abc", "reported_sdr": "12.00 dB (x, y)"}
    info = {"dataset": "synthetic", "models": [model]}
    urls = write_evaluation(str(tmp_path), "eval-1", table, info=info)
    base = tmp_path / "evaluation" / "eval-1"
    assert sorted(p.name for p in base.iterdir()) == [
        "leaderboard.json", "leaderboard.md", "leaderboard.parquet", "metrics.parquet"]
    assert set(urls) == {p.name for p in base.iterdir()}
    back = pq.read_table(base / "metrics.parquet")
    assert back.equals(table)
    assert back.num_rows == 3 * 2 + 3 * 5 + 1
    error = [r for r in back.to_pylist() if r["status"] == "error"]
    assert error == [{**{k: None for k in METRICS_SCHEMA.names}, "model_name": "two", "model_id": "two-abc",
                      "track": "broken", "status": "error", "error": "AudioDecodeError: bad"}]
    assert pq.read_table(base / "leaderboard.parquet").equals(leaderboard(table))
    body = json.loads((base / "leaderboard.json").read_text())
    assert body["info"] == info and len(body["rows"]) == 2 + 5
    assert (base / "leaderboard.md").read_text().endswith("\n\ntwo: its authors report 12.00 dB (x, y)\n")
    assert body["rows"][0]["usdr_mean"] == pytest.approx(leaderboard(table).to_pylist()[0]["usdr_mean"])
    assert list(read_evaluations(str(tmp_path))) == ["eval-1"]
    assert read_evaluations(str(tmp_path))["eval-1"].equals(table)


def test_metrics_table_rejects_unknown_columns() -> None:
    with pytest.raises(StorageError, match="sdr_db"):
        metrics_table([{"model_name": "m", "sdr_db": 1.0}])


def test_musdb_folder_discovery_and_references(tmp_path: Path) -> None:
    refs = _references(4)
    for track in ("B track", "A track"):
        folder = tmp_path / "test" / track
        folder.mkdir(parents=True)
        sf.write(folder / "mixture.wav", refs.mixture.T, SAMPLE_RATE, subtype="FLOAT")
        for stem, audio in refs.stems.items():
            sf.write(folder / f"{stem}.wav", audio.T, SAMPLE_RATE, subtype="FLOAT")
    (tmp_path / "incomplete").mkdir()
    sf.write(tmp_path / "incomplete" / "vocals.wav", refs.stems["vocals"].T, SAMPLE_RATE)
    tracks = discover_dataset(str(tmp_path))
    assert [t.name for t in tracks] == ["A track", "B track"]
    assert sorted(tracks[0].stem_urls) == ["bass", "drums", "other", "vocals"]
    assert not tracks[0].is_stem_file
    loaded = load_references(tracks[0], SAMPLE_RATE)
    np.testing.assert_array_equal(loaded.mixture, refs.mixture)
    np.testing.assert_array_equal(loaded.stems["vocals"], refs.stems["vocals"])
    with pytest.raises(StorageError, match="no reference tracks"):
        discover_dataset(str(tmp_path / "incomplete"))


def test_stem_mp4_discovery_and_references() -> None:
    stempeg = pytest.importorskip("stempeg")
    path = Path(stempeg.example_stem_path())
    tracks = discover_dataset(str(path.parent))
    assert [t.name for t in tracks] == ["The Easton Ellises - Falcon 69"]
    assert tracks[0].is_stem_file
    refs = load_references(tracks[0], 44100)
    assert list(refs.stems) == ["drums", "bass", "other", "vocals"]
    assert refs.mixture.shape[0] == 2 and refs.duration_s == pytest.approx(6.08, abs=0.05)
    # the MUSDB mixture is the sum of the stems, up to AAC coding (first 6 s; the end holds a decoder burst)
    cut = slice(0, 6 * 44100)
    total = np.sum([s[:, cut] for s in refs.stems.values()], axis=0)
    error = np.sum((total - refs.mixture[:, cut]) ** 2) / np.sum(refs.mixture[:, cut] ** 2)
    assert 10 * math.log10(error) < -20
