"""End to end against a temporary Prefect server: create the Kubernetes work pool and
run ``prefect deploy --all --prefect-file infra/prefect/prefect.yaml`` exactly as
``infra/README.md`` says, then read back what the server stored and build a flow
run's job configuration with Prefect's own code. No Kubernetes, no network.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.prefect]

REPO = Path(__file__).resolve().parents[2]
PREFECT_DIR = REPO / "infra" / "prefect"
HEAD_ADDRESS = "http://stemflow-head-svc.stemflow.svc.cluster.local:8265"  # the Ray Jobs API


def prefect_cli(args: list[str], api_url: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RAY_USAGE_STATS_ENABLED": "0"}
    binary = Path(sys.executable).parent / "prefect"
    return subprocess.run([str(binary), "--no-prompt", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> dict[str, Any]:
    """Work pool and deployments created by the Prefect CLI against this module's server."""
    from prefect.client.orchestration import get_client

    home = tmp_path_factory.mktemp("prefect-home")
    api_url = prefect_api
    pool = prefect_cli(["work-pool", "create", "stemflow-k8s", "--type", "kubernetes",
                        "--base-job-template", str(PREFECT_DIR / "base-job-template.json")], api_url, home)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = prefect_cli(["deploy", "--all", "--prefect-file", "infra/prefect/prefect.yaml"], api_url, home)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
        work_pool = client.read_work_pool("stemflow-k8s")
    return {"deployments": deployments, "work_pool": work_pool}


def test_both_deployments_land_on_the_kubernetes_pool(deployed: dict[str, Any]) -> None:
    deployments = deployed["deployments"]
    assert set(deployments) == {"nightly-k8s", "reprocess-k8s"}
    assert deployed["work_pool"].type == "kubernetes"
    for item in deployments.values():
        assert item.work_pool_name == "stemflow-k8s"
        assert item.job_variables["env"]["RAY_ADDRESS"] == HEAD_ADDRESS
        assert item.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/stemflow"}}]
        # submitted through the Ray Jobs API: GPU actors and their CPUs, no Ray Client address
        assert (item.parameters["gpus"], item.parameters["cpus_per_worker"]) == (32, 7)
        assert "ray_address" not in item.parameters and "gpus_per_worker" not in item.parameters
        assert item.global_concurrency_limit is not None and item.global_concurrency_limit.limit == 1
        assert item.concurrency_options.collision_strategy.value == "CANCEL_NEW"


def test_nightly_is_scheduled_and_reprocess_is_not(deployed: dict[str, Any]) -> None:
    nightly, reprocess = deployed["deployments"]["nightly-k8s"], deployed["deployments"]["reprocess-k8s"]
    (schedule,) = nightly.schedules
    assert schedule.active and schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC"
    assert reprocess.schedules == []


def test_flow_run_job_built_by_prefect_is_a_valid_kubernetes_job(deployed: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    from prefect.workers.base import BaseJobConfiguration

    class KubernetesJobConfiguration(BaseJobConfiguration):
        """The fields of the Kubernetes worker's configuration that this template fills."""

        namespace: str
        job_manifest: dict[str, Any]
        pod_watch_timeout_seconds: int
        stream_output: bool

    template = deployed["work_pool"].base_job_template
    variables = deployed["deployments"]["nightly-k8s"].job_variables

    async def build() -> KubernetesJobConfiguration:
        return await KubernetesJobConfiguration.from_template_and_values(template, variables, client=object())

    configuration = asyncio.run(build())
    assert configuration.env["RAY_ADDRESS"] == HEAD_ADDRESS and configuration.env["STEMFLOW_CACHE"] == "/cache"
    manifest = configuration.job_manifest
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == variables["image"]
    # What the Kubernetes worker does next: env as name/value pairs, the flow-run
    # command as args, and its two legacy pod-spec keys that the API server drops.
    container["env"] = [{"name": k, "value": v} for k, v in configuration.env.items()]
    container["args"] = ["prefect", "flow-run", "execute"]
    for key in ("parallelism", "completions"):
        pod.pop(key)
    manifest["metadata"]["generateName"] = "nightly-"
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "weights", "mountPath": "/cache"} in container["volumeMounts"]
