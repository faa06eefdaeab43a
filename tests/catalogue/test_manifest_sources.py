"""Manifests in three formats, hostile rows as error rows, and planning against the committed index."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stemflow.catalogue.manifests import read_manifest, read_manifest_batches
from stemflow.catalogue.planning import PlanCounts, plan_stream
from stemflow.catalogue.sources import SourcePolicy, SourceRefused
from stemflow.catalogue.tracks import compute_track_id
from stemflow.errors import StorageError
from stemflow.store import index as ix
from stemflow.store.objects import write_atomic
from stemflow.store.paths import normalise_url

ROWS = [{"url": f"audio/t{i}.wav", "size": 100 + i, "etag": f"e{i}", "artist": f"A{i % 3}"} for i in range(7)]


def _write(base: str, options: Any, name: str) -> str:
    url = f"{base}/{name}"
    if name.endswith(".csv"):
        lines = ["url,size,etag,artist"] + [f"{r['url']},{r['size']},{r['etag']},{r['artist']}" for r in ROWS]
        data = ("\n".join(lines) + "\n").encode()
    elif name.endswith(".jsonl"):
        data = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    else:
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(ROWS), buffer, row_group_size=3)
        data = buffer.getvalue()
    write_atomic(url, data, options)
    return url


@pytest.mark.parametrize("name", ["m.csv", "m.jsonl", "m.parquet"])
def test_every_format_gives_the_same_tracks_in_batches(backend: tuple[str, Any], name: str) -> None:
    base, options = backend
    url = _write(base, options, name)
    batches = list(read_manifest_batches(url, storage_options=options, batch_rows=3))
    assert [b.rows for b in batches] == [3, 3, 1]
    tracks = [t for b in batches for t in b.tracks]
    folder = normalise_url(base, options)
    for row, track in zip(ROWS, tracks):
        assert track.url == f"{folder}/{row['url']}" and track.rejected is None
        assert track.track_id == compute_track_id(track.url, row["size"], f"etag:{row['etag']}")
        assert track.extra == {"artist": row["artist"]}


def test_hostile_and_broken_rows_are_rejected_not_read_and_the_rest_goes_on(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    lines = [
        {"url": "ok.wav", "size": 1, "etag": "a"},
        {"url": "/etc/passwd", "size": 1, "etag": "a"},
        {"url": "../outside.wav", "size": 1, "etag": "a"},
        {"url": "sub/./x.wav", "size": 1, "etag": "a"},
        {"url": "http://169.254.169.254/latest/meta-data", "size": 1, "etag": "a"},
        {"url": "s3://other-bucket/x.wav", "size": 1, "etag": "a"},
        {"url": "", "size": 1},
        {"url": "bad-size.wav", "size": "twelve", "etag": "a"},
        {"url": "bad-id.wav", "track_id": "../../x"},
        {"url": "missing.wav"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in lines) + "this line is not json\n[1, 2]\n"
    (tmp_path / "cat" / "m.jsonl").write_text(text)
    tracks = list(read_manifest(str(tmp_path / "cat" / "m.jsonl")))
    assert len(tracks) == len(lines) + 2
    assert tracks[0].rejected is None
    reasons = [t.rejected for t in tracks[1:]]
    assert all(reasons), reasons
    for words, reason in zip(["outside the catalogue", "'..' path component", "'.' path component", "http(s)",
                              "outside the catalogue", "empty", "whole number", "unsafe track_id", "does not exist",
                              "line 11 is not a JSON object", "line 12 is not a JSON object"], reasons):
        assert words in reason, (words, reason)
    assert len({t.track_id for t in tracks}) == len(tracks)  # every row keeps its own id (its error row)
    # explicitly allowed: the other bucket's row is resolved (and would be read)
    allowed = list(read_manifest(str(tmp_path / "cat" / "m.jsonl"), allow_sources=["s3://other-bucket/"]))
    assert allowed[5].rejected is None and allowed[5].url == "s3://other-bucket/x.wav"


def test_the_policy_is_the_bucket_on_object_stores_and_the_folder_locally() -> None:
    s3 = SourcePolicy.for_manifest("s3://label/manifests/nightly.csv")
    assert s3.resolve("s3://label/masters/a.wav") == "s3://label/masters/a.wav"
    assert s3.resolve("a.wav") == "s3://label/manifests/a.wav"
    for hostile in ("s3://label-evil/a.wav", "s3://label/../other/a.wav", "/local/a.wav", "file:///label/a.wav"):
        with pytest.raises(SourceRefused):
            s3.resolve(hostile)
    local = SourcePolicy.for_manifest("/data/cat/m.csv")
    assert local.resolve("/data/cat/sub/a.wav") == "file:///data/cat/sub/a.wav"
    with pytest.raises(SourceRefused):
        local.resolve("/data/other/a.wav")
    anything = SourcePolicy.for_manifest("/data/cat/m.csv", ["*"])
    assert anything.resolve("s3://x/y.wav") == "s3://x/y.wav"
    # the fast spellings agree with fsspec's normalisation (track ids are built from them)
    for value in ("s3://label/a b/ü.wav", "s3://label//double/x.wav", "s3://label/trailing/"):
        assert s3.resolve(value) == normalise_url(value)


def test_unreadable_manifests_are_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,size\nx.wav,1\n")
    with pytest.raises(StorageError, match="no 'url' column"):
        list(read_manifest(str(tmp_path / "m.csv")))
    (tmp_path / "m.parquet").write_bytes(b"not parquet")
    with pytest.raises(StorageError, match="cannot read manifest"):
        list(read_manifest(str(tmp_path / "m.parquet")))
    with pytest.raises(StorageError, match="expected a .csv, .jsonl or .parquet"):
        list(read_manifest(str(tmp_path / "m.txt")))


def test_plan_stream_anti_joins_the_index_without_stat_or_duplicates(tmp_path: Path) -> None:
    rows = [{"url": f"t{i}.wav", "size": i, "etag": "e"} for i in range(50)] + [{"url": "t45.wav", "size": 45,
                                                                              "etag": "e"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + json.dumps({"url": "/x"}) + "\n")
    folder = normalise_url(str(tmp_path))
    ids = [compute_track_id(f"{folder}/t{i}.wav", i, "etag:e") for i in range(50)]
    committed = ix.CommittedIndex.of([ix.track_keys(ids[:40])])
    counts = PlanCounts()
    shards = list(plan_stream(str(tmp_path / "m.jsonl"), index=committed, shard_size=4, counts=counts,
                              batch_rows=7))
    planned = [t for s in shards for t in s.tracks]
    assert [t.track_id for t in planned if not t.rejected] == ids[40:]
    assert [s.index for s in shards] == [0, 1, 2]
    assert counts.as_dict() == {"catalogue": 52, "committed": 40, "duplicates": 1, "planned": 11, "rejected": 1,
                                "finished": True}
