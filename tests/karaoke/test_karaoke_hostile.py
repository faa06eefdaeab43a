"""Karaoke datasets: a hostile marker is an error row, never a read; shards are streamed."""

from __future__ import annotations

import json
import tarfile
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from stemflow.audio.encode import encode
from stemflow.karaoke.dataset import DatasetTrack, prepare_track
from stemflow.karaoke.index import write_webdataset_shards
from stemflow.karaoke.settings import DatasetSettings
from stemflow.store.commit import commit_track, marker_url, write_stem

MODEL = "tiny-0123456789ab-s0000cafe"
RATE = 8000


def test_a_marker_naming_files_outside_its_folder_is_an_error_row(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    tone = (0.1 * np.stack([np.sin(np.arange(RATE) / 7.0)] * 2)).astype(np.float32)
    stems = [write_stem(out, MODEL, "t1", s, "flac", encode(tone, RATE, format="flac").data)
             for s in ("vocals", "instrumental")]
    assert commit_track(out, MODEL, "t1", stems, source_url="u", run_id="r1")
    secret = tmp_path / "secret.flac"
    secret.write_bytes(encode(tone, RATE, format="flac").data)  # a readable file the marker will point at
    path = Path(marker_url(out, MODEL, "t1"))
    body = json.loads(path.read_text())
    body["stems"][0]["file_name"] = "../../../../secret.flac"
    path.write_text(json.dumps(body))
    row = prepare_track(DatasetTrack("t1"), output_url=out, model_id=MODEL, version_url=str(tmp_path / "ds" / "v1"),
                        settings=DatasetSettings(residue=False))
    assert row["reasons"] == ["error"] and "malformed commit marker" in row["error"]
    assert not (tmp_path / "ds").exists()  # nothing written for it


def test_webdataset_shards_are_streamed_not_built_in_memory(tmp_path: Path) -> None:
    version = tmp_path / "v1"
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    for i in range(4):
        folder = version / "train" / f"t{i}"
        folder.mkdir(parents=True)
        for name in ("backing", "vocals"):
            (folder / f"{name}.flac").write_bytes(rng.bytes(6 << 20))  # 48 MiB of members in all
        rows.append({"track_id": f"t{i}", "split": "train", "accepted": True,
                     "backing_path": f"train/t{i}/backing.flac", "vocals_path": f"train/t{i}/vocals.flac"})
    tracemalloc.start()
    try:
        written = write_webdataset_shards(str(version), rows, tracks_per_shard=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == ["shards/train-000000.tar"]
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB held while writing a 48 MiB shard"
    with tarfile.open(version / written[0]) as tar:
        names = tar.getnames()
        assert names[:3] == ["t0.backing.flac", "t0.vocals.flac", "t0.json"] and len(names) == 12
        member = tar.extractfile("t2.vocals.flac")
        assert member is not None and member.read() == (version / "train" / "t2" / "vocals.flac").read_bytes()
    assert not list(version.rglob("*.tmp"))
