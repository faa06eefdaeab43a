"""Long tracks in the catalogue worker: streamed block by block, with the same stems, hashes and rows as in memory.

``stream_above_bytes=1`` makes every track stream, ``None`` keeps every track
in memory; the same tracks through both must give byte-identical stems (the
rows' ``stem_sha256``), the same record columns (the quality measures to float
rounding) and leave no temporary file behind, on every storage backend.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import soundfile as sf

from stemflow.hub.spec import ModelSpec
from stemflow.stage.pipeline import BatchPipeline
from stemflow.stage.settings import ShardJob
from stemflow.stage.worker import TrackWorker
from stemflow.tempfiles import PREFIX, temp_root

RATE = 44100
EXACT = ("track_id", "stem", "stem_sha256", "stem_bytes", "sample_rate", "source_sample_rate", "channels_in",
         "duration_s", "status", "residual_stem")


def _ours() -> set[str]:
    """This process's temporary files and folders."""
    return {p.name for p in temp_root().iterdir() if p.name.startswith(PREFIX) and f"-{os.getpid()}-" in p.name}


def _tracks(folder: Path) -> dict[str, Path]:
    """A stereo WAV, a 48 kHz FLAC (resampled as it streams) and a mono FLAC, a few seconds each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    t = np.arange(int(3.3 * RATE)) / RATE
    stereo = np.stack([0.4 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 331 * t)])
    stereo = (stereo + 0.05 * rng.standard_normal(stereo.shape)).astype(np.float32)
    t48 = np.arange(int(2.2 * 48000)) / 48000
    high = (0.5 * np.sin(2 * np.pi * 1000 * t48)[None].repeat(2, 0) + 0.02 * rng.standard_normal((2, t48.size)))
    mono = 0.6 * np.sin(2 * np.pi * 150 * t[: int(1.7 * RATE)])
    paths = {"wav": folder / "a.wav", "flac48": folder / "b.flac", "mono": folder / "c.flac"}
    sf.write(paths["wav"], stereo.T, RATE, subtype="PCM_16")
    sf.write(paths["flac48"], high.astype(np.float32).T, 48000, subtype="PCM_24")
    sf.write(paths["mono"], mono.astype(np.float32), RATE, subtype="PCM_16")
    return paths


def _run(model: Any, output_url: str, options: Any, sources: dict[str, str], *, stream_above: int | None,
         sum_to_mixture: bool = False) -> dict[tuple[str, str], dict[str, Any]]:
    """Every source through a worker's pipeline (prepare, model step, finish): ``{(track, stem): row}``."""
    spec = ModelSpec(config_path=model.config, checkpoint_path=model.checkpoint, sum_to_mixture=sum_to_mixture)
    job = ShardJob(output_url=output_url, model_id="m-stream", run_id="r1", run_date="2026-12-02",
                   storage_options=options)
    worker = TrackWorker(spec, job=job, torch_threads=1, stream_above_bytes=stream_above)
    pipeline = BatchPipeline(worker, io_threads=2, cpu_threads=2)
    try:
        outcomes = pipeline.process([{"track_id": name, "url": url} for name, url in sources.items()])
    finally:
        pipeline.close()
    rows = {}
    for outcome in outcomes:
        assert outcome.status == "ok", outcome.error
        for row in outcome.rows:
            rows[(row["track_id"], row["stem"])] = dict(row)
    return rows


def _same_rows(streamed: dict[tuple[str, str], dict[str, Any]], whole: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert streamed.keys() == whole.keys()
    for key, row in whole.items():
        other = streamed[key]
        for column in EXACT:
            assert other.get(column) == row.get(column), (key, column)
        measured = [c for c, v in row.items() if isinstance(v, float) and c not in EXACT and not c.endswith("_s")]
        assert {"loudness_lufs", "true_peak_dbtp", "silence_ratio", "bleed_ratio_vocals", "residual_db"} <= set(measured), row
        for column in measured:
            want, got = row[column], other[column]
            if math.isnan(want):
                assert math.isnan(got), (key, column)
            else:
                assert got == pytest.approx(want, rel=1e-6, abs=1e-6), (key, column)


@pytest.mark.parametrize("sum_to_mixture", [False, True])
def test_streamed_tracks_store_the_same_stems_and_rows_as_in_memory(backend: tuple[str, Any], tmp_path: Path,
                                                                    tiny_model: Any, sum_to_mixture: bool) -> None:
    base, options = backend
    sources = {name: str(path) for name, path in _tracks(tmp_path / "in").items()}
    before = _ours()
    whole = _run(tiny_model, f"{base}/whole", options, sources, stream_above=None, sum_to_mixture=sum_to_mixture)
    streamed = _run(tiny_model, f"{base}/streamed", options, sources, stream_above=1,
                    sum_to_mixture=sum_to_mixture)
    _same_rows(streamed, whole)
    assert {row["stem"] for row in whole.values()} == {"vocals", "instrumental"}
    assert _ours() == before  # decoders' copies, encoded stems: all removed


def test_a_remote_source_is_copied_locally_then_removed(s3_options: dict[str, Any], s3_bucket: str, tmp_path: Path,
                                                       tiny_model: Any, catalogue_kit: Any) -> None:
    local = _tracks(tmp_path / "in")
    catalogue_kit.upload(tmp_path / "in", f"{s3_bucket}/cat", s3_options)
    sources = {name: f"{s3_bucket}/cat/{path.name}" for name, path in local.items()}
    before = _ours()
    whole = _run(tiny_model, f"{s3_bucket}/whole", s3_options, sources, stream_above=None)
    streamed = _run(tiny_model, f"{s3_bucket}/streamed", s3_options, sources, stream_above=1)
    _same_rows(streamed, whole)
    assert _ours() == before


def test_a_source_that_breaks_mid_stream_is_an_error_row_and_leaves_nothing(tmp_path: Path, tiny_model: Any) -> None:
    paths = _tracks(tmp_path / "in")
    cut = tmp_path / "in" / "cut.flac"
    data = paths["flac48"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the header still claims the whole length; frames stop mid-file
    spec = ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint)
    out = tmp_path / "out"
    job = ShardJob(output_url=str(out), model_id="m-stream", run_id="r1", run_date="2026-12-02")
    worker = TrackWorker(spec, job=job, torch_threads=1, stream_above_bytes=1)
    before = _ours()
    outcome = worker.finish(worker.separate("cut", str(cut), worker.fetch(str(cut))))
    assert outcome.status == "error"
    assert "cut.flac" in outcome.error
    assert not list(out.rglob("*.flac")) and not list(out.rglob("_COMMITTED.json"))
    assert _ours() == before
    # a WAV cut short is what libsndfile reads of it (as in memory: the bad-input corpus's "truncated-data.wav")
    short = tmp_path / "in" / "short.wav"
    wav = paths["wav"].read_bytes()
    short.write_bytes(wav[: len(wav) // 2])
    good = worker.finish(worker.separate("short", str(short), worker.fetch(str(short))))
    assert good.status == "ok", good.error  # the worker goes on
    assert good.rows[0]["duration_s"] == sf.info(str(short)).frames / RATE
    assert _ours() == before


def test_tracks_above_the_threshold_stream_and_shorter_ones_do_not(tmp_path: Path, tiny_model: Any) -> None:
    paths = _tracks(tmp_path / "in")
    spec = ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint)
    job = ShardJob(output_url=str(tmp_path / "out"), model_id="m", run_id="r", run_date="2026-12-02")
    # a.wav decodes to 3.3 s x 44100 x 2 x 4 B = 1.16 MB; c.flac to 1.7 s = 0.6 MB
    # (a.wav is 0.58 MB, under the threshold as an object: its header decides)
    worker = TrackWorker(spec, job=job, torch_threads=1, stream_above_bytes=1_000_000)
    before = _ours()
    long, short = worker.fetch(str(paths["wav"])), worker.fetch(str(paths["mono"]))
    try:
        assert long.streamed is not None and long.decoded is None
        assert long.streamed.num_samples == int(3.3 * RATE)
        assert short.streamed is None and short.decoded is not None
        assert _ours() == before  # a local source streams from its own file: no copy
    finally:
        long.streamed.stack.close()
    # a remote one is spooled from the bytes already read (no second read), and the spool goes with the stream
    fs = fsspec.filesystem("memory")
    fs.pipe("/streamed-threshold/a.wav", paths["wav"].read_bytes())
    remote = worker.fetch("memory://streamed-threshold/a.wav")
    try:
        assert remote.streamed is not None and remote.streamed.num_samples == int(3.3 * RATE)
        spools = _ours() - before
        assert len(spools) == 1 and next(iter(spools)).endswith(".wav")
    finally:
        remote.streamed.stack.close()
        fs.rm("/streamed-threshold", recursive=True)
    assert _ours() == before


_CHILD = """
import json, resource, sys
sys.path.insert(0, {root!r})
import torch
from stemflow.engine.separator import Separator
from stemflow.hub.spec import ModelSpec
from stemflow.models.config import config_from_dict
from stemflow.stage.settings import ShardJob
from stemflow.stage.worker import TrackWorker

class Gain(torch.nn.Module):  # a stand-in with the fixture's chunking: the pipeline's memory, not a model's
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.num_output_stems = 1
    def separate_chunks(self, x):
        return 0.5 * x.unsqueeze(1)

config = config_from_dict({{"model_type": "test", "audio": {{"chunk_size": 44100, "sample_rate": 44100}},
    "model": {{}}, "training": {{"instruments": ["vocals", "instrumental"], "target_instrument": "vocals"}},
    "inference": {{"num_overlap": 2, "batch_size": 8}}}})
job = ShardJob(output_url={out!r}, model_id="m-gain", run_id="r", run_date="2026-12-02")
worker = TrackWorker(ModelSpec(config_path={config!r}, checkpoint_path={checkpoint!r}), job=job, torch_threads=1,
                     separator=Separator(Gain(config), batch_size=8), stream_above_bytes={stream_above!r})
outcome = worker.finish(worker.separate("long", {source!r}, worker.fetch({source!r})))
print(json.dumps({{"status": outcome.status, "error": outcome.error,
                  # VmHWM is this process's own peak RSS; ru_maxrss would include the parent's at the fork
                  "peak_rss_mib": int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024}}))
"""


def _worker_peak_mib(tmp_path: Path, model: Any, source: Path, stream_above: int | None) -> float:
    import json
    import subprocess
    import sys

    out = tmp_path / f"out-{stream_above}"
    script = _CHILD.format(root=str(Path(__file__).resolve().parents[2]), out=str(out), source=str(source),
                           config=model.config, checkpoint=model.checkpoint, stream_above=stream_above)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok", result["error"]
    assert sorted(p.name for p in out.rglob("*.flac")) == ["instrumental.flac", "vocals.flac"]
    return float(result["peak_rss_mib"])


def _noise_flac(path: Path, minutes: int) -> Path:
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=RATE, channels=2, subtype="PCM_16") as handle:
        for _ in range(minutes * 6):  # 10 s at a time: the test itself never holds the track
            handle.write((0.2 * rng.standard_normal((10 * RATE, 2))).astype(np.float32))
    return path


@pytest.mark.slow
def test_a_long_track_streams_through_the_worker_in_bounded_memory(tmp_path: Path, tiny_model: Any) -> None:
    """3 and 12 minutes streamed peak alike; held whole, 12 minutes is 254 MB decoded plus two stems and encodings."""
    short, long = _noise_flac(tmp_path / "short.flac", 3), _noise_flac(tmp_path / "long.flac", 12)
    streamed_short = _worker_peak_mib(tmp_path, tiny_model, short, 1)
    streamed_long = _worker_peak_mib(tmp_path, tiny_model, long, 1)
    whole_long = _worker_peak_mib(tmp_path, tiny_model, long, None)
    # in memory, 9 more minutes would add >= 9 x 60 x 44100 x 2 x 4 B x 3 (mixture, two stems) = 544 MiB
    assert streamed_long - streamed_short < 64, (streamed_short, streamed_long)
    assert whole_long > streamed_long + 400, (whole_long, streamed_long)
