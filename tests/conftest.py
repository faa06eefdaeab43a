"""Suite-wide settings: one torch thread in the test process.

The suite runs beside Ray actors, Prefect servers and CLI subprocesses on small
machines (CI has 2 cores); torch's default of one thread per core then
oversubscribes the CPU and tiny models run 10-30x slower. Benchmarks, not tests,
measure multi-threaded speed.
"""

import os

import torch

torch.set_num_threads(1)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
