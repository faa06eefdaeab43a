"""Runs go to a cluster through the Ray Jobs API: the submission command and a real job server.

The job server is part of Ray's dashboard, which needs ``ray[default]`` (the
images install it). Where those packages are missing the round trip is
skipped with the reason; the command line is checked everywhere.
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest

pytestmark = pytest.mark.ray


def test_the_submitted_command_is_stemflow_run_with_every_value_quoted() -> None:
    pytest.importorskip("prefect")
    from pipelines.submit import run_command

    command = run_command("s3://cat/a b", "s3://out", model="mel-roformer-kj-vocals", gpus=32, shard_size=200,
                          cpus_per_worker=7, allow_sources=["s3://archive/"])
    assert shlex.split(command) == ["stemflow", "run", "s3://cat/a b", "s3://out", "--model",
                                    "mel-roformer-kj-vocals", "--gpus", "32", "--shard-size", "200",
                                    "--cpus-per-worker", "7", "--allow-source", "s3://archive/"]
    hostile = run_command("s3://cat/x; rm -rf /", "s3://out", model="m", gpus=1, shard_size=1)
    assert shlex.split(hostile)[2] == "s3://cat/x; rm -rf /"


@pytest.fixture
def job_server() -> Any:
    import ray
    from ray._private.utils import get_dashboard_dependency_error

    missing = get_dashboard_dependency_error()
    if missing:
        pytest.skip(f"the Ray job server needs ray[default]: {missing}")
    ray.shutdown()
    context = ray.init(num_cpus=1, include_dashboard=True, dashboard_host="127.0.0.1", configure_logging=False)
    yield f"http://{context.dashboard_url}"
    ray.shutdown()


@pytest.mark.slow
def test_a_job_is_submitted_followed_and_not_submitted_twice(job_server: str) -> None:
    from stemflow.stage.ray_adapter import submit_job, wait_for_job

    job_id = submit_job(job_server, "python -c \"print('stemflow job ran')\"", submission_id="stemflow-test-1")
    polls: list[str] = []
    status, logs = wait_for_job(job_server, job_id, poll_s=0.5, on_poll=polls.append)
    assert status == "SUCCEEDED" and "stemflow job ran" in logs and polls
    with pytest.raises(Exception, match="already exists"):
        submit_job(job_server, "echo again", submission_id="stemflow-test-1")
