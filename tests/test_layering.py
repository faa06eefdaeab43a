"""The layers of ``../shared/DESIGN.md`` hold: imports point down, Ray and Prefect stay in their places.

- ``stemflow.stage.ray_adapter`` is the only module that imports :mod:`ray`;
  ``pipelines/`` is the only place that imports :mod:`prefect`; the CLI imports
  ``pipelines`` lazily (inside its commands). Checked on the source (every
  ``import``, lazy ones included) and by importing the library in a fresh
  interpreter.
- Each subpackage leaves out what the layer table says it never imports,
  checked by importing all of its modules in a fresh interpreter and looking
  at ``sys.modules``.
"""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import stemflow

REPO = Path(__file__).resolve().parents[1]
RAY_MODULE = "stemflow.stage.ray_adapter"
PREFECT_PLACE = "pipelines"
ENTRY_POINTS = {"stemflow.cli", "stemflow.__main__"}

NEVER_IMPORTS: dict[str, tuple[str, ...]] = {
    "stemflow.models": ("fsspec", "ray", "prefect"),
    "stemflow.hub": ("ray", "prefect"),
    "stemflow.audio": ("torch", "stemflow.models", "ray", "prefect"),
    "stemflow.engine": ("ray", "prefect"),
    "stemflow.measures": ("ray", "prefect"),
    "stemflow.store": ("torch", "stemflow.models", "ray"),
    "stemflow.catalogue": ("torch", "ray", "prefect"),
    "stemflow.stage": ("prefect",),
    "stemflow.evaluation": ("ray", "prefect"),
    "stemflow.karaoke": ("ray", "prefect"),
    "stemflow.commandline": ("ray", "prefect", "pipelines"),  # the CLI's helpers; cli.py imports flows lazily
}
"""Subpackage -> top-level packages or package prefixes it never imports (DESIGN.md's layer table)."""


def _modules(package: str) -> list[str]:
    """``package`` and every module below it."""
    path = [str(REPO / package.replace(".", "/"))]
    return [package] + sorted(m.name for m in pkgutil.walk_packages(path, prefix=f"{package}."))


def _imported_after(names: list[str]) -> set[str]:
    """Every module in ``sys.modules`` of a fresh interpreter after importing ``names``."""
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return set(done.stdout.split())


@pytest.fixture(scope="module")
def imported() -> Mapping[str, set[str]]:
    """Subpackage (and ``"library"``, ``"cli"``) -> what importing all its modules imports, each in a
    fresh interpreter; run side by side, a few at a time."""
    groups = {package: _modules(package) for package in NEVER_IMPORTS}
    groups["library"] = [m for m in _modules("stemflow") if m not in ENTRY_POINTS | {RAY_MODULE}]
    groups["cli"] = sorted(ENTRY_POINTS)
    with ThreadPoolExecutor(max(2, os.cpu_count() or 1)) as pool:
        done = {key: pool.submit(_imported_after, names) for key, names in groups.items()}
    return {key: future.result() for key, future in done.items()}


def _hits(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f"{f}.") for f in forbidden))


def _imports_in_source(path: Path) -> set[str]:
    """Top-level package names of every ``import`` in ``path``, including those inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_subpackage_of_the_layer_table_exists() -> None:
    packages = {m.name for m in pkgutil.iter_modules(stemflow.__path__, prefix="stemflow.") if m.ispkg}
    assert packages == set(NEVER_IMPORTS), "a subpackage without a row in NEVER_IMPORTS (or a row without one)"


def test_library_modules_import_neither_ray_nor_prefect(imported: Mapping[str, set[str]]) -> None:
    assert {"stemflow.models.config", "stemflow.stage.worker"} <= imported["library"]
    bad = _hits(imported["library"], ("ray", "prefect", PREFECT_PLACE))
    assert bad == [], f"library modules pulled in: {bad}"
    assert "ray" in imported["stemflow.stage"], "the check must see the Ray adapter's import of ray"


def test_the_cli_imports_the_flows_lazily(imported: Mapping[str, set[str]]) -> None:
    bad = _hits(imported["cli"], ("ray", "prefect", PREFECT_PLACE))
    assert bad == [], f"importing the CLI pulled in: {bad}"


def test_only_the_ray_adapter_imports_ray_and_only_pipelines_import_prefect() -> None:
    sources = sorted((REPO / "stemflow").rglob("*.py")) + sorted((REPO / PREFECT_PLACE).rglob("*.py"))
    imports = {_module_name(path): _imports_in_source(path) for path in sources}
    assert {name for name, found in imports.items() if "ray" in found} == {RAY_MODULE}
    prefect = {name for name, found in imports.items() if "prefect" in found}
    assert prefect and all(name.split(".")[0] == PREFECT_PLACE for name in prefect), sorted(prefect)


@pytest.mark.parametrize("package", sorted(NEVER_IMPORTS))
def test_each_layer_leaves_out_what_the_design_says_it_never_imports(
    package: str, imported: Mapping[str, set[str]]
) -> None:
    assert len(_modules(package)) > 1, f"{package} has no modules"
    bad = _hits(imported[package], NEVER_IMPORTS[package])
    assert bad == [], f"{package} pulled in {bad}"
