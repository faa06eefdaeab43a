#!/usr/bin/env bash
# The test command: sets up the machine (scripts/setup.sh), then runs the whole
# test suite, slow tests included. Extra arguments go to pytest, e.g.
#   scripts/test.sh -m "not slow"      # the quick subset
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_HOME="${PREFECT_HOME:-$(mktemp -d)}"
export RAY_USAGE_STATS_ENABLED=0
# a loaded 2-core CI machine can take minutes to start an ephemeral Prefect server
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-300}"
export STEMFLOW_CACHE="${STEMFLOW_CACHE:-$PWD/.stemflow-cache}"
exec .venv/bin/python -m pytest -q --timeout=900 "$@"
