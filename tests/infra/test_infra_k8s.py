"""Validate the Kubernetes manifests under ``infra/k8s/`` offline.

* Built-in kinds (Namespace, ServiceAccount, PVC, Job) against the official
  Kubernetes OpenAPI schemas (``kubernetes-validate``, strict: unknown fields fail).
* RayCluster / RayJob against KubeRay's ``ray.io/v1`` CRD schema, extracted into
  ``infra/k8s/schemas/`` (jsonschema, made strict like ``kubectl --validate=strict``);
  their embedded pod templates against the official ``PodTemplate`` schema.
* Policy: GPU limits, autoscaling bounds, the head taking no work, the weights
  PVC, non-root pods that meet the "restricted" Pod Security level, no secrets,
  and the files agreeing with each other (kustomization, images, names).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
SCHEMAS = K8S / "schemas"
NAMESPACE = "stemflow"
CACHE_PATH = "/cache"
BUILTIN_FILES = ("namespace.yaml", "serviceaccount.yaml", "pvc-weights.yaml", "weights-prefetch-job.yaml")
CREATED_BY_HAND = {"rayjob.yaml", "weights-prefetch-job.yaml"}
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                           "persistentVolumeClaim", "projected", "secret"}
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)

kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")
# The oldest Kubernetes still common on managed clusters, and the newest the installed schemas know.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / name).read_text())


def strict_schema(node: Any) -> Any:
    """A copy where objects with ``properties`` reject unknown fields, as the API server does."""
    if isinstance(node, dict):
        out = {k: strict_schema(v) for k, v in node.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict_schema(v) for v in node]
    return node


def crd_validator(kind: str) -> Any:
    schema = json.loads((SCHEMAS / f"{kind}.ray.io_v1.json").read_text())
    schema.pop("x-stemflow-source")
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return validator_cls(strict_schema(schema))


def crd_errors(kind: str, manifest: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in crd_validator(kind).iter_errors(manifest)]


def pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, PodTemplateSpec) of every pod stemflow creates."""
    cluster = load("raycluster.yaml")
    job = load("rayjob.yaml")
    for where, spec in (("raycluster", cluster["spec"]), ("rayjob", job["spec"]["rayClusterSpec"])):
        yield f"{where}/head", spec["headGroupSpec"]["template"]
        for group in spec["workerGroupSpecs"]:
            yield f"{where}/{group['groupName']}", group["template"]
    yield "rayjob/submitter", job["spec"]["submitterPodTemplate"]
    yield "weights-prefetch-job", load("weights-prefetch-job.yaml")["spec"]["template"]


POD_TEMPLATES = dict(pod_templates())


def as_pod_template(template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t", "namespace": NAMESPACE},
            "template": template}


def all_containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


# ------------------------------------------------------------- schemas ---

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", BUILTIN_FILES)
def test_builtin_kinds_match_the_official_schema(name: str, version: str) -> None:
    kubernetes_validate.validate(load(name), version, strict=True)


@pytest.mark.parametrize("where", sorted(POD_TEMPLATES))
def test_pod_templates_match_the_official_schema(where: str) -> None:
    kubernetes_validate.validate(as_pod_template(POD_TEMPLATES[where]), KUBERNETES_VERSIONS[-1], strict=True)


def test_official_schema_rejects_a_misspelt_field() -> None:
    template = copy.deepcopy(POD_TEMPLATES["raycluster/gpu"])
    template["spec"]["containers"][0]["resource"] = template["spec"]["containers"][0].pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(as_pod_template(template), KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("kind,name", [("raycluster", "raycluster.yaml"), ("rayjob", "rayjob.yaml")])
def test_kuberay_resources_match_the_crd_schema(kind: str, name: str) -> None:
    manifest = load(name)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert crd_errors(kind, manifest) == []


def test_crd_schema_rejects_mistakes() -> None:
    cluster = load("raycluster.yaml")
    misspelt = copy.deepcopy(cluster)
    misspelt["spec"]["workerGroupSpec"] = misspelt["spec"].pop("workerGroupSpecs")
    assert any("workerGroupSpec" in e for e in crd_errors("raycluster", misspelt))
    unquoted = copy.deepcopy(cluster)
    unquoted["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    assert crd_errors("raycluster", unquoted)
    no_bounds = copy.deepcopy(cluster)
    del no_bounds["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    assert any("maxReplicas" in e for e in crd_errors("raycluster", no_bounds))
    job = load("rayjob.yaml")
    job["spec"]["shutdownAfterJobFinishes"] = "yes"
    assert crd_errors("rayjob", job)


def test_crd_schemas_record_their_source() -> None:
    for kind in ("raycluster", "rayjob"):
        source = json.loads((SCHEMAS / f"{kind}.ray.io_v1.json").read_text())["x-stemflow-source"]
        assert source["version"] == "v1" and source["crd"] == f"{kind}s.ray.io"
        assert "ray-project/kuberay@" in source["from"]


# -------------------------------------------------------------- RayCluster ---

def test_head_takes_no_work_and_no_gpu() -> None:
    head = load("raycluster.yaml")["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    for container in head["template"]["spec"]["containers"]:
        resources = container.get("resources", {})
        assert "nvidia.com/gpu" not in {**resources.get("requests", {}), **resources.get("limits", {})}
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports["client"] == 10001 and ports["dashboard"] == 8265 and ports["gcs-server"] == 6379


def test_gpu_workers_one_gpu_each_with_autoscaling_bounds() -> None:
    spec = load("raycluster.yaml")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu = groups["gpu"]
    assert 0 <= gpu["minReplicas"] <= gpu.get("replicas", gpu["minReplicas"]) <= gpu["maxReplicas"]
    assert gpu["maxReplicas"] >= 1
    pod = gpu["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) == 1
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    assert pod["containers"][0]["image"] == "stemflow-cuda"


def test_head_is_fault_tolerant_and_gpu_workers_reach_32_on_gpu_nodes() -> None:
    """GCS fault tolerance with an external Redis (password from a Secret), GPU node selection, 32 GPUs."""
    for where, spec in (("raycluster", load("raycluster.yaml")["spec"]),
                        ("rayjob", load("rayjob.yaml")["spec"]["rayClusterSpec"])):
        ft = spec["gcsFaultToleranceOptions"]
        assert ft["redisAddress"].startswith("redis://"), where
        assert set(ft["redisPassword"]["valueFrom"]["secretKeyRef"]) == {"name", "key"}, where
        gpu = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")
        assert gpu["maxReplicas"] == 32, where
        pod = gpu["template"]["spec"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, where
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        assert int(env["RAY_gcs_rpc_server_reconnect_timeout_s"]) >= 300, where  # workers outlive a head restart
    broken = load("raycluster.yaml")
    broken["spec"]["gcsFaultToleranceOptions"]["backend"] = "etcd"
    assert crd_errors("raycluster", broken)


def test_rayjob_runs_once_on_the_same_cluster_spec_and_shuts_down() -> None:
    job = load("rayjob.yaml")["spec"]
    assert job["rayClusterSpec"] == load("raycluster.yaml")["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] > 0
    assert job["submissionMode"] == "K8sJobMode"
    entrypoint = job["entrypoint"].split()
    assert entrypoint[:2] == ["stemflow", "run"]
    assert all(u.startswith("s3://") for u in entrypoint[2:4])
    model = entrypoint[entrypoint.index("--model") + 1]
    registry = yaml.safe_load((REPO / "configs" / "models" / "registry.yaml").read_text())
    assert model in {m["name"] for m in registry["models"]}
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["STEMFLOW_CACHE"] == CACHE_PATH


# ---------------------------------------------------- weights cache volume ---

def test_weights_pvc_is_shared_and_mounted_at_the_cache_everywhere() -> None:
    pvc = load("pvc-weights.yaml")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    claim = pvc["metadata"]["name"]
    for where, template in POD_TEMPLATES.items():
        if where == "rayjob/submitter":
            continue  # only submits the job; the driver runs on the head
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        weights = [n for n, v in volumes.items() if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
        assert weights, where
        container = template["spec"]["containers"][0]
        assert {"name": weights[0], "mountPath": CACHE_PATH} in container["volumeMounts"], where
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("STEMFLOW_CACHE") == CACHE_PATH, where


def test_prefetch_job_fetches_registered_models() -> None:
    script = " ".join(load("weights-prefetch-job.yaml")["spec"]["template"]["spec"]["containers"][0]["args"])
    names = re.search(r"for name in ([^;]+);", script).group(1).split()
    registry = yaml.safe_load((REPO / "configs" / "models" / "registry.yaml").read_text())
    assert names and set(names) <= {m["name"] for m in registry["models"]}
    assert 'stemflow models fetch "$name"' in script


# ------------------------------------------------------------ security ---

@pytest.mark.parametrize("where", sorted(POD_TEMPLATES))
def test_pods_meet_the_restricted_pod_security_level(where: str) -> None:
    spec = POD_TEMPLATES[where]["spec"]
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert int(pod_security["runAsUser"]) == 10001
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["serviceAccountName"] == "stemflow"
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    for volume in spec.get("volumes", []):
        assert set(volume) - {"name"} <= RESTRICTED_VOLUME_TYPES, volume
    for container in all_containers(POD_TEMPLATES[where]):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert security["readOnlyRootFilesystem"] is True
        assert not security.get("privileged") and "runAsUser" not in security
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{where}: read-only root needs a writable /tmp"
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), (where, kind)


def test_only_the_head_gets_an_api_token() -> None:
    assert load("serviceaccount.yaml")["automountServiceAccountToken"] is False
    for where, template in POD_TEMPLATES.items():
        expected = True if where.endswith("/head") else None
        assert template["spec"].get("automountServiceAccountToken") is expected, where


def test_autoscaler_sidecar_is_unprivileged() -> None:
    security = load("raycluster.yaml")["spec"]["autoscalerOptions"]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["runAsNonRoot"] is True
    assert security["capabilities"]["drop"] == ["ALL"]


def walk_env(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("env"), list):
            yield from (e for e in node["env"] if isinstance(e, dict))
        for value in node.values():
            yield from walk_env(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_env(value)


def test_no_secrets_in_manifests() -> None:
    for path in sorted(K8S.glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        assert manifest.get("kind") != "Secret", path
        for entry in walk_env(manifest):
            if SECRET_NAME.search(entry["name"]):
                assert "value" not in entry, f"{path.name}: {entry['name']} must come from valueFrom or IRSA"
        text = path.read_text()
        assert "AWS_ACCESS_KEY_ID" not in text and "AWS_SECRET_ACCESS_KEY" not in text, path


def test_service_account_carries_the_cloud_identity() -> None:
    annotations = load("serviceaccount.yaml")["metadata"]["annotations"]
    role = annotations["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", role)


# ------------------------------------------------- files agree with each other ---

def test_kustomization_lists_every_long_lived_manifest() -> None:
    kustomization = load("kustomization.yaml")
    assert kustomization["namespace"] == NAMESPACE
    resources = set(kustomization["resources"])
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert resources == manifests - CREATED_BY_HAND
    assert all((K8S / r).exists() for r in resources)


def test_every_namespaced_resource_is_in_the_stemflow_namespace() -> None:
    for path in sorted(K8S.glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        if manifest["kind"] in ("Kustomization", "Namespace"):
            continue
        assert manifest["metadata"]["namespace"] == NAMESPACE, path
    assert load("namespace.yaml")["metadata"]["name"] == NAMESPACE


def test_every_image_is_rewritten_by_kustomize() -> None:
    names = {i["name"] for i in load("kustomization.yaml")["images"]}
    used = {c["image"] for t in POD_TEMPLATES.values() for c in all_containers(t)}
    assert used == names


def test_rayjob_entrypoint_options_exist_in_the_cli() -> None:
    """Every ``--option`` of the RayJob entrypoint is an option of ``stemflow run`` (once the command exists)."""
    typer_main = pytest.importorskip("typer.main")
    from stemflow.cli import app

    group = typer_main.get_command(app)
    if "run" not in getattr(group, "commands", {}):
        pytest.skip("`stemflow run` is not in the CLI yet")
    run = group.commands["run"]
    options = {opt for param in run.params for opt in param.opts}
    entrypoint = load("rayjob.yaml")["spec"]["entrypoint"].split()
    wanted = {token for token in entrypoint if token.startswith("--")}
    assert wanted <= options, wanted - options
    positionals = [p for p in run.params if not p.opts or not p.opts[0].startswith("-")]
    assert len(positionals) >= 2, "stemflow run CATALOGUE_URL OUTPUT_URL"
