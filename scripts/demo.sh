#!/usr/bin/env bash
# The main job on embedded defaults: set up the machine (scripts/setup.sh), build a
# small demo catalogue (real music from the MUSDB18 excerpt that the stempeg package
# ships, plus generated songs) in demo-output/catalogue, and run the nightly flow
# `separate_catalogue` over it (Prefect's ephemeral API, a local Ray, the best cached
# model or else the offline Spleeter 2-stem model) into demo-output/out.
# Extra arguments go to `python -m pipelines.demo` (e.g. --model NAME, --generated 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/python -m pipelines.demo "$@"
