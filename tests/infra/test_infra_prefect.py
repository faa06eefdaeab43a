"""Check the Prefect configuration under ``infra/prefect/`` offline.

* The Kubernetes work pool's base job template passes Prefect's own validation,
  carries every path the Kubernetes worker requires, and, rendered the way a
  worker renders it for the nightly deployment, is a valid ``batch/v1`` Job
  (official schema) whose pod is non-root and points ``RAY_ADDRESS`` at the
  KubeRay head service of ``infra/k8s/raycluster.yaml``.
* ``infra/prefect/prefect.yaml`` parses as a Prefect project file; its
  entrypoints exist and its parameters are arguments of the flows.
* The worker's Helm values poll the same work pool.
"""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PREFECT_DIR = REPO / "infra" / "prefect"
K8S = REPO / "infra" / "k8s"
WORK_POOL = "stemflow-k8s"

# Paths the Kubernetes worker (prefect-kubernetes 0.8, ``_get_base_job_manifest``)
# requires in a job manifest; it refuses a template lacking any of them.
# ``parallelism``/``completions`` sit in the pod spec there (and in its default
# template); the worker sends them and the API server drops them.
WORKER_REQUIRED_PATHS = (
    ("apiVersion",), ("kind",), ("metadata", "annotations"), ("metadata", "labels"),
    ("spec", "template", "spec", "parallelism"), ("spec", "template", "spec", "completions"),
    ("spec", "template", "spec", "restartPolicy"), ("spec", "template", "spec", "containers", 0, "name"),
)
WORKER_EXTRA_POD_KEYS = ("parallelism", "completions")


def load_template() -> dict[str, Any]:
    return json.loads((PREFECT_DIR / "base-job-template.json").read_text())


def load_project() -> dict[str, Any]:
    return yaml.safe_load((PREFECT_DIR / "prefect.yaml").read_text())


def deployment(name: str) -> dict[str, Any]:
    return next(d for d in load_project()["deployments"] if d["name"] == name)


def head_service_address() -> str:
    cluster = yaml.safe_load((K8S / "raycluster.yaml").read_text())
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    return f"http://{name}-head-svc.{namespace}.svc.cluster.local:8265"  # the Ray Jobs API


def kustomized_image(placeholder: str) -> str:
    images = yaml.safe_load((K8S / "kustomization.yaml").read_text())["images"]
    image = next(i for i in images if i["name"] == placeholder)
    return f"{image['newName']}:{image['newTag']}"


def render(template: dict[str, Any], job_variables: dict[str, Any]) -> dict[str, Any]:
    """The job configuration a worker builds for a flow run, without a Prefect API.

    Mirrors ``BaseJobConfiguration.from_template_and_values``: variable defaults,
    then the deployment's job variables (``env`` merged key by key), substituted
    with Prefect's own ``apply_values``; then what the Kubernetes worker does to
    the manifest (env dict -> list of name/value, the flow-run command as args).
    """
    templating = pytest.importorskip("prefect.utilities.templating")
    properties = template["variables"]["properties"]
    values = {k: v["default"] for k, v in properties.items() if v.get("default") is not None}
    for key, value in job_variables.items():
        if key == "env":
            values["env"] = {**values.get("env", {}), **value}
        else:
            values[key] = value
    values.setdefault("name", "nightly-flow-run")
    configuration = templating.apply_values(copy.deepcopy(template["job_configuration"]), values)
    container = configuration["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": k, "value": v} for k, v in configuration["env"].items()]
    container["args"] = ["prefect", "flow-run", "execute"]
    return configuration


# ----------------------------------------------------- base job template ---

def test_template_passes_prefects_own_validation() -> None:
    actions = pytest.importorskip("prefect.server.schemas.actions")
    template = load_template()
    assert actions.validate_base_job_template(template) == template
    pool = actions.WorkPoolCreate(name=WORK_POOL, type="kubernetes", base_job_template=template)
    assert pool.base_job_template["job_configuration"]["job_manifest"]["kind"] == "Job"


def test_prefect_validation_catches_an_undeclared_variable() -> None:
    actions = pytest.importorskip("prefect.server.schemas.actions")
    template = load_template()
    template["job_configuration"]["namespace"] = "{{ not_declared }}"
    with pytest.raises(ValueError, match="not_declared"):
        actions.validate_base_job_template(template)


def test_template_has_what_the_kubernetes_worker_requires() -> None:
    template = load_template()
    configuration = template["job_configuration"]
    for key in ("command", "env", "labels", "name", "namespace", "job_manifest", "cluster_config",
                "job_watch_timeout_seconds", "pod_watch_timeout_seconds", "stream_output"):
        assert key in configuration, key
    manifest = configuration["job_manifest"]
    for path in WORKER_REQUIRED_PATHS:
        node: Any = manifest
        for step in path:
            node = node[step]
    assert manifest["spec"]["template"]["spec"]["containers"][0]["name"] == "prefect-job"
    assert manifest["spec"]["template"]["spec"]["containers"][0]["args"] == "{{ command }}"


def test_rendered_nightly_job_is_a_valid_kubernetes_job() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    configuration = render(load_template(), deployment("nightly-k8s")["work_pool"]["job_variables"])
    manifest = copy.deepcopy(configuration["job_manifest"])
    for key in WORKER_EXTRA_POD_KEYS:
        manifest["spec"]["template"]["spec"].pop(key)
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
    assert manifest["metadata"]["namespace"] == "stemflow"
    assert manifest["metadata"]["generateName"] == "nightly-flow-run-"


def test_rendered_pod_reaches_the_ray_cluster_as_non_root_with_the_cache() -> None:
    configuration = render(load_template(), deployment("nightly-k8s")["work_pool"]["job_variables"])
    pod = configuration["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RAY_ADDRESS"] == head_service_address()
    assert env["STEMFLOW_CACHE"] == "/cache"
    assert container["image"] == kustomized_image("stemflow-cpu")
    assert pod["serviceAccountName"] == "stemflow"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    pvc = yaml.safe_load((K8S / "pvc-weights.yaml").read_text())["metadata"]["name"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"weights": pvc}
    assert {"name": "weights", "mountPath": "/cache"} in container["volumeMounts"]


def test_deployment_env_overrides_one_key_and_keeps_the_rest() -> None:
    configuration = render(load_template(), {"env": {"RAY_ADDRESS": "http://elsewhere:8265"}})
    env = {e["name"]: e["value"] for e in configuration["job_manifest"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RAY_ADDRESS"] == "http://elsewhere:8265"
    assert env["STEMFLOW_CACHE"] == "/cache"


# ------------------------------------------------------ deployments file ---

def flow_parameters(entrypoint: str) -> list[str]:
    """Argument names of the flow function named by ``path.py:function`` (read with ast, not imported)."""
    path, _, function = entrypoint.partition(":")
    tree = ast.parse((REPO / path).read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
    return [a.arg for a in node.args.args + node.args.kwonlyargs]


def test_project_file_parses_as_prefect_reads_it() -> None:
    models = pytest.importorskip("prefect.cli.deploy._models")
    project = models.PrefectYamlModel.model_validate(load_project())
    assert {d.name for d in project.deployments} == {"nightly-k8s", "reprocess-k8s"}
    for item in project.deployments:
        assert item.work_pool is not None and item.work_pool.name == WORK_POOL
        assert item.work_pool.job_variables["image"] == kustomized_image("stemflow-cpu")
        assert item.work_pool.job_variables["env"]["RAY_ADDRESS"] == head_service_address()


def test_deployments_submit_runs_through_the_ray_jobs_api_with_32_gpus() -> None:
    """The Kubernetes deployments submit ``stemflow run`` as a Ray job (never a Ray Client driver)."""
    cluster = yaml.safe_load((K8S / "raycluster.yaml").read_text())["spec"]
    gpu_group = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu")
    registry = yaml.safe_load((REPO / "configs" / "models" / "registry.yaml").read_text())
    for item in load_project()["deployments"]:
        assert item["entrypoint"] == "pipelines/submit.py:submit_catalogue"
        arguments = flow_parameters(item["entrypoint"])
        assert set(item["parameters"]) <= set(arguments), set(item["parameters"]) - set(arguments)
        assert 1 <= item["parameters"]["gpus"] <= gpu_group["maxReplicas"] == 32
        assert item["parameters"]["model"] in {m["name"] for m in registry["models"]}
        limits = gpu_group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert item["parameters"]["cpus_per_worker"] < int(limits["cpu"])  # one CPU left to the pod's raylet
        assert item["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
        assert "ray://" not in json.dumps(item)


def test_nightly_schedule_and_code_location() -> None:
    schedules = pytest.importorskip("prefect.client.schemas.schedules")
    nightly = deployment("nightly-k8s")
    (schedule,) = nightly["schedules"]
    cron = schedules.CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert cron.cron == "0 2 * * *"
    pull = load_project()["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"]
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile.cpu").read_text()
    assert f"WORKDIR {pull}" in dockerfile and f"STEMFLOW_REPO={pull}" in dockerfile


def test_worker_values_poll_the_same_pool() -> None:
    values = yaml.safe_load((PREFECT_DIR / "worker-values.yaml").read_text())["worker"]
    assert values["config"]["workPool"] == WORK_POOL and values["config"]["type"] == "kubernetes"
    assert values["config"]["jobNamespace"] == load_template()["variables"]["properties"]["namespace"]["default"]
    assert values["image"]["prefectTag"].startswith("3.8.")
    assert values["apiConfig"] == "selfHostedServer" and values["selfHostedServerApiConfig"]["apiUrl"].endswith("/api")
