"""aten operators per forward of every Roformer config, before and after a change: the kernel-launch proxy.

For each config in ``configs/models/`` (and the golden fixtures), one eager
``separate_chunks`` of a 1 s stereo chunk is counted operator by operator
(:class:`stemflow.models.op_count.OpCounter`, views included). The count does
not depend on the model width, so each model is built narrow (``dim`` 16,
``dim_head`` 8) and the whole run takes about a minute. ``before`` is the
``stemflow`` package of ``--before-rev`` (``git archive``), counted in its own
process with this tree's counter.

Usage::

    .venv/bin/python benchmarks/bench_ops.py             # -> benchmarks/results/ops.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "roformer"
sys.path.insert(0, str(HERE))
from bench_efficiency import BEFORE_REV, extract_tree  # noqa: E402

_CHILD = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("op_count", sys.argv[1])
op_count = importlib.util.module_from_spec(spec); spec.loader.exec_module(op_count)
import stemflow
counts = {path: sum(op_count.count_config_ops(path).values()) for path in sys.argv[2:]}
print(json.dumps({"stemflow": stemflow.__file__, "counts": counts}))
"""


def count_tree(tree: Path, configs: list[Path]) -> dict[str, object]:
    """Operator counts of ``configs`` with the ``stemflow`` of ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-c", _CHILD, str(ROOT / "stemflow/models/op_count.py"), *map(str, configs)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=tree)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-rev", default=BEFORE_REV)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ops.json")
    args = parser.parse_args(argv)
    configs = sorted(p for p in (ROOT / "configs/models").glob("*.yaml")
                     if p.name not in ("registry.yaml", "spleeter_2stems.yaml"))
    configs += sorted(FIXTURES.glob("*/config.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        before = count_tree(extract_tree(args.before_rev, Path(tmp)), configs)
        after = count_tree(ROOT, configs)
    rows = []
    for path in configs:
        name = path.name if path.parent.name == "models" else f"fixture {path.parent.name}"
        b, a = before["counts"][str(path)], after["counts"][str(path)]
        rows.append({"config": name, "before": b, "after": a, "ratio": b / a})
        print(f"{name:52s} {b:6d} -> {a:5d} ops per 1 s forward ({b / a:.1f}x fewer)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"before_rev": args.before_rev, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
