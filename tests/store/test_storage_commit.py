"""Exactly-once commit markers on local disk, memory:// and moto S3."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stemflow.errors import StorageError
from stemflow.store import commit
from stemflow.store import objects as storage_objects

MODEL = "bs-roformer-1297-0123456789ab-cafe"


def _write_all(base: str, options: Any, track: str, payload: bytes) -> list[commit.StemObject]:
    return [
        commit.write_stem(base, MODEL, track, stem, "flac", payload + stem.encode(), storage_options=options)
        for stem in ("vocals", "drums", "bass", "other")
    ]


def test_commit_then_read_marker(backend: tuple[str, Any]) -> None:
    base, options = backend
    stems = _write_all(base, options, "t0000000000000001", b"audio-")
    assert stems[0] == commit.StemObject(
        "vocals", "vocals.flac", len(b"audio-vocals"), storage_objects.sha256_hex(b"audio-vocals")
    )
    assert not commit.is_committed(base, MODEL, "t0000000000000001", storage_options=options)
    won = commit.commit_track(
        base, MODEL, "t0000000000000001", stems, source_url="s3://cat/a.wav", run_id="run-1",
        committed_at="2026-11-24T10:00:00+00:00", extra={"device": "cpu"}, storage_options=options,
    )
    assert won is True
    marker = commit.read_marker(base, MODEL, "t0000000000000001", storage_options=options)
    assert marker == commit.CommitMarker(
        model_id=MODEL, track_id="t0000000000000001", source_url="s3://cat/a.wav", run_id="run-1",
        stems=tuple(stems), committed_at="2026-11-24T10:00:00+00:00", extra={"device": "cpu"},
    )
    assert commit.is_committed(base, MODEL, "t0000000000000001", storage_options=options)
    assert commit.verify_track(base, MODEL, "t0000000000000001", storage_options=options)
    assert storage_objects.read_bytes(
        commit.stem_url(base, MODEL, "t0000000000000001", "drums", "flac"), options
    ) == b"audio-drums"
    again = commit.commit_track(
        base, MODEL, "t0000000000000001", stems, source_url="s3://cat/a.wav", run_id="run-2",
        storage_options=options,
    )
    assert again is False
    assert commit.read_marker(base, MODEL, "t0000000000000001", storage_options=options).run_id == "run-1"


def test_committed_tracks_lists_only_markers(backend: tuple[str, Any]) -> None:
    base, options = backend
    for track in ("a1", "b2", "c3"):
        stems = _write_all(base, options, track, b"x")
        if track != "b2":  # b2 "crashed" before its marker
            assert commit.commit_track(base, MODEL, track, stems, source_url="u", run_id="r", storage_options=options)
    assert list(commit.committed_tracks(base, MODEL, storage_options=options)) == ["a1", "c3"]
    assert list(commit.committed_tracks(base, "other-model", storage_options=options)) == []
    assert commit.read_marker(base, MODEL, "b2", storage_options=options) is None
    assert not commit.verify_track(base, MODEL, "b2", storage_options=options)


def test_crashed_attempt_stems_are_adopted(backend: tuple[str, Any]) -> None:
    """Only a leftover holding exactly this attempt's bytes is adopted; other bytes are superseded, then removed."""
    base, options = backend
    _write_all(base, options, "t1", b"first-attempt-")  # crash: no marker
    same = _write_all(base, options, "t1", b"first-attempt-")  # the same output again: adopted as it is
    assert [s.file_name for s in same] == ["vocals.flac", "drums.flac", "bass.flac", "other.flac"]
    assert same[0].sha256 == storage_objects.sha256_hex(b"first-attempt-vocals")
    second = _write_all(base, options, "t1", b"second-attempt-with-other-bytes-")  # not provably ours
    assert second[0].sha256 == storage_objects.sha256_hex(b"second-attempt-with-other-bytes-vocals")
    assert second[0].size == len(b"second-attempt-with-other-bytes-vocals")
    assert second[0].file_name.startswith("vocals.") and second[0].file_name.endswith(".flac")
    assert second[0].file_name != "vocals.flac"
    assert commit.commit_track(base, MODEL, "t1", second, source_url="u", run_id="r2", storage_options=options)
    assert commit.verify_track(base, MODEL, "t1", storage_options=options)
    # the superseded leftovers are gone; the marker lists exactly what is stored
    for stem in ("vocals", "drums", "bass", "other"):
        assert not storage_objects.exists(commit.stem_url(base, MODEL, "t1", stem, "flac"), options)
    urls = commit.committed_stem_urls(base, MODEL, "t1", commit.read_marker(base, MODEL, "t1", storage_options=options))
    assert storage_objects.read_bytes(urls["drums"], options) == b"second-attempt-with-other-bytes-drums"


def test_racing_runs_commit_exactly_once(backend: tuple[str, Any]) -> None:
    base, options = backend
    n_runs = 6
    barrier = threading.Barrier(n_runs)
    outcomes: list[bool] = []

    def run(i: int) -> None:
        barrier.wait()
        stems = _write_all(base, options, "race", f"run-{i}-differs-".encode())
        outcomes.append(
            commit.commit_track(base, MODEL, "race", stems, source_url="u", run_id=f"run-{i}", storage_options=options)
        )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False] * (n_runs - 1) + [True]
    # Whoever won, the marker's hashes are those of the stored objects.
    assert commit.verify_track(base, MODEL, "race", storage_options=options)
    assert list(commit.committed_tracks(base, MODEL, storage_options=options)) == ["race"]


def test_commit_refuses_missing_or_resized_stems(backend: tuple[str, Any]) -> None:
    base, options = backend
    ghost = commit.StemObject("vocals", "vocals.flac", 3, storage_objects.sha256_hex(b"abc"))
    with pytest.raises(StorageError, match="missing"):
        commit.commit_track(base, MODEL, "t2", [ghost], source_url="u", run_id="r", storage_options=options)
    real = commit.write_stem(base, MODEL, "t2", "vocals", "flac", b"abcd", storage_options=options)
    wrong = commit.StemObject("vocals", "vocals.flac", real.size + 1, real.sha256)
    with pytest.raises(StorageError, match="bytes"):
        commit.commit_track(base, MODEL, "t2", [wrong], source_url="u", run_id="r", storage_options=options)
    with pytest.raises(StorageError, match="no stems"):
        commit.commit_track(base, MODEL, "t2", [], source_url="u", run_id="r", storage_options=options)
    assert not commit.is_committed(base, MODEL, "t2", storage_options=options)


@pytest.mark.parametrize(
    ("model_id", "track_id", "stem"),
    [(MODEL, "../escape", "vocals"), (MODEL, "/abs", "vocals"), ("..", "t", "vocals"),
     (MODEL, "t", "../../x"), (MODEL, "t", "a/b"), (MODEL, "t/..", "vocals")],
)
def test_keys_cannot_escape_the_output_prefix(tmp_path: Any, model_id: str, track_id: str, stem: str) -> None:
    out = str(tmp_path / "out")
    with pytest.raises(StorageError, match="unsafe"):
        commit.write_stem(out, model_id, track_id, stem, "flac", b"x")
    assert list(tmp_path.rglob("*")) == []
    if stem == "vocals":
        with pytest.raises(StorageError, match="unsafe"):
            commit.read_marker(out, model_id, track_id)


# A marker exactly as stemflow 0.1 wrote it (before the package was regrouped): the format is stored data.
MARKER_V1 = b"""{
 "committed_at": "2026-11-24T10:00:00+00:00",
 "extra": {
  "device": "cpu"
 },
 "format": "stemflow.commit/1",
 "model_id": "bs-roformer-1297-0123456789ab-cafe",
 "run_id": "run-1",
 "source_url": "s3://cat/a.wav",
 "started_at": "2026-11-24T09:59:00+00:00",
 "stems": [
  {
   "file_name": "vocals.flac",
   "sha256": "abababababababababababababababababababababababababababababababab",
   "size": 12,
   "stem": "vocals"
  },
  {
   "file_name": "instrumental.flac",
   "sha256": "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
   "size": 34,
   "stem": "instrumental"
  }
 ],
 "track_id": "0123456789abcdef0123"
}"""


def test_marker_format_is_unchanged() -> None:
    marker = commit.CommitMarker(
        model_id=MODEL, track_id="0123456789abcdef0123", source_url="s3://cat/a.wav", run_id="run-1",
        stems=(commit.StemObject("vocals", "vocals.flac", 12, "ab" * 32),
               commit.StemObject("instrumental", "instrumental.flac", 34, "cd" * 32)),
        committed_at="2026-11-24T10:00:00+00:00", started_at="2026-11-24T09:59:00+00:00", extra={"device": "cpu"},
    )
    assert commit.CommitMarker.from_json(MARKER_V1) == marker
    assert marker.to_json() == MARKER_V1


def test_malformed_marker_is_an_error() -> None:
    with pytest.raises(StorageError, match="malformed"):
        commit.CommitMarker.from_json(b'{"format": "other"}')


def test_marker_extra_accepts_numpy_values_and_non_finite(tmp_path: Any) -> None:
    np = pytest.importorskip("numpy")
    out = str(tmp_path)
    stem = commit.write_stem(out, MODEL, "np1", "vocals", "flac", b"v")
    extra = {"peak_dbfs": np.float32(-3.5), "channels": np.int64(2), "silent": float("-inf"), "v": np.arange(2)}
    assert commit.commit_track(out, MODEL, "np1", [stem], source_url="u", run_id="r", extra=extra)
    marker = commit.read_marker(out, MODEL, "np1")
    assert marker.extra == {"peak_dbfs": -3.5, "channels": 2, "silent": float("-inf"), "v": [0, 1]}
    with pytest.raises(StorageError, match="not JSON-serialisable"):
        commit.commit_track(out, MODEL, "np2", [commit.write_stem(out, MODEL, "np2", "vocals", "flac", b"v")],
                            source_url="u", run_id="r", extra={"bad": object()})
    assert not commit.is_committed(out, MODEL, "np2")
