"""Deployment files, validated offline: docker-compose.yml, Kubernetes manifests, Helm values, Dockerfiles.

Nothing here runs containers. The checks are the ones that catch real breakage:
- every MM_* variable in compose and Kubernetes is a field of the gateway's Settings and validates
  through it; compose and the ConfigMap carry the same settings (one source of truth, three places);
- every Kubernetes manifest validates against the Kubernetes 1.30 schemas (kubernetes-validate, strict);
- services, ports, volumes, health checks and dependencies are wired by name (gateway -> triton,
  gateway -> milvus) and the ports follow the settings;
- every image is pinned, project images follow pyproject's version, Milvus is the same version in
  compose and Helm and on the pymilvus 2.5 line;
- the container entry points (health check, Triton start, export, CPU Triton) do what the manifests
  expect, run here against the committed model repository.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "k8s"
HELM = DEPLOY / "helm"
OVERLAYS = ("gpu", "cpu")
K8S_VERSION = "1.30.0"  # gRPC probes are GA since 1.27; 1.30 is the oldest release still widely supported
MILVUS_CHART_VERSION = "4.2.58"  # last milvus/milvus chart of the Milvus 2.5 line
# The gateway cannot reach its dependencies or be reached without these (compose and Kubernetes both).
REQUIRED_SETTINGS = ("MM_HOST", "MM_PORT", "MM_METRICS_PORT", "MM_BACKEND", "MM_TRITON_URL", "MM_STORE_URI")
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
# nvidia-pytriton release -> the NGC tritonserver release of the same Triton version (its 3.11 stub
# replaces the NGC image's stub in deploy/docker/triton.Dockerfile, so they must match)
PYTRITON_TO_NGC = {"0.7.0": "24.10"}


# ------------------------------------------------------------------------------------------ helpers
def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def constraint(package: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.match(rf"^{re.escape(package)}==([^\s#]+)", line.strip(), re.IGNORECASE)
        if match:
            return match.group(1)
    raise AssertionError(f"{package} is not pinned in constraints.txt")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def interpolate(value: Any) -> str:
    """A compose value as compose resolves it with nothing set in the environment (defaults)."""
    return _INTERPOLATION.sub(lambda m: m.group("default") or "", str(value))


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(value) for key, value in env.items()}


def gateway_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if str(s.get("image", "")).startswith("mmretrieval/gateway:")}


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The resources of a kustomization (files and bases, recursively), without transformers:
    kubectl is not available here, and these kustomizations only list resources."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        assert path.exists(), f"{directory / 'kustomization.yaml'} lists {entry}, which does not exist"
        if path.is_dir():
            docs.extend(kustomize(path))
        else:
            docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def all_k8s_docs() -> dict[str, list[dict[str, Any]]]:
    return {overlay: kustomize(K8S / "overlays" / overlay) for overlay in OVERLAYS}


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def configmap_env() -> dict[str, str]:
    return dict(yaml.safe_load((K8S / "base" / "configmap.yaml").read_text())["data"])


def secret_env() -> dict[str, str]:
    secret = yaml.safe_load((K8S / "base" / "secret.yaml").read_text())
    return dict(secret.get("stringData") or {})


def k8s_gateway_env() -> dict[str, str]:
    """Everything the gateway container gets: envFrom ConfigMap + Secret, then its own env entries."""
    deployment = yaml.safe_load((K8S / "base" / "gateway-deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    sources = {ref.get("configMapRef", {}).get("name") or ref.get("secretRef", {}).get("name") for ref in container["envFrom"]}
    assert sources == {"gateway-settings", "gateway-secrets"}
    env = {**configmap_env(), **secret_env()}
    env.update({item["name"]: str(item.get("value", "")) for item in container.get("env", [])})
    return env


def dockerfile_env(path: Path) -> dict[str, str]:
    """ENV KEY=VALUE pairs of a Dockerfile (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip().startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


def settings_field(variable: str) -> bool:
    """Is MM_<NAME> (or nested MM_<NAME>__<SUB>) a field of gateway.settings.Settings?"""
    from pydantic import BaseModel

    from gateway.settings import Settings

    if not variable.startswith("MM_"):
        return False
    key = variable[3:].lower()
    outer, _, inner = key.partition("__")
    field = Settings.model_fields.get(outer)
    if field is None:
        return False
    if not inner:
        return True
    model = field.annotation
    return isinstance(model, type) and issubclass(model, BaseModel) and inner in model.model_fields


def every_gateway_variable(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Where MM_* variables are set for the gateway: source -> {name: value}."""
    places = {f"docker-compose.yml:{name}": environment(s) for name, s in gateway_services(compose).items()}
    places["deploy/k8s/base/configmap.yaml"] = configmap_env()
    places["deploy/k8s/base/secret.yaml"] = secret_env()
    places["deploy/k8s gateway container"] = k8s_gateway_env()
    places["deploy/docker/gateway.Dockerfile"] = {k: v for k, v in dockerfile_env(DOCKER / "gateway.Dockerfile").items() if k.startswith("MM_")}
    return places


@pytest.fixture()
def clean_mm_environment(monkeypatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.upper().startswith("MM_"):
            monkeypatch.delenv(key)
    yield


# ------------------------------------------------------------------ settings: one object, three places
def test_every_mm_variable_is_a_settings_field(compose):
    unknown = [f"{place}: {name}" for place, env in every_gateway_variable(compose).items()
               for name in env if name.startswith("MM_") and not settings_field(name)]
    assert not unknown, "MM_* variables that gateway/settings.py does not define:\n  " + "\n  ".join(unknown)


def test_settings_drift_is_detected():
    """The check above really looks at the settings object (a renamed field would fail it)."""
    assert settings_field("MM_TRITON_URL") and settings_field("MM_WEIGHTS__IMAGE")
    assert not settings_field("MM_TRITON_ADDRESS") and not settings_field("MM_WEIGHTS__AUDIO")
    assert not settings_field("TRITON_URL")


@pytest.mark.parametrize("place", ["compose", "kubernetes"])
def test_variables_validate_through_the_settings_object(place, compose, clean_mm_environment, monkeypatch):
    """The values parse: the gateway would start with them (same loader as `python -m gateway`)."""
    from gateway.settings import load_settings

    env = environment(compose["services"]["gateway"]) if place == "compose" else k8s_gateway_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings([])
    assert settings.backend == "triton"
    assert settings.host == "0.0.0.0"
    assert (settings.port, settings.metrics_port) == (int(env["MM_PORT"]), int(env["MM_METRICS_PORT"]))
    assert settings.triton_url == env["MM_TRITON_URL"]
    assert settings.store_uri == env["MM_STORE_URI"] and "://" in settings.store_uri
    assert settings.weights.image == float(env["MM_WEIGHTS__IMAGE"])


def test_required_settings_are_set_in_compose_and_kubernetes(compose):
    for name, service in gateway_services(compose).items():
        missing = set(REQUIRED_SETTINGS) - environment(service).keys()
        assert not missing, f"compose service {name} lacks {sorted(missing)}"
    missing = set(REQUIRED_SETTINGS) - k8s_gateway_env().keys()
    assert not missing, f"the Kubernetes gateway lacks {sorted(missing)}"


def test_compose_and_kubernetes_carry_the_same_settings(compose):
    """The same settings object drives the gateway in compose and in Kubernetes."""
    k8s = k8s_gateway_env()
    for name, service in gateway_services(compose).items():
        assert environment(service) == k8s, f"compose service {name} and deploy/k8s/base differ"


def test_compose_gateway_services_differ_only_in_profile_and_dependencies(compose):
    gpu, cpu = compose["services"]["gateway"], compose["services"]["gateway-cpu"]
    strip = lambda s: {k: v for k, v in s.items() if k not in ("profiles", "depends_on")}  # noqa: E731
    assert strip(gpu) == strip(cpu)
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]


def test_docs_name_only_real_settings():
    text = (ROOT / "docs" / "deploy.md").read_text()
    names = set(re.findall(r"\bMM_[A-Z0-9_]*[A-Z0-9]\b", text))
    assert names >= set(REQUIRED_SETTINGS)
    assert not [n for n in names if not settings_field(n)], "docs/deploy.md names unknown settings"


# ------------------------------------------------------------------------------------- compose
def test_compose_services_and_profiles(compose):
    services = compose["services"]
    assert set(services) == {"etcd", "minio", "milvus", "export", "triton", "triton-cpu", "gateway", "gateway-cpu"}
    assert services["triton"]["profiles"] == ["gpu"]
    assert services["triton-cpu"]["profiles"] == ["cpu"]
    assert set(services["export"]["profiles"]) == {"gpu", "cpu"}
    for name in ("etcd", "minio", "milvus"):
        assert "profiles" not in services[name], f"{name} must run in both profiles"


def test_compose_triton_gpu_service(compose):
    triton = compose["services"]["triton"]
    assert "ports" not in triton and sorted(triton["expose"]) == ["8000", "8001", "8002"]  # compose network only
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "models:/models:ro" in triton["volumes"]
    assert any(v.endswith(":/opt/tritonserver/trt_cache") for v in triton["volumes"])
    assert triton["shm_size"] and "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert triton["depends_on"] == {"export": {"condition": "service_completed_successfully"}}
    # the TensorRT cache path mounted is the one the committed configs use
    paths = set(re.findall(r'"trt_engine_cache_path" value: "([^"]+)/[^/"]+"', "".join(
        p.read_text() for p in (ROOT / "model_repository").glob("*/config.pbtxt"))))
    assert paths <= {"/opt/tritonserver/trt_cache"}


def test_compose_triton_cpu_service(compose):
    triton = compose["services"]["triton-cpu"]
    assert "ports" not in triton and sorted(triton["expose"]) == ["8000", "8001", "8002"]
    assert "deploy" not in triton, "the CPU profile must not reserve a GPU"
    assert triton["networks"]["default"]["aliases"] == ["triton"]
    assert "models:/models:ro" in triton["volumes"]
    assert triton["depends_on"] == {"export": {"condition": "service_completed_successfully"}}
    launcher = load_launcher()
    args = launcher.build_parser().parse_args([interpolate(a) for a in triton["command"]])
    assert args.variant == "int8" and args.address == "0.0.0.0"


def test_compose_gateway_is_wired_by_service_name(compose):
    services = compose["services"]
    for name, gateway in gateway_services(compose).items():
        env = environment(gateway)
        triton_name = "triton" if name == "gateway" else "triton-cpu"
        assert gateway["depends_on"] == {triton_name: {"condition": "service_healthy"},
                                         "milvus": {"condition": "service_healthy"}}
        # MM_TRITON_URL names the Triton service of this profile (name or network alias), gRPC port
        host, port = env["MM_TRITON_URL"].rsplit(":", 1)
        triton = services[triton_name]
        names = {triton_name, *triton.get("networks", {}).get("default", {}).get("aliases", [])}
        assert host in names and port in triton["expose"]
        # MM_STORE_URI names the Milvus service and its gRPC port
        match = re.fullmatch(r"http://(?P<host>[\w-]+):(?P<port>\d+)", env["MM_STORE_URI"])
        assert match and match["host"] == "milvus" and match["port"] in services["milvus"]["expose"]
        assert f"{env['MM_PORT']}:{env['MM_PORT']}" in gateway["ports"]
        assert f"127.0.0.1:{env['MM_METRICS_PORT']}:{env['MM_METRICS_PORT']}" in [interpolate(p) for p in gateway["ports"]]
        assert gateway["healthcheck"]["test"] == ["CMD", "python", "/usr/local/bin/mm-healthcheck"]


def test_compose_publishes_only_the_gateway(compose):
    """Milvus (no auth) and Triton (model control) stay on the compose network; metrics stay host-local by default."""
    for name, service in compose["services"].items():
        if name in gateway_services(compose):
            published = [interpolate(p) for p in service["ports"]]
            assert published == ["50051:50051", "127.0.0.1:9464:9464"], published
        else:
            assert "ports" not in service, f"{name} publishes ports on the host"


def test_api_keys_and_security_settings_reach_the_gateway(compose):
    from gateway.settings import Settings

    for name, service in gateway_services(compose).items():
        env = service["environment"]
        assert env["MM_API_KEYS"] == "${MM_API_KEYS:-}", "compose takes the keys from .env / the shell, never from the file"
    assert secret_env()["MM_API_KEYS"] == ""  # the committed Secret holds no key; docs/security.md shows how to create it
    k8s = k8s_gateway_env()
    assert {"MM_API_KEYS", "MM_REQUIRE_READ_KEY", "MM_REFLECTION"} <= k8s.keys()
    assert "MM_API_KEYS" not in configmap_env(), "keys belong in the Secret, not the ConfigMap"
    assert Settings.model_fields["reflection"].default is False


def _policies(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        value, values = labels.get(expression["key"]), expression.get("values", [])
        if expression["operator"] == "In" and value not in values:
            return False
        if expression["operator"] == "NotIn" and value in values:
            return False
    return True


# Labels the pods carry: ours (deploy/k8s) and the Milvus Helm release's (chart milvus/milvus, release "milvus").
PODS = {
    "gateway": {"app.kubernetes.io/name": "gateway", "app.kubernetes.io/component": "api"},
    "triton": {"app.kubernetes.io/name": "triton", "app.kubernetes.io/component": "inference"},
    "milvus": {"app.kubernetes.io/name": "milvus", "app.kubernetes.io/instance": "milvus", "component": "standalone"},
    "etcd": {"app.kubernetes.io/name": "etcd", "app.kubernetes.io/instance": "milvus"},
    "minio": {"app": "minio", "release": "milvus"},
    "export": {"app.kubernetes.io/name": "export"},
    "intruder": {"app.kubernetes.io/name": "debug-shell"},
}


def _allowed(policies: list[dict[str, Any]], source: str, target: str, port: int | str) -> bool:
    """Whether pod `source` (same namespace) may open `port` on pod `target` under these policies."""
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], PODS[target]) and "Ingress" in p["spec"]["policyTypes"]]
    assert selecting, f"no policy selects {target}"
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            from_ok = peers is None or any("podSelector" in peer and "namespaceSelector" not in peer
                                           and _selects(peer["podSelector"], PODS[source]) for peer in peers)
            ports = rule.get("ports")
            port_ok = ports is None or any(p["port"] == port for p in ports)
            if from_ok and port_ok:
                return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_only_the_gateway_reach_triton_and_milvus(overlay):
    docs = kustomize(K8S / "overlays" / overlay)
    policies = _policies(docs)
    deny = find(docs, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {} and "ingress" not in deny["spec"]
    for source in ("intruder", "export", "triton"):
        assert not _allowed(policies, source, "milvus", 19530), source
    for source in ("intruder", "export", "milvus"):
        for port in (8000, 8001, 8002):  # model control (HTTP/gRPC) is not reachable from other pods
            assert not _allowed(policies, source, "triton", port), (source, port)
    assert _allowed(policies, "gateway", "triton", 8001) and _allowed(policies, "gateway", "milvus", 19530)
    assert not _allowed(policies, "gateway", "triton", 8000)  # the gateway needs gRPC inference only
    assert _allowed(policies, "intruder", "gateway", "grpc")  # clients reach the gateway's API ...
    assert not _allowed(policies, "intruder", "gateway", "metrics")  # ... not its metrics (monitoring namespace only)
    for dependency in ("etcd", "minio"):
        assert _allowed(policies, "milvus", dependency, 2379) and not _allowed(policies, "gateway", dependency, 2379)
    # the ports named in the policies are the ports the pods declare
    gateway = find(docs, "Deployment", "gateway")
    names = {p["name"] for c in containers(gateway) for p in c["ports"]}
    assert {"grpc", "metrics"} <= names


def test_compose_milvus_follows_its_documented_layout(compose):
    services = compose["services"]
    milvus = services["milvus"]
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert environment(milvus) == {"MINIO_REGION": "us-east-1", "ETCD_ENDPOINTS": "etcd:2379", "MINIO_ADDRESS": "minio:9000"}
    assert "http://localhost:9091/healthz" in milvus["healthcheck"]["test"]
    assert milvus["depends_on"] == {"etcd": {"condition": "service_healthy"}, "minio": {"condition": "service_healthy"}}
    assert any(v.endswith(":/var/lib/milvus") for v in milvus["volumes"])
    assert services["etcd"]["healthcheck"]["test"] == ["CMD", "etcdctl", "endpoint", "health"]
    assert "http://localhost:9000/minio/health/live" in services["minio"]["healthcheck"]["test"]
    assert any(v.endswith(":/etcd") for v in services["etcd"]["volumes"])
    assert any(v.endswith(":/minio_data") for v in services["minio"]["volumes"])


def test_compose_every_service_has_a_healthcheck_or_is_one_shot(compose):
    for name, service in compose["services"].items():
        if name == "export":
            assert service["restart"] == "no"
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_compose_named_volumes_are_declared(compose):
    declared = set(compose["volumes"])
    used = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert not source.startswith((".", "/")), f"bind mount {volume}: use a named volume"
            used.add(source)
    assert used == declared


def test_docker_compose_config_accepts_the_file():
    """`docker-compose config` (Debian's docker-compose 1.29, or Docker Compose v2) where installed."""
    if shutil.which("docker-compose"):
        command = ["docker-compose"]
    elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    else:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    for profile in ("gpu", "cpu"):
        result = subprocess.run([*command, "-f", str(COMPOSE_FILE), "--profile", profile, "config", "-q"],
                                capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------- Kubernetes
def test_kubernetes_manifests_validate_against_the_schemas():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    checked = 0
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") == "Kustomization":
                continue
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.relative_to(ROOT)} ({doc['kind']}/{doc['metadata']['name']}): {exc.message}")
            checked += 1
    assert checked >= 12


def test_kubernetes_validation_rejects_a_broken_manifest():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = yaml.safe_load((K8S / "base" / "gateway-deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 50051
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kustomizations_list_every_manifest_once():
    base_files = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}
    listed = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(base_files), "every base manifest is listed, and only those"
    for overlay, docs in all_k8s_docs().items():
        keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
        assert len(keys) == len(set(keys)), f"overlay {overlay} has duplicates"
        assert ("Deployment", "triton") in keys and ("Deployment", "gateway") in keys
        overlay_kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        assert overlay_kustomization["namespace"] == yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["namespace"]


def test_services_select_their_deployments():
    for overlay, docs in all_k8s_docs().items():
        for name in ("triton", "gateway"):
            service, deployment = find(docs, "Service", name), find(docs, "Deployment", name)
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert service["spec"]["selector"].items() <= labels.items(), f"{overlay}: Service {name} selects nothing"
            assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
            port_names = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
            assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_kubernetes_gateway_ports_and_probes_follow_the_settings():
    env = k8s_gateway_env()
    port, metrics_port = int(env["MM_PORT"]), int(env["MM_METRICS_PORT"])
    deployment = yaml.safe_load((K8S / "base" / "gateway-deployment.yaml").read_text())
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": port, "metrics": metrics_port}
    assert container["readinessProbe"]["grpc"]["port"] == port
    assert container["startupProbe"]["grpc"]["port"] == port
    assert container["livenessProbe"]["tcpSocket"]["port"] in ("grpc", port)
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == str(metrics_port)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # read-only root filesystem: the working directory's data/ (tag-vector cache) and /tmp are volumes
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    workdir = re.findall(r"^WORKDIR (\S+)$", (DOCKER / "gateway.Dockerfile").read_text(), re.MULTILINE)[-1]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", f"{workdir}/data"}
    # MM_TRITON_URL -> the triton Service's gRPC port; MM_STORE_URI -> the Milvus chart's Service
    service = yaml.safe_load((K8S / "base" / "triton-service.yaml").read_text())
    host, triton_port = env["MM_TRITON_URL"].rsplit(":", 1)
    assert host == service["metadata"]["name"]
    assert {"name": "grpc", "port": int(triton_port), "targetPort": "grpc"} in service["spec"]["ports"]
    for values in helm_values().values():
        assert env["MM_STORE_URI"] == f"http://{values['fullnameOverride']}:19530"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_triton_deployment(overlay):
    docs = kustomize(K8S / "overlays" / overlay)
    deployment = find(docs, "Deployment", "triton")
    pod = deployment["spec"]["template"]
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "triton")
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == TRITON_PORTS
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    annotations = pod["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "8002", "prometheus.io/path": "/metrics"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True and "/dev/shm" in mounts
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"] == "model-repository"
    limits = container["resources"].get("limits", {})
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == 1
        assert container["image"] == f"mmretrieval/triton:{project_version()}"
        assert "/opt/tritonserver/trt_cache" in mounts
    else:
        assert "nvidia.com/gpu" not in limits
        assert container["image"] == f"mmretrieval/triton-cpu:{project_version()}"
        args = load_launcher().build_parser().parse_args(container["args"])
        assert args.address == "0.0.0.0" and args.out.is_relative_to("/tmp") and "/tmp" in mounts


def test_hpa_scales_the_gateway_on_cpu():
    hpa = yaml.safe_load((K8S / "base" / "gateway-hpa.yaml").read_text())
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert 1 < hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    deployment = yaml.safe_load((K8S / "base" / "gateway-deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    assert "nv_inference_queue_duration_us" in (K8S / "base" / "gateway-hpa.yaml").read_text()


def test_export_job_writes_the_claim_triton_reads():
    job = yaml.safe_load((K8S / "base" / "export-job.yaml").read_text())
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == f"mmretrieval/export:{project_version()}"
    models = next(m for m in container["volumeMounts"] if m["mountPath"] == "/models")
    assert not models.get("readOnly")
    claim = next(v for v in pod["volumes"] if v["name"] == models["name"])["persistentVolumeClaim"]["claimName"]
    pvc = yaml.safe_load((K8S / "base" / "models-pvc.yaml").read_text())
    assert claim == pvc["metadata"]["name"] == "model-repository"
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]


# ------------------------------------------------------------------------------------ Helm values
def helm_values() -> dict[str, dict[str, Any]]:
    return {mode: yaml.safe_load((HELM / f"milvus-values-{mode}.yaml").read_text()) for mode in ("standalone", "cluster")}


def test_helm_values_for_standalone_and_cluster():
    values = helm_values()
    standalone, cluster = values["standalone"], values["cluster"]
    assert standalone["cluster"]["enabled"] is False and cluster["cluster"]["enabled"] is True
    assert standalone["etcd"]["replicaCount"] == 1 and cluster["etcd"]["replicaCount"] == 3
    assert standalone["minio"]["mode"] == "standalone" and cluster["minio"]["mode"] == "distributed"
    assert standalone["pulsarv3"]["enabled"] is False and standalone["standalone"]["messageQueue"] == "rocksmq"
    assert cluster["pulsarv3"]["enabled"] is True and cluster["mixCoordinator"]["enabled"] is True
    assert cluster["queryNode"]["replicas"] >= 2 and cluster["proxy"]["replicas"] >= 2
    for mode, data in values.items():
        text = (HELM / f"milvus-values-{mode}.yaml").read_text()
        assert "helm repo add milvus https://zilliztech.github.io/milvus-helm/" in text
        assert f"milvus/milvus --version {MILVUS_CHART_VERSION}" in text
        assert data["fullnameOverride"] == "milvus"
    assert f"--version {MILVUS_CHART_VERSION}" in (ROOT / "docs" / "deploy.md").read_text()


def test_milvus_version_is_the_same_everywhere_and_matches_pymilvus(compose):
    image = compose["services"]["milvus"]["image"]
    repository, tag = image.rsplit(":", 1)
    for mode, values in helm_values().items():
        assert (values["image"]["all"]["repository"], values["image"]["all"]["tag"]) == (repository, tag), mode
    milvus_minor = re.fullmatch(r"v(\d+\.\d+)\.\d+", tag).group(1)
    assert constraint("pymilvus").startswith(milvus_minor + "."), "Milvus server and pymilvus on different lines"


# ------------------------------------------------------------------------------------ images
def dockerfiles() -> list[Path]:
    return sorted(DOCKER.glob("*.Dockerfile"))


def from_images(path: Path) -> list[str]:
    stages = set()
    images = []
    for line in path.read_text().splitlines():
        match = re.match(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line.strip(), re.IGNORECASE)
        if match:
            if match.group(1) not in stages:
                images.append(match.group(1))
            if match.group(2):
                stages.add(match.group(2))
    return images


def every_image(compose: dict[str, Any]) -> dict[str, str]:
    """image -> where it is used."""
    found = {}
    for name, service in compose["services"].items():
        found[service["image"]] = f"docker-compose.yml:{name}"
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("Deployment", "Job"):
                for container in containers(doc) if doc["kind"] == "Deployment" else doc["spec"]["template"]["spec"]["containers"]:
                    found[container["image"]] = str(path.relative_to(ROOT))
    for path in dockerfiles():
        for image in from_images(path):
            found[image] = str(path.relative_to(ROOT))
    for mode, values in helm_values().items():
        found[f"{values['image']['all']['repository']}:{values['image']['all']['tag']}"] = f"helm {mode}"
    return found


def test_every_image_is_pinned(compose):
    images = every_image(compose)
    assert len(images) >= 9
    for image, where in images.items():
        assert "$" not in image, f"{where}: {image} is not a literal reference"
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag and tag, f"{where}: {image} has no tag"
        assert tag != "latest" and not tag.endswith("-latest"), f"{where}: {image} is not pinned"
        assert re.search(r"\d", tag), f"{where}: {image} tag names no version"


def test_project_images_follow_the_project_version_and_have_a_dockerfile(compose):
    version = project_version()
    project = {image for image in every_image(compose) if image.startswith("mmretrieval/")}
    assert {image.split(":")[0] for image in project} == {"mmretrieval/gateway", "mmretrieval/triton",
                                                           "mmretrieval/triton-cpu", "mmretrieval/export"}
    for image in project:
        name, tag = image.split(":")
        assert tag == version, f"{image}: tag should be the project version {version}"
        dockerfile = DOCKER / f"{name.split('/')[1]}.Dockerfile"
        assert dockerfile.is_file(), f"{image} has no {dockerfile.relative_to(ROOT)}"
    for name, service in compose["services"].items():
        if service["image"].startswith("mmretrieval/"):
            assert service["build"] == {"context": ".", "dockerfile": f"deploy/docker/{service['image'].split(':')[0].split('/')[1]}.Dockerfile"}


def test_base_images():
    bases = {path.name: from_images(path) for path in dockerfiles()}
    assert bases["gateway.Dockerfile"] == ["python:3.11-slim-bookworm", "python:3.11-slim-bookworm"]
    assert bases["export.Dockerfile"] == ["python:3.11-slim-bookworm"]
    assert bases["triton-cpu.Dockerfile"] == ["python:3.11-slim-bookworm"]
    ngc = bases["triton.Dockerfile"]
    assert len(ngc) == 1 and re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", ngc[0])
    # the NGC release must be the one whose python backend the nvidia-pytriton stub was built for
    assert ngc[0].endswith(f":{PYTRITON_TO_NGC[constraint('nvidia-pytriton')]}-py3")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert "3.11" in requires and "python3.11" in (DOCKER / "triton.Dockerfile").read_text()


def test_dockerfiles_copy_existing_paths_and_every_package():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    top_level = {p.rstrip("*") for p in packages}
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for path in dockerfiles():
        text = path.read_text()
        sources = []
        for line in text.splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                sources.extend(line.split()[1:-1])
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such path"
            assert source.rstrip("/") not in ignored, f"{path.name}: {source} is excluded by .dockerignore"
        if re.search(r"pip install[^\n]*-c constraints\.txt[^\n]*\"?\.(\[|\"| )", text):
            copied = {s.rstrip("/") for s in sources}
            assert top_level <= copied, f"{path.name} installs the project without {sorted(top_level - copied)}"
            assert {"pyproject.toml", "constraints.txt", "README.md"} <= copied


def test_gateway_image_is_slim_non_root_and_health_checked():
    text = (DOCKER / "gateway.Dockerfile").read_text()
    assert re.search(r'pip install -c constraints\.txt "\.\[serving,openvino\]"', text)  # the serving extra and the shipped CPU engine
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert re.search(r'^HEALTHCHECK .*\n\s+CMD \["python", "/usr/local/bin/mm-healthcheck"\]', text, re.MULTILINE)
    assert "COPY deploy/docker/healthcheck.py /usr/local/bin/mm-healthcheck" in text
    assert 'ENTRYPOINT ["python", "-m", "gateway"]' in text
    env = dockerfile_env(DOCKER / "gateway.Dockerfile")
    assert env["MM_HOST"] == "0.0.0.0" and env["MM_PORT"] == "50051"


def test_dockerignore_keeps_exports_and_environments_out():
    ignored = (ROOT / ".dockerignore").read_text()
    for entry in (".venv", ".git", "build", "model_repository/**/*.onnx", "model_repository/manifest.json"):
        assert re.search(rf"^{re.escape(entry)}$", ignored, re.MULTILINE), entry
    for needed in ("README.md", "constraints.txt", "pyproject.toml", "deploy", "model_repository"):
        assert not re.search(rf"^{re.escape(needed)}/?$", ignored, re.MULTILINE), needed


# ------------------------------------------------------------------------------- entry points
def test_grpc_health_check_script():
    """deploy/docker/healthcheck.py against a real grpc.health.v1 server: SERVING, NOT_SERVING, down."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    spec = importlib.util.spec_from_file_location("mm_healthcheck", DOCKER / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        target = f"127.0.0.1:{port}"
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert module.main([target]) == 0
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert module.main([target]) == 1
    finally:
        server.stop(None)
    assert module.main([target, "--timeout", "0.5"]) == 1


def _bash_script(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    shell = "bash" if script.read_text().startswith("#!/usr/bin/env bash") else "sh"
    return subprocess.run([shell, str(script)], env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, timeout=30)


def test_export_entrypoint_fills_the_volume_with_the_committed_configs(tmp_path):
    out = tmp_path / "models"
    env = {"MODEL_REPOSITORY": str(out), "CONFIG_SOURCE": str(ROOT / "model_repository"), "EXPORT_DRY_RUN": "1"}
    result = _bash_script(DOCKER / "export-entrypoint.sh", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"python -m export --out {out} --preset base --int8"
    committed = {p.parent.name for p in (ROOT / "model_repository").glob("*/config.pbtxt")}
    assert {p.parent.name for p in out.glob("*/config.pbtxt")} == committed
    assert all((out / name / "1").is_dir() for name in committed)
    (out / "manifest.json").write_text("{}")
    again = _bash_script(DOCKER / "export-entrypoint.sh", env)
    assert again.returncode == 0 and "already exported" in again.stdout
    assert "python -m export" not in again.stdout


def test_triton_entrypoint_loads_every_exported_model_explicitly(tmp_path):
    """The GPU start script over the committed configs, as the export leaves them."""
    repo = tmp_path / "models"
    shutil.copytree(ROOT / "model_repository", repo, ignore=shutil.ignore_patterns("*.onnx", "manifest.json", "tokenizers"))
    env = {"MODEL_REPOSITORY": str(repo), "TRITON_DRY_RUN": "1"}
    missing = _bash_script(DOCKER / "triton-entrypoint.sh", env)
    assert missing.returncode == 1 and "manifest.json" in missing.stderr

    (repo / "manifest.json").write_text("{}")
    (repo / "tokenizers" / "clip").mkdir(parents=True)  # export puts tokenizers at the root: not a model
    committed = {p.parent.name for p in repo.glob("*/config.pbtxt")}
    graphs = {name for name in committed if 'backend: "onnxruntime"' in (repo / name / "config.pbtxt").read_text()}
    for name in graphs - {"blip_itm"}:  # as if exported without the ITM head
        (repo / name / "1").mkdir(exist_ok=True)
        (repo / name / "1" / "model.onnx").write_bytes(b"")
    result = _bash_script(DOCKER / "triton-entrypoint.sh", env)
    assert result.returncode == 0, result.stderr
    args = result.stdout.split()
    assert args[0] == "tritonserver" and "--model-control-mode=explicit" in args
    assert f"--model-repository={repo}" in args
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(args)
    loaded = {a.split("=", 1)[1] for a in args if a.startswith("--load-model=")}
    assert loaded == committed - {"blip_itm"}
    assert "tokenizers" not in loaded and "skipping blip_itm" in result.stderr
    from runtime import triton_contract as tc
    assert {tc.EMBED_IMAGE, tc.EMBED_TEXT, tc.CAPTION} <= loaded


def load_launcher():
    spec = importlib.util.spec_from_file_location("mm_triton_cpu", DOCKER / "triton_cpu_serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_triton_launcher_listens_on_all_interfaces(tmp_path):
    pytest.importorskip("pytriton", reason="nvidia-pytriton (the triton-cpu extra) ships tritonserver")
    launcher = load_launcher()
    command = launcher.build_command(tmp_path / "repo", tmp_path / "work", "0.0.0.0", 8000, 8001, 8002)
    assert Path(command[0]).name == "tritonserver" and Path(command[0]).is_file()
    for kind, port in TRITON_PORTS.items():
        assert f"--{kind}-address=0.0.0.0" in command and f"--{kind}-port={port}" in command
    backend = Path(next(a for a in command if a.startswith("--backend-directory=")).split("=", 1)[1])
    assert (backend / "python" / "triton_python_backend_stub").exists()


@pytest.mark.slow
def test_cpu_triton_launcher_serves_the_tiny_export(tiny_repository, tmp_path):
    """The CPU profile's command for real: render + tritonserver, ready on /v2/health/ready."""
    pytest.importorskip("pytriton")
    from triton_runner.server import free_port

    # the volume as the export container leaves it: exported graphs + the committed configs
    models = tmp_path / "models"
    shutil.copytree(tiny_repository, models)
    filled = _bash_script(DOCKER / "export-entrypoint.sh", {"MODEL_REPOSITORY": str(models),
                                                            "CONFIG_SOURCE": str(ROOT / "model_repository")})
    assert filled.returncode == 0 and "already exported" in filled.stdout, filled.stderr
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    command = [sys.executable, str(DOCKER / "triton_cpu_serve.py"), "--source", str(models),
               "--out", str(tmp_path / "rendered"), "--workdir", str(tmp_path / "work"),
               "--address", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc_port),
               "--metrics-port", str(metrics)]
    log = open(tmp_path / "triton.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        ready = False
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as response:
                    ready = response.status == 200
            except OSError:
                pass
            if ready:
                break
            time.sleep(0.3)
        assert ready, (tmp_path / "triton.log").read_text(errors="replace")[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/embed_text/ready", timeout=2) as response:
            assert response.status == 200
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:  # tritonserver and its python backend stubs: the process group this test started
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
        log.close()
