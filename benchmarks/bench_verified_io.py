"""What the hostile-input defences cost: verified weight loads and streamed WebDataset shards.

Two comparisons, each side in its own child process (peak RSS from ``os.wait4``,
wall time inside the child), side by side in one run:

* **weights**: ``torch.load(path, weights_only=True)`` (what loads did before: no
  hash of the bytes loaded) against :func:`stemflow.models.checkpoint.load_verified_state`
  (read once, sha256, parse the same bytes) on a synthetic checkpoint of
  ``--weights-mb`` MB of float32 tensors;
* **shards**: the old in-memory tar (every member read whole, the tar built in a
  ``BytesIO``, then one write) against
  :func:`stemflow.karaoke.index.write_webdataset_shards` (streamed) on one shard of
  ``--shard-mb`` MB of members.

Writes ``benchmarks/results/verified_io.json``. ``--quick`` shrinks both sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

CHILD = r'''
import io, json, sys, tarfile, time
from pathlib import Path
case, path = sys.argv[1], Path(sys.argv[2])
started = time.perf_counter()
if case == "torch_load":
    import torch
    torch.load(path, map_location="cpu", weights_only=True)
elif case == "verified_load":
    from stemflow.models.checkpoint import load_verified_state
    load_verified_state(path)
else:
    rows = json.loads((path / "rows.json").read_text())
    if case == "shard_streamed":
        from stemflow.karaoke.index import write_webdataset_shards
        write_webdataset_shards(str(path), rows, tracks_per_shard=len(rows))
    else:  # the tar built in memory, as before
        from stemflow.store.objects import read_bytes, write_atomic
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for row in rows:
                for column in ("backing_path", "vocals_path"):
                    data = read_bytes(str(path / row[column]))
                    info = tarfile.TarInfo(row["track_id"] + "." + column[:-5] + ".flac")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        write_atomic(str(path / "shards" / "memory.tar"), buffer.getvalue())
print(json.dumps({"wall_s": time.perf_counter() - started}))
'''


def run_child(case: str, path: Path) -> dict[str, float]:
    """Run one case in a fresh interpreter; its wall time and peak RSS (MiB)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", CHILD, case, str(path)], stdout=subprocess.PIPE, env=env)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"{case} failed with status {status}")
    return {"wall_s": json.loads(output)["wall_s"], "peak_rss_mib": usage.ru_maxrss / 1024}


def make_checkpoint(folder: Path, megabytes: int) -> Path:
    """A state dict of float32 tensors totalling ``megabytes`` MB, saved as ``model.ckpt``."""
    import torch

    generator = torch.Generator().manual_seed(0)
    per_tensor = 4 << 20  # 4 MiB tensors, like a transformer's layers
    count = max(1, (megabytes << 20) // per_tensor)
    state = {f"layers.{i}.weight": torch.randn(per_tensor // 4, generator=generator) for i in range(count)}
    path = folder / "model.ckpt"
    torch.save({"state_dict": state}, path)
    return path


def make_version(folder: Path, megabytes: int) -> Path:
    """A dataset version folder with accepted tracks whose two members total ``megabytes`` MB."""
    import numpy as np

    rng = np.random.default_rng(0)
    per_file = 8 << 20
    tracks = max(1, (megabytes << 20) // (2 * per_file))
    rows = []
    for i in range(tracks):
        track = folder / "train" / f"t{i:04d}"
        track.mkdir(parents=True)
        for name in ("backing", "vocals"):
            (track / f"{name}.flac").write_bytes(rng.bytes(per_file))
        rows.append({"track_id": f"t{i:04d}", "split": "train", "accepted": True,
                     "backing_path": f"train/t{i:04d}/backing.flac", "vocals_path": f"train/t{i:04d}/vocals.flac"})
    (folder / "rows.json").write_text(json.dumps(rows))
    return folder


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-mb", type=int, default=512)
    parser.add_argument("--shard-mb", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="64 MB of each")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "verified_io.json")
    args = parser.parse_args(argv)
    weights_mb, shard_mb = (64, 64) if args.quick else (args.weights_mb, args.shard_mb)
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_before": os.getloadavg(), "weights_mb": weights_mb, "shard_mb": shard_mb,
    }
    with tempfile.TemporaryDirectory(prefix="stemflow-bench-") as work:
        checkpoint = make_checkpoint(Path(work), weights_mb)
        results["torch_load"] = run_child("torch_load", checkpoint)
        results["verified_load"] = run_child("verified_load", checkpoint)
        checkpoint.unlink()
        version = make_version(Path(work) / "v1", shard_mb)
        results["shard_in_memory"] = run_child("shard_in_memory", version)
        results["shard_streamed"] = run_child("shard_streamed", version)
    results["load_average_after"] = os.getloadavg()
    for a, b, name in (("verified_load", "torch_load", "weights"), ("shard_streamed", "shard_in_memory", "shards")):
        results[f"{name}_time_ratio"] = results[a]["wall_s"] / results[b]["wall_s"]
        results[f"{name}_rss_ratio"] = results[a]["peak_rss_mib"] / results[b]["peak_rss_mib"]
    print(f"{'case':<18}{'wall s':>10}{'peak RSS MiB':>16}")
    for case in ("torch_load", "verified_load", "shard_in_memory", "shard_streamed"):
        print(f"{case:<18}{results[case]['wall_s']:>10.2f}{results[case]['peak_rss_mib']:>16.0f}")
    print(f"verified/plain load: time x{results['weights_time_ratio']:.2f}, RSS x{results['weights_rss_ratio']:.2f}; "
          f"streamed/in-memory shard: time x{results['shards_time_ratio']:.2f}, RSS x{results['shards_rss_ratio']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
