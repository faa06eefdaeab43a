"""Peak memory of one long input: the streamed default path against the in-memory path, by input length.

Each measurement is a fresh subprocess (its own peak RSS, ``VmHWM``) that separates one
48 kHz stereo MP3 (a 10 s tone MP3 concatenated without re-encoding, so a
2-hour file is made in seconds) into two FLAC stems:

* ``streamed``: :func:`stemflow.engine.streaming.separate_file`, what
  ``stemflow separate`` runs by default (MP3 decode with a counting pass,
  soxr 48 -> 44.1 kHz as it streams, overlap-add, FLAC written block by block);
* ``in_memory``: :func:`stemflow.engine.track.separate_track` + ``save_audio``
  (``stemflow separate --in-memory``);
* ``worker_streamed`` / ``worker_in_memory``: the catalogue worker
  (:class:`stemflow.stage.worker.TrackWorker`: fetch, separate, the quality
  measures, encode, write-once store, commit) with its default
  ``stream_above_bytes`` (a long track streams) and with ``None`` (held whole).

The model is a stand-in with the fixture Mel-RoFormer's chunking (4410
samples, overlap 2) whose forward is a gain, so the figures are the
pipeline's memory, not a model's activations (those are bounded by
``batch_size x chunk_size`` and do not grow with the track). With
``--fixture-seconds`` the real CLI also runs the tiny Mel-RoFormer fixture on
a short input, for the model's own share.

    python benchmarks/bench_memory.py --minutes 5 20 60 120 --in-memory-up-to 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = REPO_ROOT.parent / "shared" / "fixtures" / "roformer" / "mel_roformer_vocals"

_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import torch
from stemflow.engine.separator import Separator
from stemflow.models.config import config_from_dict

class Gain(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.num_output_stems = 1
    def separate_chunks(self, x):
        return 0.5 * x.unsqueeze(1)

config = config_from_dict({{"model_type": "test", "audio": {{"chunk_size": 4410, "sample_rate": 44100}}, "model": {{}},
    "training": {{"instruments": ["vocals", "instrumental"], "target_instrument": "vocals"}},
    "inference": {{"num_overlap": 2, "batch_size": 16}}}})
separator = Separator(Gain(config), batch_size=16)
outputs = {{"vocals": {out!r} + "/vocals.flac", "instrumental": {out!r} + "/instrumental.flac"}}
started = time.perf_counter()
if {mode!r}.startswith("worker_"):
    from stemflow.hub.spec import ModelSpec
    from stemflow.stage.settings import DEFAULT_STREAM_ABOVE_BYTES, ShardJob
    from stemflow.stage.worker import TrackWorker
    job = ShardJob(output_url={out!r}, model_id="m-gain", run_id="r", run_date="2026-12-02")
    worker = TrackWorker(ModelSpec(config_path={fixture_config!r}, checkpoint_path={fixture_checkpoint!r}), job=job,
                         torch_threads=1, separator=separator, max_duration_s=None,
                         stream_above_bytes=DEFAULT_STREAM_ABOVE_BYTES if {mode!r} == "worker_streamed" else None)
    outcome = worker.finish(worker.separate("long", {source!r}, worker.fetch({source!r})))
    assert outcome.status == "ok", outcome.error
elif {mode!r} == "streamed":
    from stemflow.engine.streaming import separate_file
    separate_file(separator, {source!r}, outputs)
else:
    from stemflow.audio.encode import save_audio
    from stemflow.engine.track import separate_track
    result = separate_track(separator, {source!r}, name={source!r}, measure_quality=False)
    for stem, path in outputs.items():
        save_audio(path, result.stems[stem], result.sample_rate, format="flac", bit_depth=24)
print(json.dumps({{"seconds": time.perf_counter() - started,
                  # VmHWM is this process's own peak RSS; ru_maxrss would include the parent's at the fork
                  "peak_rss_mib": int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024}}))
"""


def make_mp3(folder: Path, minutes: float) -> Path:
    """A 48 kHz stereo MP3 of ``minutes``: a 10 s tone MP3 concatenated (stream copy, no re-encoding)."""
    piece = folder / "piece.mp3"
    if not piece.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=10:sample_rate=48000",
                        "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k", str(piece)], check=True)
    count = max(1, round(minutes * 6))
    listing = folder / f"list{count}.txt"
    listing.write_text("".join(f"file '{piece}'\n" for _ in range(count)))
    out = folder / f"tone-{minutes:g}min.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
                    str(out)], check=True)
    return out


def measure(source: Path, mode: str, folder: Path) -> dict[str, float]:
    """Run one separation in a fresh process; its seconds and peak RSS."""
    out = folder / f"out-{mode}-{source.stem}"
    out.mkdir(exist_ok=True)
    script = _CHILD.format(root=str(REPO_ROOT), source=str(source), out=str(out), mode=mode,
                           fixture_config=str(FIXTURE / "config.yaml"), fixture_checkpoint=str(FIXTURE / "model.ckpt"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_fixture_cli(folder: Path, seconds: float) -> dict[str, float]:
    """The real ``stemflow separate`` (default path) with the tiny Mel-RoFormer fixture on a short 48 kHz MP3."""
    source = make_mp3(folder, seconds / 60)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "stemflow", "separate", str(source), "-o", str(folder / "cli"),
                                "--config", str(FIXTURE / "config.yaml"), "--checkpoint", str(FIXTURE / "model.ckpt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
    _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage (this script imports no torch)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"stemflow separate exited with {process.returncode}")
    return {"input_seconds": seconds, "seconds": time.perf_counter() - started,
            "peak_rss_mib": usage.ru_maxrss / 1024, "note": "ru_maxrss of the CLI process (os.wait4)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 20, 60, 120])
    parser.add_argument("--in-memory-up-to", type=float, default=20, help="longest input run in memory too")
    parser.add_argument("--fixture-seconds", type=float, default=0, help="also run the real CLI on this long an input")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "memory_cpu.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="stemflow-bench-") as temp:
        folder = Path(temp)
        for minutes in args.minutes:
            source = make_mp3(folder, minutes)
            row = {"minutes": minutes, "mp3_bytes": source.stat().st_size,
                   "streamed": measure(source, "streamed", folder),
                   "worker_streamed": measure(source, "worker_streamed", folder)}
            if minutes <= args.in_memory_up_to:
                row["in_memory"] = measure(source, "in_memory", folder)
                row["worker_in_memory"] = measure(source, "worker_in_memory", folder)
            print(json.dumps(row), flush=True)
            rows.append(row)
            source.unlink()
        fixture = measure_fixture_cli(folder, args.fixture_seconds) if args.fixture_seconds else None
    result = {"benchmark": "memory", "machine": platform.platform(), "cpu_only": True,
              "input": "48 kHz stereo MP3 (128 kb/s), two 24-bit FLAC stems at 44.1 kHz",
              "worker": "TrackWorker with the quality measures, local output; stream_above_bytes default vs None",
              "rows": rows,
              "fixture_cli": fixture}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
