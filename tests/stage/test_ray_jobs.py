"""Runs go to a cluster through the Ray Jobs API: the submission command, a real job server, the flow.

The job server is part of Ray's dashboard, which needs ``ray[default]`` (the
images install it). Where those packages are missing the round trips are
skipped with the reason; the command line is checked everywhere. The
``submit_catalogue`` flow is run against a real local job server: the job is a
real ``stemflow run`` that joins the cluster, and the flow follows it through
the run manifest to the end (and raises with the log's tail when it fails).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
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
    custom = run_command("s3://cat", "s3://out", model="s3://models/c.yaml", gpus=2, shard_size=5,
                         checkpoint="s3://models/w $x.ckpt")
    assert shlex.split(custom)[-2:] == ["--checkpoint", "s3://models/w $x.ckpt"]


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


@pytest.fixture(scope="module")
def prefect_api_url(prefect_api: str) -> str:
    return prefect_api


@pytest.mark.slow
@pytest.mark.prefect
def test_the_submit_flow_runs_stemflow_on_the_cluster_and_follows_it_to_the_end(
        job_server: str, prefect_api_url: str, tmp_path: Path, repo_root: Path, tiny_model: Any,
        catalogue_kit: Any) -> None:
    from prefect.artifacts import Artifact

    from pipelines.submit import submit_catalogue
    from stemflow.errors import StemflowError
    from stemflow.store.commit import committed_tracks, verify_track
    from stemflow.store.runs import read_run_manifest

    catalogue_kit.write(tmp_path / "cat", good=2, bad=False, seconds=0.5)
    out = str(tmp_path / "out")
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", "PYTHONPATH": str(repo_root),
           "PREFECT_API_URL": prefect_api_url, "PREFECT_HOME": str(tmp_path / "prefect"),
           "STEMFLOW_CACHE": str(tmp_path / "cache"), "RAY_USAGE_STATS_ENABLED": "0"}
    common = {"model": tiny_model.config, "checkpoint": tiny_model.checkpoint, "gpus": 0, "shard_size": 1,
              "cpus_per_worker": 1, "jobs_address": job_server, "runtime_env": {"env_vars": env}, "poll_s": 0.5}
    done = submit_catalogue(str(tmp_path / "cat"), out, **common)
    assert done["status"] == "SUCCEEDED" and done["job_id"].startswith("stemflow-")
    progress = done["progress"]
    assert progress["status"] == "succeeded" and (progress["done"], progress["ok"], progress["planned"]) == (2, 2, 2)
    manifest = read_run_manifest(out, progress["run_id"])
    assert manifest.inputs["flow"] == "separate-catalogue" and manifest.counts["ok"] == 2
    committed = sorted(committed_tracks(out, manifest.inputs["model_id"]))
    assert len(committed) == 2 and all(verify_track(out, manifest.inputs["model_id"], t) for t in committed)
    assert Artifact.get("stemflow-submitted-run-progress").data == 100.0

    with pytest.raises(StemflowError, match=r"ended FAILED(.|\n)*cannot-be-here"):
        submit_catalogue(str(tmp_path / "cannot-be-here"), str(tmp_path / "out2"), **common)


def test_submission_waits_for_a_job_agent_that_is_not_up_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's "No available agent" (a fresh or loaded head) is retried; any other error is raised at once."""
    import ray.job_submission

    from stemflow.stage import ray_adapter

    answers: list[Any] = []

    class Head:  # answers as a head whose job agent starts late
        def __init__(self, address: str) -> None:
            self.address = address

        def submit_job(self, **kwargs: Any) -> str:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", Head)
    monkeypatch.setattr(ray_adapter.time, "sleep", lambda s: None)
    not_up = RuntimeError("Request failed with status code 500: No available agent to submit job, please try again "
                          "later..")
    answers[:] = [not_up, not_up, "raysubmit_1"]
    assert ray_adapter.submit_job("http://head:8265", "echo") == "raysubmit_1" and answers == []
    answers[:] = [RuntimeError("Request failed with status code 400: job already exists"), "unused"]
    with pytest.raises(RuntimeError, match="already exists"):
        ray_adapter.submit_job("http://head:8265", "echo")
    answers[:] = [not_up, "unused"]
    with pytest.raises(RuntimeError, match="No available agent"):
        ray_adapter.submit_job("http://head:8265", "echo", agent_wait_s=-1)
