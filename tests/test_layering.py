"""The library layer never imports Ray or Prefect (house style, DESIGN.md layers)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import stemflow

ORCHESTRATION_MODULES = {"stemflow.stage.ray_adapter", "stemflow.cli", "stemflow.__main__"}


def test_library_modules_import_neither_ray_nor_prefect() -> None:
    names = sorted(
        m.name
        for m in pkgutil.walk_packages(stemflow.__path__, prefix="stemflow.")
        if m.name not in ORCHESTRATION_MODULES
    )
    assert "stemflow.models.config" in names
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'prefect'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"library modules pulled in: {out.stdout.strip()}"
