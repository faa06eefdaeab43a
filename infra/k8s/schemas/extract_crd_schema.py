"""Extract the validation schema of one KubeRay CRD version into a small JSON file.

Usage (from the repository root, with a KubeRay CRD file at hand)::

    python infra/k8s/schemas/extract_crd_schema.py ray.io_rayclusters.yaml v1 \
        infra/k8s/schemas/raycluster.ray.io_v1.json

The CRD's ``openAPIV3Schema`` is kept as it is (a schema is data), with two
reductions that keep the file small and the validation honest:

* ``status`` is dropped: the controller writes it, manifests never do.
* Every embedded ``PodTemplateSpec`` (an object whose ``spec`` has ``containers``)
  becomes ``{"type": "object", "x-kubernetes-preserve-unknown-fields": true}``.
  ``tests/test_infra.py`` validates those pod templates against the official
  Kubernetes ``PodTemplate`` schema instead (kubernetes-validate), which is
  stricter than the copy inside the CRD.

The provenance (source file, commit) is recorded under ``x-stemflow-source``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

POD_TEMPLATE_STUB: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "description": "PodTemplateSpec; validated against the Kubernetes PodTemplate schema separately.",
}


def is_pod_template(node: Any) -> bool:
    """True for an OpenAPI node describing a PodTemplateSpec."""
    if not isinstance(node, dict):
        return False
    spec = node.get("properties", {}).get("spec", {})
    return "metadata" in node.get("properties", {}) and "containers" in spec.get("properties", {})


def prune(node: Any) -> Any:
    """A copy of ``node`` with every PodTemplateSpec replaced by a stub."""
    if isinstance(node, dict):
        if is_pod_template(node):
            return dict(POD_TEMPLATE_STUB)
        return {key: prune(value) for key, value in node.items()}
    if isinstance(node, list):
        return [prune(value) for value in node]
    return node


def extract(crd: dict[str, Any], version: str, source: str) -> dict[str, Any]:
    """The pruned ``openAPIV3Schema`` of ``version`` in ``crd``."""
    matches = [v for v in crd["spec"]["versions"] if v["name"] == version]
    if not matches:
        names = [v["name"] for v in crd["spec"]["versions"]]
        raise SystemExit(f"version {version!r} not in CRD (has {names})")
    schema = dict(matches[0]["schema"]["openAPIV3Schema"])
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k != "status"}
    pruned = prune(schema)
    pruned["x-stemflow-source"] = {
        "crd": crd["metadata"]["name"],
        "version": version,
        "from": source,
    }
    return pruned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd_yaml", type=Path)
    parser.add_argument("version")
    parser.add_argument("output_json", type=Path)
    parser.add_argument("--source", default="", help="provenance note, e.g. repo@commit:path")
    args = parser.parse_args()
    crd = yaml.safe_load(args.crd_yaml.read_text())
    schema = extract(crd, args.version, args.source or str(args.crd_yaml))
    args.output_json.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
