"""Streamed scoring (stemflow.evaluation.streamed) gives the rows of the whole-array score_track, in bounded memory."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemflow.errors import StorageError
from stemflow.evaluation.inputs import AudioInput, open_inputs
from stemflow.evaluation.references import (
    ReferenceTrack,
    discover_dataset,
    load_references,
    reference_inputs,
)
from stemflow.evaluation.scoring import baseline_rows, score_track
from stemflow.evaluation.streamed import baseline_rows_streamed, score_track_streamed
from stemflow.files import sha256_file

RATE = 16000
REPO = Path(__file__).resolve().parents[2]


def _write_track(root: Path, seconds: float, seed: int) -> tuple[ReferenceTrack, dict[str, Path]]:
    """A MUSDB-style folder (float WAV) and two 24-bit FLAC estimates 7 samples shorter."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    stems = {s: (rng.standard_normal((2, n)) * 0.1).astype(np.float32) for s in ("drums", "bass", "other", "vocals")}
    mixture = np.sum([s.astype(np.float64) for s in stems.values()], axis=0).astype(np.float32)
    folder = root / "set" / "song"
    folder.mkdir(parents=True)
    sf.write(folder / "mixture.wav", mixture.T, RATE, subtype="FLOAT")
    for name, audio in stems.items():
        sf.write(folder / f"{name}.wav", audio.T, RATE, subtype="FLOAT")
    estimates = {
        "vocals": stems["vocals"] + 0.05 * rng.standard_normal((2, n)).astype(np.float32),
        "instrumental": mixture - stems["vocals"],
        "guitar": stems["other"],
    }
    paths = {}
    for name, audio in estimates.items():
        paths[name] = root / f"{name}.flac"
        sf.write(paths[name], np.clip(audio[:, :-7], -1, 1).T, RATE, subtype="PCM_24")
    return discover_dataset(str(root / "set"))[0], paths


def _assert_rows_equal(got: list[dict], want: list[dict]) -> None:
    assert [(r["stem"], r["reference"]) for r in got] == [(r["stem"], r["reference"]) for r in want]
    for g, w in zip(got, want):
        assert set(g) == set(w)
        for key, value in w.items():
            if isinstance(value, float) and not math.isnan(value):
                assert g[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
            elif isinstance(value, float):
                assert math.isnan(g[key]), key
            else:
                assert g[key] == value, key


@pytest.mark.parametrize("max_duration_s", [None, 2.3])
def test_streamed_rows_equal_the_whole_array_rows(tmp_path: Path, max_duration_s: float | None) -> None:
    track, paths = _write_track(tmp_path, 5.4, 1)
    decoded = {s: sf.read(p, dtype="float32")[0].T for s, p in paths.items()}
    want = score_track(
        model_name="m",
        model_id="m-1",
        track=track.name,
        references=load_references(track, RATE),
        estimates=decoded,
        max_duration_s=max_duration_s,
    )
    got = score_track_streamed(
        model_name="m",
        model_id="m-1",
        track=track.name,
        references=reference_inputs(track),
        estimates={s: AudioInput(str(p)) for s, p in paths.items()},
        max_duration_s=max_duration_s,
        block_s=0.77,
    )
    assert [r["stem"] for r in got] == [
        "vocals",
        "instrumental",
    ]  # guitar has no reference
    assert got[0]["duration_s"] == (2.3 if max_duration_s else (5.4 * RATE - 7) / RATE)
    _assert_rows_equal(got, want)


def test_streamed_baseline_equals_the_whole_array_baseline(tmp_path: Path) -> None:
    track, _ = _write_track(tmp_path, 3.2, 2)
    want = baseline_rows(track.name, load_references(track, RATE))
    got = baseline_rows_streamed(track, RATE, block_s=1.1)
    _assert_rows_equal(got, want)


def test_quality_columns_are_streamed_or_left_null(tmp_path: Path) -> None:
    track, paths = _write_track(tmp_path, 2.0, 3)
    common = {
        "model_name": "m",
        "model_id": "m-1",
        "track": track.name,
        "references": reference_inputs(track),
        "estimates": {"vocals": AudioInput(str(paths["vocals"]))},
    }
    measured = score_track_streamed(**common, block_s=0.37)[0]
    whole = score_track_streamed(**common, block_s=10.0)[0]
    for column in ("loudness_lufs", "true_peak_dbtp", "rms_dbfs", "silence_ratio", "energy_share"):
        assert math.isfinite(measured[column]), column
        assert measured[column] == pytest.approx(whole[column], rel=1e-9, abs=1e-9), column
    skipped = score_track_streamed(**common, quality=None)[0]
    assert "loudness_lufs" not in skipped and skipped["bleed_ratio"] is None
    assert skipped["csdr_db"] == pytest.approx(measured["csdr_db"], rel=1e-12)


def test_a_stem_that_is_not_its_listed_bytes_is_refused(tmp_path: Path) -> None:
    _, paths = _write_track(tmp_path, 1.0, 4)
    path = paths["vocals"]
    good = AudioInput(str(path), size=path.stat().st_size, sha256=sha256_file(path))
    with open_inputs([good], None) as opened:
        assert next(iter(opened.values())).num_samples == RATE - 7
    wrong = AudioInput(str(path), size=path.stat().st_size, sha256="0" * 64)
    with (
        pytest.raises(StorageError, match="not the stem its marker lists"),
        open_inputs([wrong], None),
    ):
        pass
    with (
        pytest.raises(StorageError, match="a committed stem is missing"),
        open_inputs([AudioInput(str(tmp_path / "gone.flac"), size=1, sha256="0" * 64)], None),
    ):
        pass


_CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from stemflow.evaluation.inputs import AudioInput
    from stemflow.evaluation.streamed import score_track_streamed
    from stemflow.measures.metric_streams import StemMetricsStream
    root = sys.argv[1]
    refs = {"mixture": AudioInput(root + "/mixture.flac"), "vocals": AudioInput(root + "/vocals.flac")}
    # VmHWM is this process's own peak RSS; ru_maxrss would include the parent's at the fork
    before = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
    rows = score_track_streamed(model_name="m", model_id="m-1", track="long", references=refs,
                                estimates={"vocals": AudioInput(root + "/estimate.flac")},
                                metrics=lambda rate: StemMetricsStream(rate, columns=("csdr_db", "usdr_db")))
    after = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
    print(json.dumps({"before_kb": before, "after_kb": after, "rows": rows}))
""")


def _write_long_flac(path: Path, seconds: int, rate: int, seed: int) -> None:
    """A stereo 16-bit FLAC written 10 s at a time (a tone plus a little noise: quick to encode)."""
    rng = np.random.default_rng(seed)
    block = 10 * rate
    with sf.SoundFile(path, "w", rate, 2, subtype="PCM_16", format="FLAC") as handle:
        for start in range(0, seconds * rate, block):
            t = (start + np.arange(block)) / rate
            tone = 0.3 * np.sin(2 * np.pi * (220 + 110 * seed) * t)
            handle.write(np.stack([tone, tone], axis=1) + 0.01 * rng.standard_normal((block, 2)))


def test_a_20_minute_track_is_scored_in_bounded_memory(tmp_path: Path) -> None:
    """cSDR/uSDR of 20 min at 44.1 kHz: the peak RSS grows by far less than the arrays would take.

    (The spectral scores' state is as bounded, but 20 min of 512-band mel spectra take minutes on CI.)
    """
    rate, seconds = 44100, 20 * 60
    for seed, name in enumerate(("mixture", "vocals", "estimate")):
        _write_long_flac(tmp_path / f"{name}.flac", seconds, rate, seed)
    whole_mb = 3 * seconds * rate * 2 * 4 / 1e6  # mixture, reference and estimate as float32: 1270 MB
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    grown_mb = (report["after_kb"] - report["before_kb"]) / 1024
    assert grown_mb < whole_mb / 2, f"scoring grew the peak RSS by {grown_mb:.0f} MB (whole arrays: {whole_mb:.0f} MB)"
    row = report["rows"][0]
    assert row["duration_s"] == seconds and row["stem"] == "vocals"
    assert math.isfinite(row["csdr_db"]) and math.isfinite(row["usdr_db"]) and "si_sdr_db" not in row
    peak_mb = report["after_kb"] / 1024
    print(f"child peak RSS {peak_mb:.0f} MB, grown by {grown_mb:.0f} MB while scoring (whole: {whole_mb:.0f} MB)")
