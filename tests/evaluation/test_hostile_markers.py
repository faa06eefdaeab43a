"""Reads that follow marker contents: a hostile marker becomes a note or an error row, never a read.

Markers and records are data anyone with write access to the output can change.
The report follows a marker's ``source_url`` (to play the mixture) and every
reader follows its ``file_name``s; both are checked before anything is opened.
The report runs in a child process with a memory cap and a timeout, so a
regression that reads ``/dev/zero`` fails the test instead of the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemflow.audio.encode import encode
from stemflow.catalogue.manifests import MANIFEST_SUFFIXES
from stemflow.errors import StorageError
from stemflow.evaluation.committed import read_committed
from stemflow.measures.quality import stem_quality, track_quality
from stemflow.store.commit import commit_track, marker_url, stored_stem_url, write_stem
from stemflow.store.records import stem_rows, write_part
from stemflow.store.runs import RunManifest, write_run_manifest
from stemflow.store.sources import catalogue_roots, check_source_url

MODEL = "model-a-000000000000-s00000000"
RATE = 8000


def _signal(seed: int) -> np.ndarray:
    t = np.arange(RATE) / RATE
    return (0.3 * np.stack([np.sin(2 * np.pi * (200 + 50 * seed) * t)] * 2)).astype(np.float32)


def _output(root: Path, sources: dict[str, str]) -> Path:
    """An output with one committed track per ``{track_id: source_url}``, its rows and the run manifest."""
    out, catalogue = root / "out", root / "catalogue"
    catalogue.mkdir(exist_ok=True)
    rows = []
    for index, (track_id, source_url) in enumerate(sources.items()):
        vocals, backing = _signal(index), _signal(index + 5)
        mixture = vocals + backing
        stored, columns = [], {}
        for stem, audio in (("vocals", vocals), ("instrumental", backing)):
            obj = write_stem(str(out), MODEL, track_id, stem, "flac", encode(audio, RATE, format="flac").data)
            stored.append(obj)
            columns[stem] = {**stem_quality(audio, RATE, mixture), "stem_url": stored_stem_url(str(out), MODEL,
                                                                                                 track_id, obj)}
        commit_track(str(out), MODEL, track_id, stored, source_url=source_url, run_id="r1")
        rows += stem_rows({"track_id": track_id, "source_url": source_url, "duration_s": 1.0,
                           "sample_rate": RATE, **track_quality(mixture, {"vocals": vocals, "instrumental": backing})},
                          columns)
    write_part(str(out), MODEL, "2026-11-24", "r1", 0, rows)
    write_run_manifest(str(out), RunManifest(run_id="r1", status="succeeded",
                                             started_at="2026-11-24T10:00:00+00:00",
                                             inputs={"catalogue_url": str(catalogue)}))
    return out


REPORT = (
    "import resource, sys\n"
    "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
    "from stemflow.evaluation.report import build_report\n"
    "result = build_report(sys.argv[1], name='r', spectrogram_tracks=10, excerpt_s=0.5)\n"
    "print(result.html_url)\n"
)


def _report(out: Path) -> str:
    done = subprocess.run([sys.executable, "-c", REPORT, str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip()).read_text()


@pytest.mark.slow
def test_the_report_reads_no_mixture_a_marker_names_outside_the_catalogue(tmp_path: Path) -> None:
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    honest = catalogue / "honest.wav"
    sf.write(honest, (_signal(0) + _signal(5)).T, RATE)
    os.mkfifo(catalogue / "pipe.wav")
    (catalogue / "escape.wav").symlink_to("/etc/hostname")
    out = _output(tmp_path, {"t-honest": honest.as_uri(), "t-zero": "/dev/zero", "t-fifo": str(catalogue / "pipe.wav"),
                             "t-link": str(catalogue / "escape.wav"), "t-dots": f"{catalogue}/../../etc/hostname",
                             "t-http": "http://127.0.0.1:9/x.wav"})
    # and a marker hand-edited to name a file outside its track folder
    hostile = Path(marker_url(str(out), MODEL, "t-http"))
    body = json.loads(hostile.read_text())
    body["stems"][0]["file_name"] = "../../../../../../etc/hostname"
    hostile.write_text(json.dumps(body))
    page = _report(out)
    assert page.count("data:audio/flac;base64,") == 1  # the honest track's mixture only
    for track, why in (("t-zero", "outside"), ("t-fifo", "a FIFO, not a regular file"),
                       ("t-link", "outside"), ("t-dots", "unsafe components"), ("t-http", "malformed commit marker")):
        section = page.split(f"<h3>{track}", 1)[1].split('<div class="track">', 1)[0]
        assert why in section, (track, section[:600])


def test_sources_are_read_only_under_the_allowed_roots(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.wav").write_bytes(b"x")
    (root / "out.wav").symlink_to("/etc/hostname")
    os.mkfifo(root / "fifo.wav")
    roots = [str(root)]
    assert check_source_url(str(root / "a" / "x.wav"), roots) == (root / "a" / "x.wav").as_uri()
    assert check_source_url((root / "a" / "x.wav").as_uri(), roots) == (root / "a" / "x.wav").as_uri()
    for url, why in (("/dev/zero", "outside"), (f"{root}/../cat/a/x.wav", "unsafe"), (f"{root}-evil/x.wav", "outside"),
                     (str(root / "out.wav"), "outside"), (str(root / "fifo.wav"), "FIFO"),
                     ("http://example.com/x.wav", "outside"), (f"{root}/a//x.wav", "unsafe"),
                     (f"{root}/a/x.wav?versionId=1", "unsafe"), ("", "malformed")):
        with pytest.raises(StorageError, match=why):
            check_source_url(url, roots)
    s3_roots = ["s3://bucket/cat"]
    assert check_source_url("s3://bucket/cat/t.wav", s3_roots) == "s3://bucket/cat/t.wav"
    for url in ("s3://other/cat/t.wav", "s3://bucket/cat-evil/t.wav", "s3://bucket/t.wav", "gs://bucket/cat/t.wav"):
        with pytest.raises(StorageError, match="outside"):
            check_source_url(url, s3_roots)
    assert catalogue_roots(["s3://b/lists/nightly.csv", "s3://b/music/"], MANIFEST_SUFFIXES) == ["s3://b/lists",
                                                                                                  "s3://b/music"]


def test_a_committed_stem_replaced_after_the_commit_is_not_read_as_committed(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    data = encode(_signal(1), RATE, format="flac").data
    stem = write_stem(out, MODEL, "t1", "vocals", "flac", data)
    assert commit_track(out, MODEL, "t1", [stem], source_url="u", run_id="r")
    assert read_committed(out, MODEL, "t1").stems["vocals"].sample_rate == RATE
    path = Path(stored_stem_url(out, MODEL, "t1", stem))
    path.write_bytes(bytes(reversed(data)))  # same size, other bytes
    with pytest.raises(StorageError, match="not the stem its marker lists"):
        read_committed(out, MODEL, "t1")
    path.write_bytes(data + b"x" * 10_000)
    with pytest.raises(StorageError, match="larger than"):
        read_committed(out, MODEL, "t1")
