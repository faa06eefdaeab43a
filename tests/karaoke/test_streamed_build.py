"""The streamed karaoke build (stemflow.karaoke.track_build) gives the whole-array scores, gain and files."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemflow.audio.encode import encode
from stemflow.files import sha256_file
from stemflow.karaoke.dataset import backing_of, read_committed_stems
from stemflow.karaoke.scores import karaoke_scores, loudness_gain_db
from stemflow.karaoke.settings import DatasetSettings
from stemflow.karaoke.track_build import score_and_write
from stemflow.store.commit import StemObject, commit_track
from tests.karaoke.test_dataset import MODEL_ID, RATE, commit_toy_track, four_stems

REPO = Path(__file__).resolve().parents[2]


def _whole_row(output_url: str, settings: DatasetSettings, found: np.ndarray | None = None) -> tuple[dict, dict]:
    """Scores, gain and encoded files as the whole-array build computed them."""
    stems, rate, _ = read_committed_stems(output_url, MODEL_ID, "t1")
    backing, _ = backing_of(stems)
    files = {"backing": backing, "vocals": stems["vocals"]}
    if settings.stems4:
        files.update({s: stems[s] for s in ("drums", "bass", "other")})
    scores = karaoke_scores(
        stems["vocals"],
        backing,
        rate,
        presence=settings.presence,
        vocals_of_backing=found,
    )
    gain = loudness_gain_db(
        backing,
        rate,
        settings.loudness_lufs,
        max_true_peak_dbtp=settings.max_true_peak_dbtp,
        peak_signals=tuple(a for n, a in files.items() if n != "backing"),
    )
    scale = np.float32(10.0 ** (gain / 20.0))
    encoded = {
        n: encode(a * scale, rate, format=settings.format, bit_depth=settings.bit_depth).data for n, a in files.items()
    }
    return {**scores, "loudness_gain_db": gain}, encoded


def _assert_close(got: dict, want: dict) -> None:
    for key, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        elif "true_peak" in key or key == "loudness_gain_db":
            assert got[key] == pytest.approx(value, abs=1e-5), key  # float64 vs the float32 FFT true peak
        else:
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize(
    ("fmt", "bit_depth", "stems4"),
    [("flac", 24, True), ("wav", 32, False), ("wav", 16, False)],
)
def test_streamed_build_equals_the_whole_array_build(tmp_path: Path, fmt: str, bit_depth: int, stems4: bool) -> None:
    output, version = str(tmp_path / "out"), str(tmp_path / "ds" / "v1")
    commit_toy_track(output, "t1", four_stems(1.0, 3, seconds=3.3))
    settings = DatasetSettings(format=fmt, bit_depth=bit_depth, stems4=stems4, loudness_lufs=-14.0)  # type: ignore[arg-type]
    row = score_and_write(
        "t1",
        "",
        "train",
        output_url=output,
        model_id=MODEL_ID,
        version_url=version,
        settings=settings,
        vocal_separator=None,
        storage_options=None,
        block_s=0.37,
    )
    want, encoded = _whole_row(output, settings)
    _assert_close(row, want)
    assert row["accepted"] or settings.include_rejected or "backing_path" not in row
    for name, data in encoded.items():
        path = Path(version) / row[f"{name}_path"]
        expected = sf.read(io.BytesIO(data), dtype="float64")[0]
        np.testing.assert_array_equal(sf.read(path, dtype="float64")[0], expected)
    assert sorted(p.name for p in (Path(version) / "train" / "t1").iterdir()) == sorted(f"{n}.{fmt}" for n in encoded)


class _HalfBacking:
    """A streaming vocal model that "finds" half the backing, in its own block sizes."""

    def vocals_blocks(self, blocks: Iterator[np.ndarray], num_samples: int, sample_rate: int) -> Iterator[np.ndarray]:
        joined = [b * np.float32(0.5) for b in blocks]
        assert sum(b.shape[1] for b in joined) == num_samples and sample_rate == RATE
        for block in joined:
            yield from (block[:, i : i + 1000] for i in range(0, block.shape[1], 1000))


def test_residue_streams_through_the_vocal_model(tmp_path: Path) -> None:
    output, version = str(tmp_path / "out"), str(tmp_path / "ds" / "v1")
    commit_toy_track(output, "t1", four_stems(1.0, 5, seconds=2.1))
    settings = DatasetSettings(residue=True)
    streamed = score_and_write(
        "t1",
        "",
        "train",
        output_url=output,
        model_id=MODEL_ID,
        version_url=version,
        settings=settings,
        vocal_separator=_HalfBacking(),
        storage_options=None,
        block_s=0.5,
    )
    whole = score_and_write(
        "t1",
        "",
        "train",
        output_url=output,
        model_id=MODEL_ID,
        version_url=version,
        settings=settings,
        vocal_separator=lambda audio, rate: audio * np.float32(0.5),
        storage_options=None,
    )
    stems, _, _ = read_committed_stems(output, MODEL_ID, "t1")
    want, _ = _whole_row(output, settings, found=backing_of(stems)[0] * np.float32(0.5))
    assert math.isfinite(want["vocal_residue_db"])
    _assert_close(streamed, want)
    _assert_close(whole, want)


_CHILD = textwrap.dedent("""
    import json, resource, sys
    from stemflow.karaoke.settings import DatasetSettings
    from stemflow.karaoke.track_build import score_and_write
    root, model_id = sys.argv[1], sys.argv[2]
    # VmHWM is this process's own peak RSS; ru_maxrss would include the parent's at the fork
    before = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
    row = score_and_write("long", "", "train", output_url=root + "/out", model_id=model_id,
                          version_url=root + "/ds/v1", settings=DatasetSettings(loudness_lufs=-14.0),
                          vocal_separator=None, storage_options=None)
    after = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
    print(json.dumps({"before_kb": before, "after_kb": after, "row": row}))
""")


def _long_stem(path: Path, seconds: int, frequency: float) -> None:
    """A 24-bit stereo FLAC written 10 s at a time (a tone plus a little noise)."""
    rng = np.random.default_rng(int(frequency))
    block = 10 * RATE
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_24", format="FLAC") as handle:
        for start in range(0, seconds * RATE, block):
            tone = 0.2 * np.sin(2 * np.pi * frequency * (start + np.arange(block)) / RATE)
            handle.write(np.stack([tone, tone], axis=1) + 0.01 * rng.standard_normal((block, 2)))


def test_a_long_track_is_built_in_bounded_memory(tmp_path: Path) -> None:
    """10 min of vocals + instrumental: scored, gained and written (3 passes) far below the whole arrays."""

    seconds = 10 * 60
    folder = tmp_path / "out" / "stems" / MODEL_ID / "long"
    folder.mkdir(parents=True)
    stems = []
    for name, frequency in (("vocals", 440.0), ("instrumental", 110.0)):
        path = folder / f"{name}.flac"
        _long_stem(path, seconds, frequency)
        stems.append(
            StemObject(
                stem=name,
                file_name=path.name,
                size=path.stat().st_size,
                sha256=sha256_file(path),
            )
        )
    commit_track(
        str(tmp_path / "out"),
        MODEL_ID,
        "long",
        stems,
        source_url="file:///music/long.wav",
        run_id="r1",
    )
    whole_mb = 4 * seconds * RATE * 2 * 4 / 1e6  # vocals, instrumental, backing x gain, mixture (float32)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path), MODEL_ID],
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
    print(f"child peak RSS {report['after_kb'] / 1024:.0f} MB, grown by {grown_mb:.0f} MB (whole: {whole_mb:.0f} MB)")
    assert grown_mb < whole_mb / 2
    row = report["row"]
    assert row["duration_s"] == seconds and row["backing_source"] == "instrumental"
    written = tmp_path / "ds" / "v1" / row["backing_path"]
    assert sf.info(written).frames == seconds * RATE
