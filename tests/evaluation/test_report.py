"""Tests of stemflow.report: flags with known causes, the files written, and the page in headless Chromium.

The catalogue output is built directly with the storage helpers (stems written
write-once, commit markers, Parquet parts) from synthetic tracks whose defects
are known: a clipped stem, a silent stem, a track whose stems do not add up.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from matplotlib import image as mpimg

from stemflow.audio.encode import encode
from stemflow.evaluation.flags import Flag, Thresholds, flag_rows
from stemflow.evaluation.references import References
from stemflow.evaluation.report import build_report
from stemflow.evaluation.results import write_evaluation
from stemflow.evaluation.scoring import baseline_rows, metrics_table, score_track
from stemflow.measures.quality import stem_quality, track_quality
from stemflow.store.commit import commit_track, write_stem
from stemflow.store.records import stem_rows, write_part
from stemflow.store.runs import RunManifest, write_run_manifest

SAMPLE_RATE = 22050
SECONDS = 3


def _signal(seed: int, gain: float) -> np.ndarray:
    t = np.arange(SAMPLE_RATE * SECONDS) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    tone = np.sin(2 * np.pi * (110 + 30 * seed) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    return (gain * np.stack([tone, tone * 0.8]) + 0.01 * gain * rng.standard_normal((2, t.size))).astype(np.float32)


def _tracks() -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """track_id -> (mixture, stems).

    t-clean sums exactly; t-clip clips; t-silent has silent vocals; t-resid does not add up.
    """
    out = {}
    for index, track_id in enumerate(["t-clean", "t-clip", "t-silent", "t-resid"]):
        vocals = _signal(index, 0.3)
        instrumental = _signal(index + 10, 0.3)
        if track_id == "t-clip":
            vocals = np.clip(vocals * 6, -1, 1)
        if track_id == "t-silent":
            vocals = np.zeros_like(vocals)
        mixture = vocals + instrumental
        stems = {"vocals": vocals, "instrumental": instrumental}
        if track_id == "t-resid":
            stems = {"vocals": vocals * 0.5, "instrumental": instrumental * 0.5}
        out[track_id] = (mixture.astype(np.float32), stems)
    return out


def _write_catalogue_output(root: Path, model_ids: tuple[str, ...] = ("model-a-000000000000-s00000000",)) -> Path:
    out = root / "out"
    sources = root / "catalogue"
    sources.mkdir(parents=True)
    for m_index, model_id in enumerate(model_ids):
        rows = []
        for track_id, (mixture, stems) in _tracks().items():
            source = sources / f"{track_id}.wav"
            sf.write(source, np.clip(mixture, -1, 1).T, SAMPLE_RATE, subtype="FLOAT")
            if m_index:  # a second model: stems 1 % quieter (residual -40 dB)
                stems = {k: v * 0.99 for k, v in stems.items()}
            stored, columns = [], {}
            for stem, audio in stems.items():
                data = encode(audio, SAMPLE_RATE, format="flac", bit_depth=24, clip="clamp").data
                obj = write_stem(str(out), model_id, track_id, stem, "flac", data)
                stored.append(obj)
                columns[stem] = {**stem_quality(audio, SAMPLE_RATE, mixture), "stem_url": f"{out}/x",
                                 "stem_bytes": obj.size, "stem_sha256": obj.sha256}
            commit_track(str(out), model_id, track_id, stored, source_url=source.as_uri(), run_id="r1")
            track = {"track_id": track_id, "source_url": source.as_uri(), "duration_s": float(SECONDS),
                     "sample_rate": SAMPLE_RATE, **track_quality(mixture, stems)}
            rows += stem_rows(track, columns)
        write_part(str(out), model_id, "2026-11-24", "r1", 0, rows)
    # the run's manifest names its catalogue: the report reads mixtures only from there
    write_run_manifest(str(out), RunManifest(run_id="r1", status="succeeded", started_at="2026-11-24T10:00:00+00:00",
                                             inputs={"catalogue_url": str(sources)}))
    return out


def test_flag_rows_thresholds_exact() -> None:
    rows = [
        {"model_id": "m", "track_id": "a", "stem": "vocals", "status": "ok", "clipped_ratio": 0.01,
         "true_peak_dbtp": 0.5, "residual_db": -20.0, "silence_ratio": 0.0, "bleed_ratio": 0.1},
        {"model_id": "m", "track_id": "a", "stem": "instrumental", "status": "ok", "clipped_ratio": 0.0,
         "true_peak_dbtp": -0.05, "residual_db": -20.0, "silence_ratio": 0.95, "bleed_ratio": 0.5},
        {"model_id": "m", "track_id": "b", "stem": "vocals", "status": "ok", "clipped_ratio": 0.0,
         "true_peak_dbtp": -3.0, "residual_db": -120.0, "silence_ratio": 0.9, "bleed_ratio": None},
        {"model_id": "m", "track_id": "c", "stem": None, "status": "error", "residual_db": 0.0},
    ]
    flags = flag_rows(rows)
    assert [(f.track, f.stem, f.kind, f.column, f.value) for f in flags] == [
        ("a", "vocals", "clipping", "clipped_ratio", 0.01),
        ("a", None, "residual", "residual_db", -20.0),  # once per track
        ("a", "instrumental", "clipping", "true_peak_dbtp", -0.05),
        ("a", "instrumental", "silence", "silence_ratio", 0.95),
        ("a", "instrumental", "bleed", "bleed_ratio", 0.5),
    ]  # track b: silence exactly at the threshold is not flagged; error rows are skipped
    relaxed = flag_rows(rows, Thresholds(bleed_ratio=0.6, may_be_silent=("instrumental",), true_peak_dbtp=0.0))
    assert {(f.track, f.stem, f.kind) for f in relaxed} == {("a", "vocals", "clipping"), ("a", None, "residual")}


@pytest.fixture(scope="module")
def catalogue_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_catalogue_output(tmp_path_factory.mktemp("report"),
                                   ("model-a-000000000000-s00000000", "model-b-111111111111-s11111111"))


@pytest.fixture(scope="module")
def report(catalogue_output: Path):
    refs = _tracks()["t-clean"]
    references = References(refs[0], {"vocals": refs[1]["vocals"], "drums": refs[1]["instrumental"]}, SAMPLE_RATE)
    estimates = {"vocals": refs[1]["vocals"] + 0.01, "instrumental": refs[1]["instrumental"]}
    rows = score_track(model_name="model-a", model_id="model-a-000000000000-s00000000", track="t-clean",
                       references=references, estimates=estimates) + baseline_rows("t-clean", references)
    info = {"models": [{"name": "model-a", "model_id": "model-a-000000000000-s00000000",
                        "reported_sdr": "9.65 dB (SDR, mean of 4 stems, MUSDB18-HQ test)"}]}
    write_evaluation(str(catalogue_output), "eval-test", metrics_table(rows), info=info)
    return build_report(str(catalogue_output), name="nightly", spectrogram_tracks=3, excerpt_s=2.0)


def test_report_flags_the_known_defects(report) -> None:
    kinds = {(f.model_id[:7], f.track, f.stem, f.kind) for f in report.flags}
    for model in ("model-a", "model-b"):
        assert (model, "t-clip", "vocals", "clipping") in kinds
        assert (model, "t-silent", "vocals", "silence") in kinds
        assert (model, "t-resid", None, "residual") in kinds
    assert not any(f.track == "t-clean" for f in report.flags)
    assert all(isinstance(f, Flag) for f in report.flags)
    assert report.record_rows == 2 * 4 * 2 and report.evaluations == ("eval-test",)


def test_report_files_and_contents(report, catalogue_output: Path) -> None:
    page_path = catalogue_output / "reports" / "nightly.html"
    assert report.html_url.endswith("reports/nightly.html") and page_path.is_file()
    page = page_path.read_text()
    pngs = sorted((catalogue_output / "reports" / "nightly").glob("*.png"))
    assert len(pngs) == len(report.png_urls) == 7 + 3 + 2 + 3  # histograms, comparison, eval box plots, strips
    for png in pngs:
        pixels = mpimg.imread(png)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and float(pixels[..., :3].std()) > 0.02
    assert page.count("data:image/png;base64,") == len(pngs)
    for rule in ("clipped_ratio &gt; 0.0001", "true_peak_dbtp &gt; -0.1 dBTP", "residual_db &gt; -30 dB",
                 "silence_ratio &gt; 0.9", "bleed_ratio &gt; 0.35"):
        assert rule in page
    assert "Models compared" in page and "Evaluation eval-test" in page and "uSDR mean (dB)" in page
    assert "model-a: its authors report 9.65 dB (SDR, mean of 4 stems, MUSDB18-HQ test)" in page
    assert page.count("data:audio/flac;base64,") == 3  # one mixture excerpt per track shown
    links = re.findall(r'<audio controls preload="none" src="(\.\./stems/[^"]+)"', page)
    assert len(links) == 3 * 2
    for link in links:
        assert (page_path.parent / link).resolve().is_file()
    assert "http://" not in page and "https://" not in page  # self-contained


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    return None


_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--hide-scrollbars"]


def _screenshot(browser: str, page: Path, shot: Path, profile: Path) -> list[str]:
    """Render ``page`` to ``shot`` (1280x2000); the console/uncaught-error lines Chromium logged."""
    run = subprocess.run(
        [browser, *_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1280,2000",
         "--enable-logging=stderr", "--v=0", page.as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def _assert_not_blank(shot: Path) -> None:
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    non_white = float(np.mean(pixels.min(axis=-1) < 0.9))
    assert float(pixels.std()) > 0.05 and non_white > 0.05, (pixels.std(), non_white)


def _page_errors(browser: str, page: Path, profile: Path) -> tuple[int, str, str]:
    """``(count, text)`` of the page's own error collector after load, and the DOM."""
    dom = subprocess.run(
        [browser, *_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180,
    ).stdout
    found = re.search(r'<pre id="page-errors" data-count="(\d+)">([^<]*)</pre>', dom)
    assert found is not None, dom[:500]
    return int(found.group(1)), found.group(2).strip(), dom


def test_report_renders_in_headless_chromium(report, catalogue_output: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian package `chromium`)")
    page = catalogue_output / "reports" / "nightly.html"
    shot = catalogue_output / "reports" / "nightly-screenshot.png"
    assert _screenshot(browser, page, shot, tmp_path / "profile-1") == []
    _assert_not_blank(shot)
    count, text, dom = _page_errors(browser, page, tmp_path / "profile-2")
    assert (count, text) == (0, "")
    assert dom.count("<img") == len(report.png_urls) and "Flagged stems" in dom


def test_page_error_hook_reports_a_broken_image(tmp_path: Path) -> None:
    """The page's own error collector works: a missing image is counted (so 0 above means something)."""
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian package `chromium`)")
    out = _write_catalogue_output(tmp_path)
    result = build_report(str(out), name="broken", spectrogram_tracks=1, excerpt_s=1.0)
    page = Path(result.html_url)
    page.write_text(page.read_text().replace("</body>", '<img src="missing.png"></body>'))
    count, text, _ = _page_errors(browser, page, tmp_path / "profile")
    assert count == 1 and "missing.png" in text


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.prefect
def test_report_of_a_real_catalogue_run(tmp_path: Path, tiny_model: Any, catalogue_kit: Any, prefect_api: str) -> None:
    """The nightly flow on a small catalogue (fixture vocals model, 3 good + 4 bad files), then its report."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("PREFECT_HOME", str(tmp_path / "prefect-home"))  # effective if prefect is not imported yet
    from pipelines.separate_catalogue import separate_catalogue

    catalogue, out = tmp_path / "catalogue", tmp_path / "out"
    catalogue_kit.write(catalogue, 3, seconds=2.0)
    summary = separate_catalogue(str(catalogue), str(out), model=tiny_model.config, checkpoint=tiny_model.checkpoint,
                                 shard_size=4, stage={"local_num_cpus": 2, "tracks_per_call": 1})
    assert summary["ok"] == 3 and summary["errors"] == 4
    result = build_report(str(out), name="nightly", excerpt_s=2.0)
    assert result.record_rows == 3 * 2 + 4  # vocals + instrumental per track, one row per bad file
    # a single-target model's complement is exact: no residual flags
    assert not [f for f in result.flags if f.kind == "residual"]
    page = Path(result.html_url)
    text = page.read_text()
    assert "4 error rows" in text and text.count("data:audio/flac;base64,") == 3
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian package `chromium`)")
    shot = out / "reports" / "nightly-screenshot.png"
    assert _screenshot(browser, page, shot, tmp_path / "profile-1") == []
    _assert_not_blank(shot)
    assert _page_errors(browser, page, tmp_path / "profile-2")[:2] == (0, "")


def test_report_of_an_empty_output_is_an_error(tmp_path: Path) -> None:
    from stemflow.errors import StemflowError

    with pytest.raises(StemflowError, match="nothing to report"):
        build_report(str(tmp_path))
    assert not (tmp_path / "reports").exists()
