"""The committed index: keys, deltas, compaction races, bootstrap from Parquet, and unreadable files."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stemflow.store import index as ix
from stemflow.store.objects import write_atomic
from stemflow.store.paths import filesystem
from stemflow.store.quarantine import Quarantine
from stemflow.store.records import error_row, stem_rows, write_part

IDS = [f"{i:020x}" for i in range(0, 4000, 7)]


def test_keys_are_the_80_bit_ids_or_a_hash_of_other_ids() -> None:
    keys = ix.track_keys(["0123456789abcdef0123", "isrc-USRC17607839", "ABCDEF0123456789ABCD"])
    assert keys.dtype == ix.KEY_DTYPE
    assert bytes(keys[0]) == bytes.fromhex("0123456789abcdef0123")
    # upper-case hex is not what stemflow makes: it is hashed like any other id, never confused with the lower-case
    assert bytes(keys[1]) == hashlib.blake2b(b"isrc-USRC17607839", digest_size=10).digest()
    assert bytes(keys[2]) != bytes.fromhex("abcdef0123456789abcd")
    # keys of ids ending in zero bytes keep their full width in comparisons
    padded = ix.track_keys(["00000000000000000100", "00000000000000000001"])
    index = ix.CommittedIndex.of([padded[:1]])
    assert index.contains(padded).tolist() == [True, False]


def test_deltas_add_up_and_compaction_keeps_every_id(backend: tuple[str, Any]) -> None:
    out, options = backend
    assert not ix.list_index(out, "m", storage_options=options).exists
    ix.write_delta(out, "m", "run-a", 0, IDS[:300], storage_options=options)
    ix.write_delta(out, "m", "run-b", 0, IDS[250:], storage_options=options)
    index, files = ix.load_index(out, "m", storage_options=options)
    assert len(index) == len(IDS) and files.base is None and len(files.deltas) == 2
    probe = ix.track_keys([*IDS[::50], "ffffffffffffffffffff"])
    assert index.contains(probe).tolist() == [True] * len(IDS[::50]) + [False]
    assert ix.compact_index(out, "m", storage_options=options)
    again, files = ix.load_index(out, "m", storage_options=options)
    assert np.array_equal(again.keys, index.keys) and files.deltas == () and files.base == "base-00000000.parquet"
    ix.write_delta(out, "m", "run-c", 0, ["eeeeeeeeeeeeeeeeeeee"], storage_options=options)
    assert ix.compact_index(out, "m", storage_options=options)
    final, files = ix.load_index(out, "m", storage_options=options)
    assert len(final) == len(IDS) + 1 and files.generation == 1 and files.deltas == ()


def test_racing_compactions_one_wins_and_nothing_is_lost(tmp_path: Path) -> None:
    out = str(tmp_path)
    for n in range(6):
        ix.write_delta(out, "m", f"run-{n}", 0, IDS[n::6], storage_options=None)
    barrier = threading.Barrier(3)
    won: list[bool] = []

    def compact() -> None:
        barrier.wait()
        won.append(ix.compact_index(out, "m"))

    threads = [threading.Thread(target=compact) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    index, _ = ix.load_index(out, "m")
    assert len(index) == len(IDS) and won.count(True) >= 1


def test_bootstrap_from_parquet_ok_rows_only_and_quarantine(tmp_path: Path) -> None:
    out = str(tmp_path)
    stems = {"vocals": {"stem_url": "x", "stem_bytes": 1, "stem_sha256": "0" * 64}}
    ok = [r for t in IDS[:5] for r in stem_rows({"track_id": t, "source_url": f"s3://b/{t}"}, stems)]
    bad = [error_row({"track_id": IDS[9], "source_url": "s3://b/x"}, "nope", "decode")]
    write_part(out, "m", "2026-12-01", "r1", 1, ok + bad)
    write_atomic(f"{out}/metadata/model_id=m/run_date=2026-12-01/run_id=r1/part-00002.parquet", b"not parquet")
    write_atomic(f"{out}/metadata/model_id=m/notes.txt", b"hello")
    quarantine = Quarantine()
    index = ix.bootstrap_index(out, "m", quarantine=quarantine)
    assert len(index) == 5 and index.contains(ix.track_keys([IDS[9]])).tolist() == [False]
    assert quarantine.counts == {"metadata_file": 2}
    assert ix.list_index(out, "m").base == "base-00000000.parquet"
    # a foreign file in the index folder is reported, an unreadable delta skipped
    write_atomic(f"{out}/index/model_id=m/delta-x-000001.parquet", b"garbage")
    write_atomic(f"{out}/index/model_id=m/README", b"?")
    quarantine = Quarantine()
    again, _ = ix.load_index(out, "m", quarantine=quarantine)
    assert len(again) == 5 and quarantine.counts == {"index_file": 2}


def test_a_delta_name_is_never_reused(tmp_path: Path) -> None:
    ix.write_delta(str(tmp_path), "m", "r", 0, IDS[:2])
    with pytest.raises(Exception, match="already exists"):
        ix.write_delta(str(tmp_path), "m", "r", 0, IDS[2:4])
    fs, path = filesystem(ix.index_url(str(tmp_path), "m"))
    assert len(fs.ls(path)) == 1
