#!/usr/bin/env bash
# Create the separate virtualenv holding the peer (audio-separator) for bench_peer.py.
#
# torch is installed first and pinned through a constraints file, so that
# audio-separator's dependencies cannot replace it (by default pip would pull a
# multi-GB CUDA build). Usage:
#
#   bash benchmarks/peer_setup.sh            # creates benchmarks/.peer-venv
#   PEER_VENV=/some/dir bash benchmarks/peer_setup.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${PEER_VENV:-$here/.peer-venv}"
torch_version="${TORCH_VERSION:-2.13.0}"
python="${PYTHON:-python3}"

"$python" -m venv "$venv"
constraints="$venv/constraints.txt"
printf 'torch==%s\n' "$torch_version" > "$constraints"

"$venv/bin/pip" install --upgrade pip >/dev/null
# The CPU wheel: from pip's configured sources first (e.g. a local find-links
# wheel directory), else from the PyTorch CPU index.
"$venv/bin/pip" install "torch==$torch_version" --only-binary torch \
  || "$venv/bin/pip" install "torch==$torch_version" --index-url https://download.pytorch.org/whl/cpu
PIP_CONSTRAINT="$constraints" "$venv/bin/pip" install "audio-separator[cpu]"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
import torch
print("peer venv ready: torch", torch.__version__, "audio-separator", md.version("audio-separator"))
PY
