"""Stems are adopted only when they are this attempt's own bytes; junk in a track folder is never committed.

A junk ``vocals.flac`` (or a folder, or a leftover of another attempt) in a track
folder used to be adopted with its hash, and ``verify_track`` then called it
good. Now the marker lists only bytes the committing attempt produced, under a
per-attempt name when the usual one was taken, and the junk is removed.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from stemflow.errors import StorageError
from stemflow.store import commit
from stemflow.store import objects as storage_objects

MODEL = "tiny-0123456789ab-s0000cafe"
JUNK = b"junk left in the output folder by someone else"


def _plant_junk(base: str, options: Any, track: str, stems: tuple[str, ...]) -> None:
    for stem in stems:
        storage_objects.write_atomic(commit.stem_url(base, MODEL, track, stem, "flac"), JUNK, options)


def test_junk_in_a_track_folder_is_never_committed(backend: tuple[str, Any]) -> None:
    base, options = backend
    _plant_junk(base, options, "t1", ("vocals",))
    stems = [commit.write_stem(base, MODEL, "t1", stem, "flac", f"our {stem}".encode(), storage_options=options,
                               attempt="a1b2c3d4e5f6") for stem in ("vocals", "instrumental")]
    assert [s.file_name for s in stems] == ["vocals.a1b2c3d4e5f6.flac", "instrumental.flac"]
    assert commit.commit_track(base, MODEL, "t1", stems, source_url="u", run_id="r1", storage_options=options)
    marker = commit.read_marker(base, MODEL, "t1", storage_options=options)
    assert storage_objects.sha256_hex(JUNK) not in {s.sha256 for s in marker.stems}
    assert commit.verify_track(base, MODEL, "t1", storage_options=options)
    urls = commit.committed_stem_urls(base, MODEL, "t1", marker)
    assert storage_objects.read_bytes(urls["vocals"], options) == b"our vocals"
    assert not storage_objects.exists(commit.stem_url(base, MODEL, "t1", "vocals", "flac"), options)  # junk removed


def test_a_folder_where_a_stem_belongs_is_worked_around(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    Path(commit.stem_url(out, MODEL, "t2", "vocals", "flac")).mkdir(parents=True)
    os.mkfifo(commit.stem_url(out, MODEL, "t2", "instrumental", "flac"))  # reading it would block for ever: it must not even be opened for reading
    stems = [commit.write_stem(out, MODEL, "t2", stem, "flac", stem.encode()) for stem in ("vocals", "instrumental")]
    assert all(s.file_name.count(".") == 2 for s in stems)
    assert commit.commit_track(out, MODEL, "t2", stems, source_url="u", run_id="r1")
    assert commit.verify_track(out, MODEL, "t2")


def test_runs_racing_over_junk_commit_once_and_the_losers_are_not_errors(backend: tuple[str, Any]) -> None:
    base, options = backend
    _plant_junk(base, options, "race", ("vocals", "instrumental"))
    runs = 5
    barrier = threading.Barrier(runs)
    outcomes: list[Any] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            stems = [commit.write_stem(base, MODEL, "race", stem, "flac", f"run {i} {stem}".encode(),
                                       storage_options=options) for stem in ("vocals", "instrumental")]
            outcomes.append(commit.commit_track(base, MODEL, "race", stems, source_url="u", run_id=f"r{i}",
                                                storage_options=options))
        except Exception as e:  # noqa: BLE001 - collected: a loser must not fail
            outcomes.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes, key=str) == [False] * (runs - 1) + [True], outcomes
    marker = commit.read_marker(base, MODEL, "race", storage_options=options)
    assert commit.verify_track(base, MODEL, "race", storage_options=options)
    winner = marker.run_id[1:]
    urls = commit.committed_stem_urls(base, MODEL, "race", marker)
    assert storage_objects.read_bytes(urls["vocals"], options) == f"run {winner} vocals".encode()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"file_name": "../../../etc/passwd"}, "unsafe stem file name"),
        ({"file_name": "/dev/zero"}, "unsafe stem file name"),
        ({"file_name": "sub/vocals.flac"}, "unsafe stem file name"),
        ({"file_name": "_COMMITTED.json"}, "unsafe stem file name"),
        ({"stem": ".."}, "unsafe stem name"),
        ({"sha256": "not-a-hash"}, "64 lowercase hex"),
        ({"size": -1}, "size"),
        ({"size": "12"}, "size"),
    ],
)
def test_a_hostile_marker_is_malformed_never_followed(change: dict[str, Any], words: str) -> None:
    body = {"format": "stemflow.commit/1", "model_id": MODEL, "track_id": "t", "source_url": "u", "run_id": "r",
            "committed_at": "2026-11-24T10:00:00+00:00",
            "stems": [{"stem": "vocals", "file_name": "vocals.flac", "size": 12, "sha256": "ab" * 32, **change}]}
    with pytest.raises(StorageError, match="malformed commit marker") as info:
        commit.CommitMarker.from_json(json.dumps(body).encode())
    assert words in str(info.value)


def test_a_marker_copied_from_another_track_or_too_large_is_refused(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    stem = commit.write_stem(out, MODEL, "t-real", "vocals", "flac", b"v")
    assert commit.commit_track(out, MODEL, "t-real", [stem], source_url="u", run_id="r")
    copied = Path(commit.marker_url(out, MODEL, "t-other"))
    copied.parent.mkdir(parents=True)
    copied.write_bytes(Path(commit.marker_url(out, MODEL, "t-real")).read_bytes())
    with pytest.raises(StorageError, match="names .*t-real"):
        commit.read_marker(out, MODEL, "t-other")
    marker = commit.read_marker(out, MODEL, "t-real")
    with pytest.raises(StorageError, match="not this track's marker"):
        commit.committed_stem_urls(out, MODEL, "t-other", marker)
    huge = Path(commit.marker_url(out, MODEL, "t-huge"))
    huge.parent.mkdir(parents=True)
    huge.write_bytes(b" " * (commit.MAX_MARKER_BYTES + 1))
    with pytest.raises(StorageError, match="larger than"):
        commit.read_marker(out, MODEL, "t-huge")


@pytest.mark.ray
def test_the_stage_replaces_junk_and_records_where_the_stems_are(tmp_path: Path, tiny_model: Any,
                                                                  catalogue_kit: Any) -> None:
    """Through the worker: junk at vocals.flac is neither committed nor recorded; the rows point at our stems."""
    from stemflow.hub.spec import ModelSpec
    from stemflow.stage.settings import ShardJob
    from stemflow.stage.worker import TrackWorker

    source = tmp_path / "mix.wav"
    sf.write(source, catalogue_kit.tone(1).T, catalogue_kit.sample_rate, subtype="PCM_16")
    out = str(tmp_path / "out")
    _plant_junk(out, None, "t1", ("vocals",))
    job = ShardJob(output_url=out, model_id=MODEL, run_id="r1", run_date="2026-11-24")
    worker = TrackWorker(ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint),
                         job=job, torch_threads=1)
    outcome = worker.finish(worker.separate("t1", str(source), worker.fetch(str(source))))
    assert outcome.status == "ok", outcome.error
    assert commit.verify_track(out, MODEL, "t1")
    rows = {r["stem"]: r for r in outcome.rows}
    marker = commit.read_marker(out, MODEL, "t1")
    urls = commit.committed_stem_urls(out, MODEL, "t1", marker)
    assert {s: rows[s]["stem_url"] for s in rows} == urls
    assert urls["vocals"].rsplit("/", 1)[-1] != "vocals.flac"
    assert not Path(commit.stem_url(out, MODEL, "t1", "vocals", "flac")).exists()
    mixture = catalogue_kit.decode(source.read_bytes())
    stems = [catalogue_kit.decode(Path(u).read_bytes()) for u in urls.values()]
    assert catalogue_kit.residual_db(mixture, stems) < -60  # the stored stems are this separation's
