"""Bad and unusual inputs through the real catalogue flow: a clear error row or a correct result each.

The corpus is generated here (nothing copied into the repo): zero-byte files,
truncated headers, wrong extensions, non-audio bytes, NaN/inf float WAVs, one
sample, 8 kHz and 192 kHz, mono, six channels, 8-bit and 32-bit integer PCM,
5 MB RIFF INFO and ID3 tags, unicode, spaces and ``..`` in object keys. One flow
run over the whole corpus on moto S3, then per file: the expected status, the
error's words or correct stems; and every object in the bucket is either an
untouched input or under the output prefix. A header claiming ten hours is
refused before decoding, in bounded memory (measured in a child process).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="stemflow-prefect-"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

from stemflow.audio.decode import load_audio
from stemflow.store.commit import committed_tracks, verify_track  # noqa: E402
from stemflow.store.objects import read_bytes
from stemflow.store.paths import filesystem
from stemflow.store.records import read_records

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RATE = 44100
TAG_BYTES = 5 << 20


def tone(sample_rate: int = SAMPLE_RATE, channels: int = 2, seconds: float = 0.5) -> np.ndarray:
    """``[frames, channels]`` float32 sines, a different pitch per channel."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return np.stack([0.3 * np.sin(2 * np.pi * (220 + 55 * c) * t) for c in range(channels)], 1).astype(np.float32)


def encoded(samples: np.ndarray, sample_rate: int, format: str, subtype: str | None = None) -> bytes:  # noqa: A002
    """``samples`` ``[frames, channels]`` encoded by libsndfile."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format=format, subtype=subtype)
    return buffer.getvalue()


def with_big_info_chunk(wav: bytes, size: int = TAG_BYTES) -> bytes:
    """``wav`` with a ``LIST/INFO`` chunk holding an ``ICMT`` comment of ``size`` bytes before ``data``."""
    at = wav.index(b"data", 12)
    payload = b"INFO" + b"ICMT" + struct.pack("<I", size) + b"x" * size
    body = wav[12:at] + b"LIST" + struct.pack("<I", len(payload)) + payload + wav[at:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def with_big_id3(mp3: bytes, size: int = TAG_BYTES) -> bytes:
    """``mp3`` behind an ID3v2.4 tag of ``size`` bytes (synch-safe length, zero padding)."""
    synchsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x04\x00\x00" + synchsafe + b"\x00" * size + mp3


def write_sparse_wav(path: Path, seconds: float, sample_rate: int = 8000) -> int:
    """A mono 8-bit WAV whose header claims ``seconds`` of audio, its data a sparse hole; its size."""
    frames = int(seconds * sample_rate)
    header = b"RIFF" + struct.pack("<I", 36 + frames) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, sample_rate, sample_rate, 1, 8) + b"data" + struct.pack("<I", frames)
    with open(path, "wb") as handle:
        handle.write(header)
    os.truncate(path, len(header) + frames)
    return len(header) + frames


def corpus() -> dict[str, bytes]:
    """Every input of the corpus, keyed by its path under the catalogue prefix."""
    wav = encoded(tone(), SAMPLE_RATE, "WAV", "PCM_16")
    nan = tone()
    nan[10, 0] = np.nan
    inf = tone()
    inf[20, 1] = np.inf
    files = {
        "broken/zero-bytes.wav": b"",
        "broken/truncated-header.wav": wav[:30],
        "broken/text.flac": b"this is not audio at all\n" * 200,
        "broken/random-bytes.ogg": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "broken/nan.wav": encoded(nan, SAMPLE_RATE, "WAV", "FLOAT"),
        "broken/inf.wav": encoded(inf, SAMPLE_RATE, "WAV", "FLOAT"),
        "odd/truncated-data.wav": wav[: len(wav) // 2],
        "odd/flac-named.wav": encoded(tone(), SAMPLE_RATE, "FLAC"),
        "odd/wav-named.mp3": wav,
        "odd/one-sample.wav": encoded(tone()[:1], SAMPLE_RATE, "WAV", "PCM_16"),
        "odd/8k.wav": encoded(tone(8000), 8000, "WAV", "PCM_16"),
        "odd/192k.wav": encoded(tone(192000), 192000, "WAV", "PCM_24"),
        "odd/mono.wav": encoded(tone(channels=1), SAMPLE_RATE, "WAV", "PCM_16"),
        "odd/six-channels.wav": encoded(tone(channels=6), SAMPLE_RATE, "WAV", "PCM_16"),
        "odd/pcm-u8.wav": encoded(tone(), SAMPLE_RATE, "WAV", "PCM_U8"),
        "odd/pcm-s32.wav": encoded(tone(), SAMPLE_RATE, "WAV", "PCM_32"),
        "odd/5mb-info-chunk.wav": with_big_info_chunk(wav),
        "odd/5mb-id3.mp3": with_big_id3(encoded(tone(), SAMPLE_RATE, "MP3")),
        "names/with space and ünïcödé.wav": wav,
        "names/日本語 トラック.flac": encoded(tone(seconds=0.3), SAMPLE_RATE, "FLAC"),
        "names/a..b.wav": wav,
        "names/x/../dot-dot-component.wav": wav,
    }
    return files


#: key -> ("ok", (source sample rate, source channels)), ("error", words of the message) or
#: ("unlisted", why): not part of the catalogue by the listing's rules.
EXPECTED: dict[str, tuple[str, object]] = {
    "broken/zero-bytes.wav": ("error", "empty"),
    "broken/truncated-header.wav": ("error", "not decodable"),
    "broken/text.flac": ("error", "not decodable"),
    "broken/random-bytes.ogg": ("error", "not decodable"),
    "broken/nan.wav": ("error", "NaN or infinite"),
    "broken/inf.wav": ("error", "NaN or infinite"),
    "odd/truncated-data.wav": ("ok", (44100, 2)),
    "odd/flac-named.wav": ("ok", (44100, 2)),
    "odd/wav-named.mp3": ("ok", (44100, 2)),
    "odd/one-sample.wav": ("ok", (44100, 2)),
    "odd/8k.wav": ("ok", (8000, 2)),
    "odd/192k.wav": ("ok", (192000, 2)),
    "odd/mono.wav": ("ok", (44100, 1)),
    "odd/six-channels.wav": ("ok", (44100, 6)),
    "odd/pcm-u8.wav": ("ok", (44100, 2)),
    "odd/pcm-s32.wav": ("ok", (44100, 2)),
    "odd/5mb-info-chunk.wav": ("ok", (44100, 2)),
    "odd/5mb-id3.mp3": ("ok", (44100, 2)),
    "names/with space and ünïcödé.wav": ("ok", (44100, 2)),
    "names/日本語 トラック.flac": ("ok", (44100, 2)),
    "names/a..b.wav": ("ok", (44100, 2)),
    # a literal ``..`` component: the listing skips dot-names (hidden files and folders), so
    # it is never planned; were it read, HTTP clients normalise ``/x/../`` away (another key)
    "names/x/../dot-dot-component.wav": ("unlisted", "hidden"),
}

STAGE = {"local_num_cpus": 2, "tracks_per_call": 2, "torch_threads": 1}




def _upload(files: dict[str, bytes], prefix: str, storage_options: Any) -> None:
    fs, root = filesystem(prefix, storage_options)
    for key, data in files.items():
        fs.pipe_file(f"{root}/{key}", data)


def _all_keys(bucket: str, storage_options: Any) -> list[str]:
    fs, root = filesystem(bucket, storage_options)
    fs.invalidate_cache()
    return sorted(name[len(root) + 1:] for name in fs.find(root))


def test_corpus_is_what_it_claims() -> None:
    files = corpus()
    assert set(files) == set(EXPECTED)
    assert len(files["odd/5mb-info-chunk.wav"]) > TAG_BYTES and len(files["odd/5mb-id3.mp3"]) > TAG_BYTES
    assert sf.info(io.BytesIO(files["odd/pcm-u8.wav"])).subtype == "PCM_U8"
    assert sf.info(io.BytesIO(files["odd/pcm-s32.wav"])).subtype == "PCM_32"
    assert sf.info(io.BytesIO(files["odd/six-channels.wav"])).channels == 6
    assert sf.info(io.BytesIO(files["odd/one-sample.wav"])).frames == 1
    assert files["odd/flac-named.wav"][:4] == b"fLaC" and files["odd/wav-named.mp3"][:4] == b"RIFF"


@pytest.mark.s3
@pytest.mark.ray
@pytest.mark.prefect
@pytest.mark.slow
def test_one_flow_run_over_the_corpus_gives_an_error_row_or_correct_stems_per_file(
    prefect_api: str, s3_bucket: str, s3_options: dict[str, Any], tiny_model: Any, catalogue_kit: Any
) -> None:
    from pipelines.separate_catalogue import separate_catalogue

    files = corpus()
    cat, out = f"{s3_bucket}/catalogue", f"{s3_bucket}/out"
    _upload(files, cat, s3_options)
    before = _all_keys(s3_bucket, s3_options)
    summary = separate_catalogue(cat, out, model=tiny_model.config, checkpoint=tiny_model.checkpoint, shard_size=8,
                                 storage_options=s3_options, stage=STAGE, model_settings={"batch_size": 8})
    model_id = summary["model_id"]
    count = {s: sum(1 for status, _ in EXPECTED.values() if status == s) for s in ("ok", "error", "unlisted")}
    assert (summary["planned"], summary["errors"], summary["ok"]) == (
        count["ok"] + count["error"], count["error"], count["ok"])

    rows = read_records(out, model_id=model_id, storage_options=s3_options).to_pylist()
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = row["source_url"].split("/catalogue/", 1)[1]
        by_key.setdefault(key, []).append(row)
    assert set(by_key) == {k for k, (status, _) in EXPECTED.items() if status != "unlisted"}
    committed = set(committed_tracks(out, model_id, storage_options=s3_options))
    for key, (status, detail) in EXPECTED.items():
        if status == "unlisted":
            continue
        mine = by_key[key]
        assert {r["status"] for r in mine} == {status}, (key, mine[0].get("error"))
        if status == "error":
            (row,) = mine
            assert str(detail).lower() in row["error"].lower(), (key, row["error"])
            assert row["track_id"] not in committed
            continue
        assert sorted(r["stem"] for r in mine) == ["instrumental", "vocals"], key
        assert mine[0]["track_id"] in committed
        assert verify_track(out, model_id, mine[0]["track_id"], storage_options=s3_options)
        rate, channels = detail  # type: ignore[misc]
        assert (mine[0]["source_sample_rate"], mine[0]["channels_in"]) == (rate, channels), key
        mixture = load_audio(files[key], sample_rate=44100, channels=2, name=key).samples
        stems = [catalogue_kit.decode(read_bytes(r["stem_url"], s3_options)) for r in mine]
        assert all(s.shape == mixture.shape for s in stems), key
        assert np.max(np.abs(np.sum(stems, axis=0) - mixture)) < 1e-5, key
    assert len(committed) == summary["ok"]

    # every object is an untouched input or lies under the output prefix
    after = _all_keys(s3_bucket, s3_options)
    inputs = [k for k in after if k.startswith("catalogue/")]
    assert inputs == [k for k in before if k.startswith("catalogue/")] == sorted(f"catalogue/{k}" for k in files)
    outside = [k for k in after if not k.startswith(("catalogue/", "out/"))]
    assert outside == []
    for key in (k for k in after if k.startswith("out/")):
        parts = key.split("/")
        assert ".." not in parts and "" not in parts, key
        assert parts[1] in {"stems", "metadata", "runs", "index"}, key  # index: the committed index
        if parts[1] == "stems":
            assert parts[2] == model_id and parts[3] in committed | {r["track_id"] for r in rows}, key
    manifest = json.loads(read_bytes(f"{out}/runs/{summary['run_id']}.json", s3_options))
    assert manifest["status"] == "partial"


_TEN_HOURS_SCRIPT = """
import json, resource, sys
sys.path.insert(0, {root!r})
from stemflow.hub.spec import ModelSpec
from stemflow.stage.settings import ShardJob
from stemflow.stage.worker import TrackWorker
job = ShardJob(output_url={out!r}, model_id="m", run_id="r", run_date="2026-11-24")
spec = ModelSpec(config_path={config!r}, checkpoint_path={ckpt!r})
worker = TrackWorker(spec, job=job, torch_threads=1, **{limits!r})
# VmHWM is this process's own peak RSS; ru_maxrss would include the parent's at the fork
base = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
outcome = worker.finish(worker.separate("t10h", {url!r}, worker.fetch({url!r})))
peak = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
print(json.dumps({{"status": outcome.status, "error": outcome.error, "base_kib": base, "peak_kib": peak}}))
"""


def _run_worker(tmp_path: Path, model: Any, source: Path, limits: dict[str, Any]) -> dict[str, Any]:
    script = _TEN_HOURS_SCRIPT.format(root=str(REPO_ROOT), out=str(tmp_path / "out"), config=model.config,
                                      ckpt=model.checkpoint, url=str(source), limits=limits)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.ray
def test_a_header_claiming_ten_hours_is_refused_before_decoding_in_bounded_memory(
    tmp_path: Path, tiny_model: Any
) -> None:
    source = tmp_path / "ten-hours.wav"
    size = write_sparse_wav(source, 36000.0)  # 8 kHz mono 8-bit: 288 MB, a hole on disk
    assert size > 288_000_000 and os.stat(source).st_blocks * 512 < 1 << 20
    result = _run_worker(tmp_path, tiny_model, source, {})
    assert result["status"] == "error"
    assert "36000" in result["error"] and "max_duration_s" in result["error"]
    # decoding it at the model's 44.1 kHz stereo float32 would take 36000*44100*2*4 B = 12.7 GB
    grown_mib = (result["peak_kib"] - result["base_kib"]) / 1024
    assert grown_mib < 800, f"the worker grew by {grown_mib:.0f} MiB"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("_COMMITTED.json"))


@pytest.mark.ray
def test_a_source_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path, tiny_model: Any) -> None:
    source = tmp_path / "big.wav"
    write_sparse_wav(source, 3600.0)  # 28.8 MB
    result = _run_worker(tmp_path, tiny_model, source, {"max_source_bytes": 10_000_000})
    assert result["status"] == "error"
    assert "max_source_bytes" in result["error"] and "28800044" in result["error"]
    assert (result["peak_kib"] - result["base_kib"]) / 1024 < 20  # 28.8 MB never entered memory


@pytest.mark.ray
def test_the_limits_are_stage_settings_and_are_validated() -> None:
    from stemflow.errors import ConfigError
    from stemflow.stage.settings import DEFAULT_MAX_DURATION_S, DEFAULT_MAX_SOURCE_BYTES, StageSettings

    assert (StageSettings().max_duration_s, StageSettings().max_source_bytes) == (
        DEFAULT_MAX_DURATION_S, DEFAULT_MAX_SOURCE_BYTES) == (7200.0, 2 << 30)
    assert StageSettings(max_duration_s=None, max_source_bytes=None).max_duration_s is None  # no limit
    for bad in ({"max_duration_s": 0}, {"max_source_bytes": -1}):
        with pytest.raises(ConfigError, match="max_duration_s, max_source_bytes"):
            StageSettings(**bad)
