"""Catalogue listing, manifests, track ids and planning on local disk, memory:// and moto S3."""

from __future__ import annotations

import inspect
import os
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from stemflow.catalogue import listing as catalogue_listing
from stemflow.catalogue import manifests as manifest
from stemflow.catalogue import planning as catalogue_planning
from stemflow.audio.formats import DECODABLE_EXTENSIONS
from stemflow.catalogue import tracks as catalogue_tracks
from stemflow.errors import StorageError
from stemflow.store import commit, objects, paths

TREE = {
    "a/one.wav": b"one",
    "a/b/two.FLAC": b"two-two",
    "a/b/c/three.stem.mp4": b"three",
    "Ünïcode dir/with space.mp3": b"unicode",
    "m.m4a": b"m4a",
    "n.aac": b"aac",
    "o.ogg": b"ogg",
    "x/y.aiff": b"aiff",
    "x/z.aif": b"aif",
    "x/v.mp4": b"mp4",
    "x/w.opus": b"opus",
    "x/u.webm": b"webm",
    "x/t.wave": b"wave",
    "notes.txt": b"not audio",
    "x/cover.jpg": b"not audio",
    ".hidden.wav": b"hidden",
    ".cache/in-hidden.wav": b"hidden",
}
AUDIO = sorted(k for k in TREE if not k.startswith(".") and not k.endswith((".txt", ".jpg")))


def _populate(base: str, options: Any, tree: dict[str, bytes] = TREE) -> None:
    for key, data in tree.items():
        objects.write_atomic(f"{base}/{key}", data, options)


def _rel(base: str, options: Any, url: str) -> str:
    root = paths.normalise_url(base, options).rstrip("/") + "/"
    assert url.startswith(root), (url, root)
    return url[len(root) :]


def test_list_audio_nested_mixed_unicode(backend: tuple[str, Any]) -> None:
    base, options = backend
    _populate(base, options)
    tracks = list(catalogue_listing.list_audio(base, storage_options=options))
    assert sorted(_rel(base, options, t.url) for t in tracks) == AUDIO
    assert len({t.track_id for t in tracks}) == len(AUDIO)
    by_name = {_rel(base, options, t.url): t for t in tracks}
    assert by_name["a/b/two.FLAC"].size == 7
    for track in tracks:
        assert paths.check_component(track.track_id) and len(track.track_id) == catalogue_tracks.TRACK_ID_HEX
        assert objects.read_bytes(track.url, options) == TREE[_rel(base, options, track.url)]
    if base.startswith("s3://"):
        assert all(t.etag and t.content_sha256 is None for t in tracks)
    else:
        one = by_name["a/one.wav"]
        assert one.content_sha256 == objects.sha256_hex(b"one")
        assert one.track_id == catalogue_tracks.compute_track_id(one.url, 3, "sha256:" + objects.sha256_hex(b"one"))


def test_missing_catalogue_is_an_error(backend: tuple[str, Any]) -> None:
    base, options = backend
    objects.write_atomic(f"{base}/present/a.wav", b"a", options)
    with pytest.raises(StorageError, match="does not exist"):
        list(catalogue_listing.list_audio(f"{base}/absent", storage_options=options))


def test_stem_mp4_counts_once_and_extensions() -> None:
    assert catalogue_listing.audio_extension("x/three.stem.mp4") == "stem.mp4"
    assert catalogue_listing.audio_extension("X.WAV") == "wav"
    assert catalogue_listing.audio_extension("cover.jpg") is None
    assert catalogue_listing.audio_extension("noext") is None


def test_catalogue_lists_what_the_decoder_reads(tmp_path: Any) -> None:
    assert {f".{e}" for e in catalogue_listing.AUDIO_EXTENSIONS} == DECODABLE_EXTENSIONS
    assert catalogue_listing.audio_extension("a/b.Opus") == "opus"
    assert catalogue_listing.audio_extension("b.webm") == "webm"
    assert catalogue_listing.audio_extension("song.mp3", ["flac"]) is None
    assert catalogue_listing.audio_extension("song.FLAC", [".flac"]) == "flac"
    assert catalogue_listing.audio_extension("s.stem.mp4", ["mp4"]) == "stem.mp4"
    assert catalogue_listing.audio_extension("s.stem.mp4", ["stem.mp4"]) == "stem.mp4"
    assert catalogue_listing.audio_extension("v.mp4", ["stem.mp4"]) is None
    _populate(str(tmp_path), None)
    kept = catalogue_listing.list_audio(str(tmp_path), extensions=("flac", "mp4"), fingerprint="mtime")
    assert sorted(_rel(str(tmp_path), None, t.url) for t in kept) == ["a/b/c/three.stem.mp4", "a/b/two.FLAC", "x/v.mp4"]


def test_listing_streams_folder_by_folder() -> None:
    class CountingMemoryFS(MemoryFileSystem):
        calls = 0

        def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
            type(self).calls += 1
            return super().ls(path, detail=detail, **kwargs)

    fs = CountingMemoryFS()
    root = "/streaming-test"
    for i in range(40):
        fs.pipe(f"{root}/d{i:02d}/t.wav", b"x" * i)
    try:
        listing = catalogue_listing.list_audio(f"memory://{root}", storage_options=fs, fingerprint="mtime", workers=1)
        assert inspect.isgenerator(listing)
        first = next(listing)
        assert first.url == f"memory://{root}/d00/t.wav"
        assert CountingMemoryFS.calls <= 3  # root + first folder, not 41 listings
        sequential = [first, *listing]
        assert len(sequential) == 40
        assert CountingMemoryFS.calls == 41
        CountingMemoryFS.calls = 0
        parallel = catalogue_listing.list_audio(f"memory://{root}", storage_options=fs, fingerprint="mtime", workers=4)
        assert next(parallel) == first
        assert CountingMemoryFS.calls <= 1 + 2 * 4 + 1  # bounded look-ahead
        assert [first, *parallel] == sequential  # same order whatever the concurrency
    finally:
        fs.rm(root, recursive=True)


def test_exclude_prunes_output_inside_catalogue(tmp_path: Any) -> None:
    _populate(str(tmp_path), None, {"a.wav": b"a", "out/stems/m/t/vocals.flac": b"v"})
    urls = [t.url for t in catalogue_listing.list_audio(str(tmp_path), exclude=[str(tmp_path / "out")])]
    assert urls == [f"file://{tmp_path}/a.wav"]


def test_track_id_stable_copy_and_change(backend: tuple[str, Any]) -> None:
    base, options = backend
    _populate(base, options, {"s/a.wav": b"content-A"})
    first = catalogue_tracks.track_ref(f"{base}/s/a.wav", storage_options=options)
    again = next(iter(catalogue_listing.list_audio(f"{base}/s", storage_options=options)))
    assert again.track_id == first.track_id
    objects.write_atomic(f"{base}/copy/a.wav", b"content-A", options)
    copy = catalogue_tracks.track_ref(f"{base}/copy/a.wav", storage_options=options)
    assert copy.track_id != first.track_id
    objects.write_atomic(f"{base}/s/a.wav", b"content-B", options)  # same size, new bytes
    changed = catalogue_tracks.track_ref(f"{base}/s/a.wav", storage_options=options)
    assert changed.size == first.size and changed.track_id != first.track_id


def test_content_fingerprint_survives_touch_mtime_does_not(tmp_path: Any) -> None:
    path = tmp_path / "t.wav"
    path.write_bytes(b"abc")
    by_content = catalogue_tracks.track_ref(str(path)).track_id
    by_mtime = catalogue_tracks.track_ref(str(path), fingerprint="mtime").track_id
    later = time.time() + 10
    os.utime(path, (later, later))
    assert catalogue_tracks.track_ref(str(path)).track_id == by_content
    assert catalogue_tracks.track_ref(str(path), fingerprint="mtime").track_id != by_mtime


def test_csv_manifest_relative_urls_and_extra_columns(backend: tuple[str, Any]) -> None:
    base, options = backend
    _populate(base, options, {"audio/a.wav": b"aaa", "audio/b c.flac": b"bbbb"})
    csv_text = (
        "url,track_id,group,artist\n"
        "audio/a.wav,,g1,Ärtist One\n"
        f"{base}/audio/b c.flac,custom-id-2,g2,\"Two, The\"\n"
    )
    objects.write_atomic(f"{base}/manifest.csv", csv_text.encode(), options)
    rows = list(manifest.read_manifest(f"{base}/manifest.csv", storage_options=options, batch_rows=1))
    direct = catalogue_tracks.track_ref(f"{base}/audio/a.wav", storage_options=options)
    assert rows[0].url == direct.url and rows[0].track_id == direct.track_id
    assert rows[0].extra == {"group": "g1", "artist": "Ärtist One"}
    assert rows[1].track_id == "custom-id-2"
    assert rows[1].url == paths.normalise_url(f"{base}/audio/b c.flac", options)
    assert rows[1].extra == {"group": "g2", "artist": "Two, The"}


def test_parquet_manifest_streams_in_batches(backend: tuple[str, Any]) -> None:
    import io

    base, options = backend
    n = 25
    table = pa.table({
        "url": [f"s3://bucket/t{i:03d}.wav" for i in range(n)],
        "size": pa.array(range(100, 100 + n), pa.int64()),
        "etag": [f"etag{i}" for i in range(n)],
        "group": [i % 3 for i in range(n)],
        "bpm": [120.5 + i for i in range(n)],
    })
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=10)
    objects.write_atomic(f"{base}/m.parquet", buffer.getvalue(), options)
    rows = manifest.read_manifest(f"{base}/m.parquet", storage_options=options, batch_rows=4,
                                  allow_sources=["s3://bucket/"])  # rows outside the manifest's location
    assert inspect.isgenerator(rows)
    tracks = list(rows)
    assert [t.url for t in tracks] == table.column("url").to_pylist()
    assert tracks[7].extra == {"group": 1, "bpm": 127.5}
    assert tracks[7].track_id == catalogue_tracks.compute_track_id("s3://bucket/t007.wav", 107, "etag:etag7")


def test_manifest_errors(tmp_path: Any) -> None:
    (tmp_path / "bad.csv").write_text("path\nx.wav\n")
    with pytest.raises(StorageError, match="no 'url' column"):
        list(manifest.read_manifest(str(tmp_path / "bad.csv")))
    # a hostile row is that row's error (the run goes on), never a read
    (tmp_path / "unsafe.csv").write_text("url,track_id\nx.wav,../../etc\n/x.wav,\n")
    unsafe, outside = manifest.read_manifest(str(tmp_path / "unsafe.csv"))
    assert "unsafe track_id" in unsafe.rejected and "outside the catalogue" in outside.rejected
    with pytest.raises(StorageError, match="does not exist"):
        list(manifest.read_manifest(str(tmp_path / "missing.parquet")))


@pytest.mark.parametrize("lookup", ["probe", "list"])
def test_plan_excludes_committed_and_shards(backend: tuple[str, Any], lookup: str) -> None:
    base, options = backend
    tree = {f"cat/t{i}.wav": f"track-{i}".encode() for i in range(9)}
    _populate(base, options, tree)
    tracks = list(catalogue_listing.list_audio(f"{base}/cat", storage_options=options))
    out = f"{base}/out"
    model = "model-a"
    for done in (tracks[1], tracks[4]):
        stem = commit.write_stem(out, model, done.track_id, "vocals", "flac", b"v", storage_options=options)
        assert commit.commit_track(out, model, done.track_id, [stem], source_url=done.url, run_id="r0",
                                   storage_options=options)
    shards = list(catalogue_planning.plan(iter(tracks), out, model, shard_size=3, storage_options=options,
                                          lookup=lookup, probe_batch=4))
    assert [s.index for s in shards] == [0, 1, 2]
    assert [len(s.tracks) for s in shards] == [3, 3, 1]
    planned = [t for s in shards for t in s.tracks]
    assert planned == [t for i, t in enumerate(tracks) if i not in (1, 4)]
    other_model = list(catalogue_planning.plan(tracks, out, "model-b", shard_size=100, storage_options=options,
                                               lookup=lookup))
    assert len(other_model) == 1 and len(other_model[0].tracks) == 9


def test_shard_validation_and_duplicates_in_batch() -> None:
    with pytest.raises(StorageError):
        list(catalogue_planning.shard([], 0))
    track = catalogue_tracks.TrackRef(url="s3://b/x.wav", track_id="abc", size=1)
    planned = list(catalogue_planning.plan([track, track], "memory://plan-dupes", "m", shard_size=10))
    assert planned == [catalogue_planning.Shard(0, (track,))]


def test_plan_accepts_a_catalogue_url_and_skips_output_inside(tmp_path: Any) -> None:
    _populate(str(tmp_path), None, {"a.wav": b"a", "b.flac": b"bb"})
    out = str(tmp_path / "out")
    first = list(catalogue_planning.plan(str(tmp_path), out, "m", shard_size=10))
    assert [t.url.rsplit("/", 1)[-1] for t in first[0].tracks] == ["a.wav", "b.flac"]
    done = first[0].tracks[0]
    stem = commit.write_stem(out, "m", done.track_id, "vocals", "wav", b"v")
    assert commit.commit_track(out, "m", done.track_id, [stem], source_url=done.url, run_id="r")
    again = list(catalogue_planning.plan(str(tmp_path), out, "m", shard_size=10))
    assert [t.url.rsplit("/", 1)[-1] for t in again[0].tracks] == ["b.flac"]  # out/…/vocals.wav not listed
    manifest = tmp_path / "list.csv"
    manifest.write_text("url\nb.flac\n")
    from_manifest = list(catalogue_planning.plan(str(manifest), out, "m", shard_size=10))
    assert from_manifest[0].tracks == again[0].tracks


def test_plan_streams_an_endless_catalogue(tmp_path: Any) -> None:
    import itertools

    def endless() -> Any:
        for i in itertools.count():
            yield catalogue_tracks.TrackRef(url=f"s3://b/{i}.wav", track_id=f"t{i}", size=i)

    shards = catalogue_planning.plan(endless(), str(tmp_path / "out"), "m", shard_size=5, probe_batch=8)
    first, second = next(shards), next(shards)
    assert [t.track_id for t in first.tracks] == ["t0", "t1", "t2", "t3", "t4"]
    assert (second.index, second.tracks[0].track_id) == (1, "t5")


def test_symlink_loops_are_not_followed(tmp_path: Any) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.wav").write_bytes(b"x")
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path / "a")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "y.wav").write_bytes(b"y")
    (tmp_path / "a" / "linked").symlink_to(tmp_path / "elsewhere")
    names = [t.url.rsplit("/", 2)[-2:] for t in catalogue_listing.list_audio(str(tmp_path / "a"))]
    assert names == [["b", "x.wav"], ["linked", "y.wav"]]


def test_symlinked_files_are_listed_with_target_size(tmp_path: Any) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "song.flac").write_bytes(b"0123456789")
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "alias.flac").symlink_to(tmp_path / "real" / "song.flac")
    (tmp_path / "cat" / "dangling.wav").symlink_to(tmp_path / "nowhere.wav")
    tracks = list(catalogue_listing.list_audio(str(tmp_path / "cat")))
    assert [(t.url.rsplit("/", 1)[-1], t.size) for t in tracks] == [("alias.flac", 10)]
    assert tracks[0].content_sha256 == objects.sha256_hex(b"0123456789")


def test_track_ref_dict_round_trip() -> None:
    import json

    track = catalogue_tracks.TrackRef(url="s3://b/a b.wav", track_id="0123abcd", size=5, etag="e", mtime_ns=7,
                                      extra={"artist": "Ä", "group": 3})
    assert catalogue_tracks.TrackRef.from_dict(json.loads(json.dumps(track.to_dict()))) == track
    with pytest.raises(StorageError, match="without 'track_id'"):
        catalogue_tracks.TrackRef.from_dict({"url": "s3://b/x.wav"})
    with pytest.raises(StorageError, match="unsafe"):
        catalogue_tracks.TrackRef.from_dict({"url": "s3://b/x.wav", "track_id": "../x"})
