"""Every command the README shows works as written, run from a folder outside the repository.

Data-driven: every ```bash and ```python block of README.md is found and run,
so commands added to the README are picked up without touching this file. Each
block runs in its own empty temporary folder, its commands in order (a later
command may use what an earlier one wrote). What the commands name is made
there first, as a user would have it: audio files (``song.flac``), folders of
audio given to ``separate`` (``album/``), catalogue manifests (``catalogue.csv``,
``catalogue.parquet``: a ``url`` and an ``artist`` column), and the buckets of
``s3://`` URLs on a local moto S3 server (``AWS_ENDPOINT_URL``).

Not run, each with its reason: what needs the internet (installing packages,
downloading weights that are not cached, remote URLs), a GPU, placeholders
(``path/to/...``), and the set-up scripts (CI runs ``scripts/test.sh``
itself). :data:`SKIPS` lists the fixed reasons; :func:`skip_reason` adds the
network and GPU checks. A command listed in :data:`KNOWN_FAILING` is expected
to fail until the issue named there lands (strict: it must then be removed).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemflow.audio.formats import audio_suffix

REPO = Path(__file__).resolve().parents[2]
RATE = 44100

SKIPS: tuple[tuple[str, str], ...] = (
    (r"^pip install", "installs packages from PyPI (network); tests/packaging builds and installs the wheel instead"),
    (r"^scripts/test\.sh", "runs this very suite; CI runs it (.ci/run)"),
    (r"path/to/", "placeholder paths"),
    (r"^scripts/demo\.sh", "sets up the machine (apt-get, pip: network); tests/test_pipeline.py runs the demo flow"),
    (r"out/metadata", "reads a catalogue run's output; tests/test_records.py queries hive partitions with DuckDB"),
)
"""(regular expression on the command or code, reason): commands and blocks that are not run."""

KNOWN_FAILING: dict[str, tuple[str, str]] = {}
"""Command prefix -> (why it fails today, text its error must show). xfail only with that error;
once the command works the test fails, so the entry gets removed."""


@dataclass
class Block:
    """One fenced block of README.md: its language, first line and commands (bash) or code (python)."""

    lang: str
    line: int
    commands: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"README.md:{self.line}-{self.lang}"


def readme_blocks(text: str) -> list[Block]:
    """The ```bash and ```python blocks; bash lines joined at trailing backslashes, blank lines dropped."""
    blocks: list[Block] = []
    current: Block | None = None
    pending = ""
    for number, line in enumerate(text.splitlines(), start=1):
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence and current is None:
            current = Block(fence.group(1), number)
        elif fence:
            if current.lang in ("bash", "python"):
                blocks.append(current)
            current, pending = None, ""
        elif current is not None and current.lang == "bash":
            pending += line.rstrip("\\") + (" " if line.endswith("\\") else "")
            if not line.endswith("\\"):
                if pending.strip() and not pending.strip().startswith("#"):
                    current.commands.append(pending.strip())
                pending = ""
        elif current is not None and current.lang == "python":
            current.commands = ["\n".join([*current.commands, line])] if current.commands else [line]
    return blocks


def _registry_download(name: str) -> str | None:
    """The reason a model name needs the network (its weights are downloaded and not cached), else None."""
    from stemflow.hub.cache import default_cache_dir, is_cached
    from stemflow.hub.registry import load_registry

    registry = load_registry()
    if not registry.has_model(name):
        return None
    entry = registry.get_model(name)
    if entry.source == "url" and not is_cached(entry, default_cache_dir(os.environ)):
        return f"downloads the weights of {entry.name} (network)"
    return None


def skip_reason(command: str) -> str | None:
    """Why ``command`` is not run here, or ``None``."""
    import torch

    for pattern, reason in SKIPS:
        if re.search(pattern, command):
            return reason
    if re.search(r"https?://|gs://", command):
        return "remote URL (network)"
    tokens = shlex.split(command, comments=True) if not command.startswith(("from ", "import ")) else []
    for option, value in zip(tokens, tokens[1:]):
        if option == "--model" or (option == "fetch" and "models" in tokens):
            reason = _registry_download(value)
            if reason:
                return reason
    gpus = re.search(r"--gpus (\d+)", command)
    if (gpus and int(gpus.group(1)) > 0 or re.search(r"--device (cuda|mps)", command)) and not torch.cuda.is_available():
        return "needs a GPU"
    return None


def write_song(path: Path, seed: int, seconds: float = 2.0) -> None:
    """A short stereo 'song' (harmonics, a beat and some air above 11 kHz) in the format of its extension."""
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    tone = sum(0.08 * np.sin(2 * np.pi * f * (1 + 0.05 * seed) * t) for f in (196, 392, 587, 1175))
    beat = 0.2 * np.exp(-30 * (t % 0.5)) * rng.standard_normal(t.size)
    air = 0.02 * np.sin(2 * np.pi * 13000 * t)
    audio = np.stack([tone + beat + air, 0.9 * tone + beat + air], axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    if audio_suffix(path.name) in (".wav", ".flac", ".ogg", ".aiff"):
        sf.write(path, audio, RATE)
    else:
        from stemflow.audio.encode import save_audio

        save_audio(path, audio.T, RATE)


def write_manifest(path: Path, work: Path) -> None:
    """A catalogue manifest with a ``url`` and an ``artist`` column, over three generated songs."""
    songs = [work / "catalogue-audio" / f"{artist}-{i}.wav" for i, artist in enumerate(("ann", "ann", "bob"))]
    for i, song in enumerate(songs):
        write_song(song, 10 + i)
    rows = {"url": [str(s) for s in songs], "artist": ["ann", "ann", "bob"]}
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(rows), path)
    else:
        path.write_text("url,artist\n" + "".join(f"{u},{a}\n" for u, a in zip(rows["url"], rows["artist"])))


def prepare(command: str, work: Path, s3: dict[str, str]) -> None:
    """Make what ``command`` names: audio files, input folders, manifests, S3 buckets."""
    tokens = re.findall(r"[\w./:-]+", command) if "\n" in command else shlex.split(command, comments=True)
    outputs = {value for option, value in zip(tokens, tokens[1:]) if option in ("-o", "--output-dir", "--output")}
    for i, token in enumerate(tokens):
        path = work / token
        if token.startswith("s3://"):
            _make_bucket(token.split("/")[2], s3)
        elif token in outputs or token.startswith("-") or path.exists() or "{" in token:
            continue
        elif token.endswith((".csv", ".parquet", ".jsonl")):
            write_manifest(path, work)
        elif audio_suffix(token) is not None and "/" not in token.rstrip("/"):
            write_song(path, i)
        elif token.endswith("/") and tokens[:2] == ["stemflow", "separate"]:
            for n in range(2):
                write_song(path / f"track {n + 1}.flac", 20 + n)


def _make_bucket(bucket: str, s3: dict[str, str]) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(key=s3["AWS_ACCESS_KEY_ID"], secret=s3["AWS_SECRET_ACCESS_KEY"],
                           client_kwargs={"endpoint_url": s3["AWS_ENDPOINT_URL"]})
    if not fs.exists(bucket):
        fs.mkdir(bucket)


@pytest.fixture(scope="module")
def s3_env(moto_server: str) -> dict[str, str]:
    """Environment pointing boto (and so s3fs) at the moto server."""
    return {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


def _env(work: Path, s3: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **s3, "HOME": str(work / "home"), "COLUMNS": "200", "PREFECT_HOME": str(work / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RAY_USAGE_STATS_ENABLED": "0",
           # the ephemeral Prefect server may take longer than its 20 s default to start on a loaded CI machine
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(REPO)}
    env.setdefault("STEMFLOW_CACHE", str(REPO / ".stemflow-cache"))
    return env


def _blocks() -> Iterator[pytest.ParameterSet]:
    for block in readme_blocks((REPO / "README.md").read_text(encoding="utf-8")):
        yield pytest.param(block, id=block.id)


def test_readme_blocks_are_found() -> None:
    blocks = readme_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    commands = [c for b in blocks if b.lang == "bash" for c in b.commands]
    assert any(c.startswith("stemflow separate song.flac -o stems/") for c in commands)
    assert any(b.lang == "python" and "separate_track" in b.commands[0] for b in blocks)
    assert all(not c.startswith("#") and not c.endswith("\\") for c in commands)


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.parametrize("block", list(_blocks()))
def test_readme_block_runs_as_written(block: Block, tmp_path: Path, s3_env: dict[str, str]) -> None:
    work = tmp_path / "user"
    (work / "home").mkdir(parents=True)
    skipped = {c: reason for c in block.commands if (reason := skip_reason(c))}
    runnable = [c for c in block.commands if c not in skipped]
    if not runnable:
        pytest.skip("; ".join(f"{c.split('#')[0].strip()[:60]}: {r}" for c, r in skipped.items()))
    failing = [known for c in runnable for prefix, known in KNOWN_FAILING.items() if c.startswith(prefix)]
    results = []
    for command in runnable:
        prepare(command, work, s3_env)
        if block.lang == "python":
            script = work / "readme_snippet.py"
            script.write_text(command)
            argv = [sys.executable, str(script)]
        else:
            argv = ["bash", "-c", command]
        done = subprocess.run(argv, cwd=work, env=_env(work, s3_env), capture_output=True, text=True, timeout=900)
        results.append((command, done))
        if done.returncode != 0:
            break
    bad = [(c, d) for c, d in results if d.returncode != 0 or "Traceback" in d.stderr]
    if failing:
        reason, expected = failing[0]
        if any(expected in d.stderr + d.stdout for _, d in bad):
            pytest.xfail(reason)
        pytest.fail(f"a KNOWN_FAILING command works now, or fails otherwise: update its entry ({reason})\n"
                    + "\n".join(f"$ {c}\nexit {d.returncode}\n{d.stderr[-3000:]}" for c, d in results))
    assert not bad, "\n\n".join(f"$ {c}\nexit {d.returncode}\n{d.stdout[-2000:]}\n{d.stderr[-4000:]}" for c, d in bad)
    for command, _ in results:
        tokens = shlex.split(command, comments=True) if block.lang == "bash" else []
        for option, value in zip(tokens, tokens[1:]):
            if option in ("-o", "--output-dir") and tokens[:2] == ["stemflow", "separate"]:
                assert any((work / value).rglob("*.*")), f"{command}: nothing written under {value}"
