"""The bad-input corpus, local part: one real flow run over a hostile catalogue and a hostile output.

The catalogue holds what can hang or loop a run (a FIFO, a socket, a link to
``/dev/zero``, a link farm with two links per folder, a link back to itself, a
link into the output); the output already holds junk where a track's stem
belongs; the stage settings carry a ``runtime_env`` whose env vars hold AWS
keys. The flow runs in a child process with a timeout, so a regression that
blocks on the FIFO fails the test instead of hanging the suite. Afterwards:
each real audio file separated exactly once and nothing else listed, the junk
neither committed nor recorded, every marker verified, and no secret in the
run manifest.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from stemflow.catalogue.listing import list_audio
from stemflow.store.commit import committed_stem_urls, read_marker, stem_url, verify_track
from stemflow.store.records import read_records

pytestmark = [pytest.mark.slow, pytest.mark.prefect, pytest.mark.ray]

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
JUNK = b"not a stem: junk someone left in the output"

FLOW = (
    "import json, sys\n"
    "from pipelines.separate_catalogue import separate_catalogue\n"
    "args = json.loads(sys.argv[1])\n"
    "print(json.dumps(separate_catalogue(**args)))\n"
)


def _hostile_catalogue(root: Path, kit: Any) -> Path:
    cat = root / "cat"
    for index, relative in enumerate(("a.wav", "b.wav", "farm/d1/c.wav", "farm/d2/d.wav")):
        path = cat / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, kit.tone(index).T, kit.sample_rate, subtype="PCM_16")
    for here, there in (("d1", "d2"), ("d2", "d1")):  # two links per folder
        (cat / "farm" / here / "to-self").symlink_to(cat / "farm" / here)
        (cat / "farm" / here / "to-other").symlink_to(cat / "farm" / there)
    (cat / "up").symlink_to(cat)
    os.mkfifo(cat / "pipe.wav")
    (cat / "zero.flac").symlink_to("/dev/zero")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(cat / "sock.wav"))
    server.close()  # the socket file stays
    (cat / "again.wav").symlink_to(cat / "a.wav")
    return cat


def test_a_hostile_catalogue_and_output_neither_hang_nor_corrupt_a_run(
    tmp_path: Path, tiny_model: Any, catalogue_kit: Any
) -> None:
    from pipelines.runtime import resolve_model

    cat, out = _hostile_catalogue(tmp_path, catalogue_kit), tmp_path / "out"
    (cat / "into-output").symlink_to(out)
    model_settings = {"batch_size": 8}
    _, model_id = resolve_model(tiny_model.config, tiny_model.checkpoint, model_settings)
    tracks = {Path(t.url).name: t.track_id for t in list_audio(str(cat))}
    junk = Path(stem_url(str(out), model_id, tracks["a.wav"], "vocals", "flac"))
    junk.parent.mkdir(parents=True)
    junk.write_bytes(JUNK)

    stage = {"local_num_cpus": 2, "tracks_per_call": 2, "torch_threads": 1,
             "runtime_env": {"env_vars": {"AWS_SECRET_ACCESS_KEY": SECRET, "OMP_NUM_THREADS": "1"}}}
    args = {"catalogue_url": str(cat), "output_url": str(out), "model": tiny_model.config,
            "checkpoint": tiny_model.checkpoint, "shard_size": 8, "stage": stage, "model_settings": model_settings}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PREFECT_HOME": tempfile.mkdtemp(),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RAY_USAGE_STATS_ENABLED": "0",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    done = subprocess.run([sys.executable, "-c", FLOW, json.dumps(args)], capture_output=True, text=True,
                          timeout=600, env=env, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["model_id"] == model_id
    assert (summary["planned"], summary["ok"], summary["errors"]) == (4, 4, 0)

    rows = read_records(str(out), model_id=model_id).to_pylist()
    sources = sorted(Path(r["source_url"].removeprefix("file://")).relative_to(cat).as_posix()
                     for r in rows if r["stem"] == "vocals")
    assert sources == ["a.wav", "b.wav", "farm/d1/c.wav", "farm/d2/d.wav"]  # each real file once, nothing else
    assert {r["status"] for r in rows} == {"ok"}
    for track_id in {r["track_id"] for r in rows}:
        assert verify_track(str(out), model_id, track_id)
        marker = read_marker(str(out), model_id, track_id)
        urls = committed_stem_urls(str(out), model_id, track_id, marker)
        assert {r["stem_url"] for r in rows if r["track_id"] == track_id} == set(urls.values())
    assert not junk.exists()  # replaced: the junk is neither committed, nor recorded, nor left behind
    marker = read_marker(str(out), model_id, tracks["a.wav"])
    assert all(s.sha256 != __import__("hashlib").sha256(JUNK).hexdigest() for s in marker.stems)

    manifests = list((out / "runs").glob("*.json"))
    assert len(manifests) == 1
    text = manifests[0].read_text()
    assert SECRET not in text and "AWS_SECRET_ACCESS_KEY" in text  # the key is named, its value is not
