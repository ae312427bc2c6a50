"""The cluster definitions, checked as data (no docker, kubectl nor cluster needed).

``ray_cluster.yaml`` (Ray's autoscaler, also through Ray's own validator), ``infra/Dockerfile``
and ``infra/requirements.txt`` against ``pyproject.toml``, the KubeRay manifests under
``infra/kuberay/`` (RayJob, the nightly CronJob, their RBAC and kustomization), and
``infra/nightly.sh``'s handling of Ray's token.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
KUBERAY = INFRA / "kuberay"
CLUSTER_YAML = ROOT / "ray_cluster.yaml"
DOCKERFILE = INFRA / "Dockerfile"

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# the image runs the job: the base (query) install plus the `job` extra
DEPENDENCIES: list[str] = PROJECT["dependencies"] + PROJECT["optional-dependencies"]["job"]


def _pin(name: str) -> str:
    """The ``==`` version pyproject.toml pins for distribution ``name``."""
    for dep in DEPENDENCIES:
        if re.split(r"[\[=<>!~ ;]", dep, maxsplit=1)[0].lower() == name:
            return dep.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


RAY_VERSION = _pin("ray")
MMX_VERSION = PROJECT["version"]
PY_TAG = "py3" + re.search(r">=\s*3\.(\d+)", PROJECT["requires-python"]).group(1)  # py311
RAY_BASE = {kind: f"rayproject/ray:{RAY_VERSION}-{PY_TAG}-{kind}" for kind in ("cpu", "gpu")}
# mmx's image tag: mmx's version, Ray's and Python's, and the torch build.
MMX_TAG = {kind: f"{MMX_VERSION}-ray{RAY_VERSION}-{PY_TAG}-{kind}" for kind in ("cpu", "gpu")}

YAML_FILES = sorted({*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml"), CLUSTER_YAML})
DAY_S = 24 * 3600


def _load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _docs(kind: str, api_version: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every document of ``kind`` in the YAML files under infra/."""
    found = []
    for path in YAML_FILES:
        for doc in _load_all(path):
            if (
                isinstance(doc, dict) and doc.get("kind") == kind
                and (api_version is None or doc.get("apiVersion") == api_version)
            ):
                found.append((path, doc))
    return found


def _one(kind: str) -> dict[str, Any]:
    docs = _docs(kind)
    assert len(docs) == 1, f"expected one {kind} under infra/, found {len(docs)}"
    return docs[0][1]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments out."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _app_dir() -> str:
    """The image's WORKDIR: where the repository's files are (infra/Dockerfile)."""
    workdirs = [rest for ins, rest in _dockerfile_instructions() if ins == "WORKDIR"]
    assert workdirs, "the Dockerfile sets no WORKDIR"
    return workdirs[-1].rstrip("/")


def _repo_path(image_path: str) -> Path:
    """A path of the image (absolute under the WORKDIR, or relative to it) in the repository."""
    app = _app_dir() + "/"
    rel = image_path.removeprefix(app)
    assert not rel.startswith("/"), f"{image_path} is outside the image's {app}"
    return ROOT / rel


def _image_tag(image: str) -> str:
    assert ":" in image.rsplit("/", 1)[-1], f"image {image!r} has no tag"
    return image.rsplit(":", 1)[1]


# --- every YAML file ----------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_parses(path: Path) -> None:
    docs = _load_all(path)
    assert docs, f"{path} holds no document"
    assert all(isinstance(d, dict) for d in docs), f"{path}: a document is not a mapping"


def test_the_yaml_files_include_the_cluster_definitions() -> None:
    names = {str(p.relative_to(ROOT)) for p in YAML_FILES}
    assert {"ray_cluster.yaml", "infra/production.yaml", "infra/kuberay/rayjob.yaml"} <= names


def test_production_config_is_a_valid_mmx_config() -> None:
    from mmx.config import build_config

    cfg = build_config(None, INFRA / "production.yaml")
    assert cfg.profile == "paper"
    assert cfg.mode == "incremental"


def test_no_secret_in_any_manifest() -> None:
    assert not _docs("Secret"), "no Secret belongs in the repository (IRSA, KubeRay's token)"
    for path in [*YAML_FILES, DOCKERFILE, INFRA / "nightly.sh"]:
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), f"{path}: an AWS access key id"
        for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            assert not re.search(rf"{name}\s*[=:]\s*\S", text), f"{path} sets {name}"
        assert not re.search(r"RAY_AUTH_TOKEN\s*[=:]\s*\w", text), f"{path} sets a Ray token"
        assert "RAY_AUTH_MODE=disabled" not in text, f"{path} turns Ray's auth off"


# --- ray_cluster.yaml (Ray's autoscaler) --------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    docs = _load_all(CLUSTER_YAML)
    assert len(docs) == 1
    return docs[0]


def test_cluster_has_the_fields_the_autoscaler_requires(cluster: dict[str, Any]) -> None:
    assert cluster["cluster_name"] == "mmx"
    assert cluster["provider"]["type"] == "aws"
    assert cluster["provider"]["region"]
    types = cluster["available_node_types"]
    assert set(types) == {"head", "cpu_decode", "gpu"}
    assert cluster["head_node_type"] in types
    for name, spec in types.items():
        assert isinstance(spec["node_config"], dict) and spec["node_config"], name
        assert isinstance(spec["resources"], dict), name
        if name != cluster["head_node_type"]:
            assert 0 <= spec["min_workers"] <= spec["max_workers"] <= cluster["max_workers"]
    assert types["head"]["resources"] == {"CPU": 0}  # the head only drives
    assert types["cpu_decode"]["node_config"]["InstanceType"] == "c6i.8xlarge"
    assert types["gpu"]["node_config"]["InstanceType"] == "g5.2xlarge"


def test_cluster_passes_rays_own_validation(cluster: dict[str, Any]) -> None:
    """What `ray up` runs first: defaults filled in, then the JSON schema and Ray's checks."""
    from ray.autoscaler._private.docker import validate_docker_config
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    validate_docker_config(prepared)


def test_cluster_runs_mmx_image_in_docker(cluster: dict[str, Any]) -> None:
    docker = cluster["docker"]
    assert docker["container_name"]
    image = docker["image"]
    assert image.rsplit(":", 1)[0].endswith("/mmx") and _image_tag(image) == MMX_TAG["cpu"]
    gpu_image = cluster["available_node_types"]["gpu"]["docker"]["worker_image"]
    assert gpu_image.rsplit(":", 1)[0] == image.rsplit(":", 1)[0]
    assert _image_tag(gpu_image) == MMX_TAG["gpu"]
    # mmx and its dependencies are in the image: no setup installs anything on the nodes.
    setup = " ".join(
        cluster.get("setup_commands", []) + cluster.get("head_setup_commands", [])
        + cluster.get("worker_setup_commands", [])
    )
    assert "pip" not in setup and "venv" not in setup


def _ray_start_args(commands: list[str]) -> list[list[str]]:
    """The argv of each `ray start` in ``commands`` (each ``;``/``&&`` part split)."""
    starts = []
    for command in commands:
        for part in re.split(r";|&&", command):
            argv = shlex.split(part)
            words = [w for w in argv if not re.fullmatch(r"[A-Z_]+=.*", w)]  # env prefixes
            if words[:2] == ["ray", "start"]:
                starts.append(argv)
    return starts


def test_dashboard_listens_on_loopback_only(cluster: dict[str, Any]) -> None:
    (head,) = _ray_start_args(cluster["head_start_ray_commands"])
    hosts = [a.split("=", 1)[1] for a in head if a.startswith("--dashboard-host=")]
    if "--dashboard-host" in head:
        hosts.append(head[head.index("--dashboard-host") + 1])
    assert hosts == ["127.0.0.1"] or hosts == ["localhost"], hosts
    assert "--head" in head


def test_cluster_uses_token_authentication(cluster: dict[str, Any]) -> None:
    options = " ".join(cluster["docker"]["run_options"])
    assert re.search(r"(--env|-e)[ =]RAY_AUTH_MODE=token\b", options)
    starts = _ray_start_args(
        cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
    )
    assert len(starts) == 2
    for argv in starts:
        assert "RAY_AUTH_MODE=token" in argv, argv
    # The token file the containers read is one that file_mounts brings to every node.
    path = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)", options).group(1)
    home = "/home/ray/"  # the home of Ray's images, where the autoscaler expands ~/
    mounted = [m.replace("~/", home).rstrip("/") for m in cluster["file_mounts"]]
    assert any(path == m or path.startswith(m + "/") for m in mounted), (path, mounted)


# --- infra/Dockerfile and infra/requirements.txt ------------------------------------------


def test_every_dependency_is_pinned() -> None:
    for dep in DEPENDENCIES:
        assert re.fullmatch(r"[A-Za-z0-9._-]+(\[[a-z,]+\])?==[0-9][0-9A-Za-z.]*", dep), dep


def test_requirements_are_exactly_the_pins_of_pyproject() -> None:
    lines = (INFRA / "requirements.txt").read_text().splitlines()
    pins = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    assert pins == DEPENDENCIES


def test_dockerfile_builds_on_rays_image_for_this_ray_and_python() -> None:
    instructions = _dockerfile_instructions()
    args = dict(
        rest.split("=", 1) for ins, rest in instructions if ins == "ARG" and "=" in rest
    )
    (base,) = [rest for ins, rest in instructions if ins == "FROM"]
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], base.split(" AS ")[0])
    assert base == RAY_BASE["cpu"]
    assert RAY_BASE["gpu"] in DOCKERFILE.read_text()  # the GPU variant, through the build ARG
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


def test_dockerfile_installs_the_pins_then_mmx_without_dependencies() -> None:
    runs = [rest for ins, rest in _dockerfile_instructions() if ins == "RUN"]
    copies = [rest for ins, rest in _dockerfile_instructions() if ins == "COPY"]
    assert any("infra/requirements.txt" in c for c in copies)
    deps = [i for i, r in enumerate(runs) if "pip install -r infra/requirements.txt" in r]
    torch = [i for i, r in enumerate(runs) if '--index-url "${TORCH_INDEX_URL}"' in r]
    mmx = [i for i, r in enumerate(runs) if re.search(r"pip install --no-deps \.(\s|$)", r)]
    assert deps and torch and mmx and torch[0] <= deps[0] < mmx[0]
    # Nothing else is pip-installed: torch's pin from its index, the pins, mmx.
    allowed = (
        '--index-url "${TORCH_INDEX_URL}" "$(grep -E \'^torch==\' infra/requirements.txt)"',
        "-r infra/requirements.txt",
        "--no-deps .",
    )
    for run in runs:
        for cmd in re.findall(r"pip install (.*?)\s*(?:&&|;|$)", run):
            assert cmd in allowed, cmd


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = [
        s.strip().rstrip("/") for s in (ROOT / ".dockerignore").read_text().splitlines()
        if s.strip() and not s.startswith("#")
    ]
    for ins, rest in _dockerfile_instructions():
        if ins != "COPY":
            continue
        sources = [w for w in shlex.split(rest) if not w.startswith("--")][:-1]
        for src in sources:
            assert (ROOT / src).exists(), src
            assert not any(fnmatch.fnmatch(src, pat) for pat in ignored), (src, ignored)
    assert _app_dir() == "/home/ray/mmx"


# --- KubeRay: the RayJob --------------------------------------------------------------------


@pytest.fixture(scope="module")
def rayjob() -> dict[str, Any]:
    docs = _load_all(KUBERAY / "rayjob.yaml")
    assert len(docs) == 1, "rayjob.yaml is created each night: it must hold the RayJob only"
    return docs[0]


def _pod_specs(rayjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = rayjob["spec"]["rayClusterSpec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    for group in spec["workerGroupSpecs"]:
        pods[group["groupName"]] = group["template"]["spec"]
    return pods


def test_rayjob_has_the_fields_kuberay_requires(rayjob: dict[str, Any]) -> None:
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    meta = rayjob["metadata"]
    assert meta.get("generateName") or meta.get("name")
    spec = rayjob["spec"]
    assert spec["entrypoint"].strip()
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == RAY_VERSION
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"]
    groups = cluster["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["cpu-decode", "gpu"]
    for group in groups:
        for key in ("groupName", "replicas", "minReplicas", "maxReplicas", "template"):
            assert key in group, (group.get("groupName"), key)
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"][0]["image"]


def test_rayjob_runs_once_and_cleans_up(rayjob: dict[str, Any]) -> None:
    spec = rayjob["spec"]
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    # A night cannot run forever, nor into the next night.
    assert isinstance(spec["activeDeadlineSeconds"], int)
    assert 0 < spec["activeDeadlineSeconds"] < DAY_S
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 0


def test_rayjob_images_are_mmx_for_this_ray(rayjob: dict[str, Any]) -> None:
    cluster_yaml = _load_all(CLUSTER_YAML)[0]
    repo = cluster_yaml["docker"]["image"].rsplit(":", 1)[0]
    for name, pod in _pod_specs(rayjob).items():
        container = pod["containers"][0]
        gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
        kind = "gpu" if gpus else "cpu"
        assert container["image"] == f"{repo}:{MMX_TAG[kind]}", name
        assert f"ray{RAY_VERSION}" in _image_tag(container["image"])


def test_rayjob_pods_have_resources_identity_and_token_auth(rayjob: dict[str, Any]) -> None:
    assert rayjob["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"
    accounts = {
        doc["metadata"]["name"]: doc for _, doc in _docs("ServiceAccount", "v1")
    }
    for name, pod in _pod_specs(rayjob).items():
        container = pod["containers"][0]
        limits = container["resources"]["limits"]
        assert limits.get("cpu") and limits.get("memory"), name
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token", name
        for secret in ("RAY_AUTH_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "value" not in env.get(secret, {}), (name, secret)
        account = accounts[pod["serviceAccountName"]]  # defined under infra/kuberay
        assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
            "arn:aws:iam::"
        )
    head_params = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]
    assert head_params.get("num-cpus") == "0"  # as ray_cluster.yaml: the head only drives
    assert head_params.get("dashboard-host", "0.0.0.0") in ("0.0.0.0", "127.0.0.1")
    assert not _docs("Ingress"), "the dashboard is reached by port-forward, not an Ingress"
    for _, svc in _docs("Service"):
        assert svc.get("spec", {}).get("type", "ClusterIP") == "ClusterIP"


def test_rayjob_entrypoint_runs_the_job_script_with_the_production_config(
    rayjob: dict[str, Any],
) -> None:
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[0] == "python"
    script = _repo_path(argv[1])
    assert script == ROOT / "jobs" / "index_archive.py" and script.is_file()
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert set(options) >= {"--config", "--archive", "--out"}
    config = _repo_path(options["--config"])
    assert config.is_file() and config == INFRA / "production.yaml"
    assert options["--archive"].startswith("s3://") and options["--out"].startswith("s3://")
    # The job's own parser accepts the entrypoint's options, and the config loads.
    from mmx.cli import _job_parser
    from mmx.config import build_config, parse_args_with_overrides

    local = [str(config) if a == options["--config"] else a for a in argv[2:]]
    args, extra = parse_args_with_overrides(_job_parser(), local)
    assert extra == []
    build_config(args.profile, args.config, {"archive": args.archive, "out": args.out})


# --- KubeRay: the nightly schedule --------------------------------------------------------


@pytest.fixture(scope="module")
def cronjob() -> dict[str, Any]:
    ((_, doc),) = _docs("CronJob")
    return doc


def test_cronjob_schedules_one_night_at_a_time(cronjob: dict[str, Any]) -> None:
    assert cronjob["apiVersion"] == "batch/v1"
    spec = cronjob["spec"]
    assert spec["schedule"] == "0 2 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert isinstance(spec["startingDeadlineSeconds"], int) and spec["startingDeadlineSeconds"] > 0
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert pod["containers"] and pod["containers"][0]["image"]
    assert job["backoffLimit"] == 0  # a retry would create a second RayJob
    rayjob_deadline = _load_all(KUBERAY / "rayjob.yaml")[0]["spec"]["activeDeadlineSeconds"]
    assert rayjob_deadline < job["activeDeadlineSeconds"] < DAY_S


def test_cronjob_creates_the_rayjob_of_rayjob_yaml(cronjob: dict[str, Any]) -> None:
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    script = " ".join(container.get("command", []) + container.get("args", []))
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    assert f"kubectl create -f {mount[volume['name']]}/rayjob.yaml" in script
    kustomization = _one("Kustomization")
    generators = {g["name"]: g for g in kustomization["configMapGenerator"]}
    generator = generators[volume["configMap"]["name"]]
    assert generator["files"] == ["rayjob.yaml"]
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True
    # The RayJob has a generated name: it is created, never applied by kustomize.
    assert "rayjob.yaml" not in kustomization["resources"]
    for resource in kustomization["resources"]:
        assert (KUBERAY / resource).is_file(), resource


def test_cronjob_may_create_and_read_rayjobs_only(cronjob: dict[str, Any]) -> None:
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    account = pod["serviceAccountName"]
    namespace = cronjob["metadata"]["namespace"]
    assert account in {d["metadata"]["name"] for _, d in _docs("ServiceAccount")}
    (binding,) = [
        d for _, d in _docs("RoleBinding")
        if any(s["kind"] == "ServiceAccount" and s["name"] == account for s in d["subjects"])
    ]
    assert binding["roleRef"]["kind"] == "Role"
    (role,) = [d for _, d in _docs("Role") if d["metadata"]["name"] == binding["roleRef"]["name"]]
    assert role["metadata"]["namespace"] == namespace
    (rule,) = role["rules"]
    assert rule["apiGroups"] == ["ray.io"] and rule["resources"] == ["rayjobs"]
    assert "create" in rule["verbs"] and "get" in rule["verbs"]
    assert not {"delete", "update", "patch", "*"} & set(rule["verbs"])


def test_kuberay_objects_share_one_namespace() -> None:
    (namespace,) = [d["metadata"]["name"] for _, d in _docs("Namespace")]
    for path in sorted(KUBERAY.rglob("*.yaml")):
        for doc in _load_all(path):
            if doc["kind"] in ("Namespace", "Kustomization"):
                continue
            assert doc["metadata"]["namespace"] == namespace, (path.name, doc["kind"])


# --- infra/nightly.sh ---------------------------------------------------------------------


def _nightly(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run infra/nightly.sh with a stand-in `ray` that records its argv and Ray's env."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "ray"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'printf "%s\\n" "$@" > "$FAKE_RAY_LOG"\n'
        'echo "MODE=${RAY_AUTH_MODE:-} PATHSET=${RAY_AUTH_TOKEN_PATH:+yes}" >> "$FAKE_RAY_LOG"\n'
    )
    fake.chmod(0o755)
    base = {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "FAKE_RAY_LOG": str(tmp_path / "ray.log"),
        "RAY_ADDRESS": "http://127.0.0.1:8265",
        "MMX_ARCHIVE": "s3://bucket/trailers",
        "MMX_OUT": "s3://bucket/mmx",
    }
    return subprocess.run(
        ["bash", str(INFRA / "nightly.sh")], env=base | env, capture_output=True, text=True,
        timeout=30, check=False,
    )


def test_nightly_refuses_to_run_without_a_token(tmp_path: Path) -> None:
    result = _nightly(tmp_path, {})
    assert result.returncode == 2
    assert "RAY_AUTH_TOKEN" in result.stderr
    assert not (tmp_path / "ray.log").exists()


def test_nightly_reads_the_token_from_the_environment_and_never_shows_it(
    tmp_path: Path,
) -> None:
    token = "0123456789abcdef" * 4
    token_file = tmp_path / "home" / ".ray" / "mmx-cluster" / "auth_token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(token)
    result = _nightly(tmp_path, {})
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "ray.log").read_text()
    assert "MODE=token PATHSET=yes" in log
    assert token not in log + result.stdout + result.stderr
    assert log.splitlines()[:4] == ["job", "submit", "--address", "http://127.0.0.1:8265"]
    assert "infra/production.yaml" in log.splitlines()
    # RAY_AUTH_TOKEN itself also works, and is not put on the command line either.
    result = _nightly(tmp_path, {"RAY_AUTH_TOKEN": token, "HOME": str(tmp_path / "none")})
    assert result.returncode == 0, result.stderr
    assert token not in (tmp_path / "ray.log").read_text() + result.stdout + result.stderr
