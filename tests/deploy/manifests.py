"""Reading infra/deploy: the Kubernetes documents, compose.yaml, and the I2V_* names they set."""

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from services.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "infra" / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
KUSTOMIZATION = K8S / "kustomization.yaml"

Doc = dict[str, Any]

SETTING_NAMES = frozenset(f"I2V_{name.upper()}" for name in Settings.model_fields)
"""Every I2V_* variable the services read: one per Settings field (env prefix I2V_)."""


# What each service reads besides NATS and S3 (docs/ARCHITECTURE.md): the ledger, the reservation seal's key,
# the session key. A stage without the seal's key would fail every job not_reserved.
NEEDS: dict[str, set[str]] = {
    "ingest": set(),
    "billing": {"I2V_LEDGER_DSN", "I2V_BILLING_SECRET"},
    "latent": {"I2V_BILLING_SECRET"},
    "decode": {"I2V_BILLING_SECRET"},
    "mux": {"I2V_BILLING_SECRET"},
    "webhooks": {"I2V_LEDGER_DSN"},  # the accounts' signing secrets and the delivery log
    "gateway": {"I2V_LEDGER_DSN", "I2V_GATEWAY_SECRET"},
}
EVERYONE = {"I2V_NATS_USER", "I2V_NATS_PASSWORD", "I2V_S3_ACCESS_KEY", "I2V_S3_SECRET_KEY"}
SECRET_SETTINGS = {"I2V_LEDGER_DSN", "I2V_BILLING_SECRET", "I2V_GATEWAY_SECRET"}
"""Credentials only the services in NEEDS may hold."""


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def k8s_files() -> list[Path]:
    """Every manifest kustomize may list: the YAML files of k8s/ besides the kustomization itself."""
    return sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)


@cache
def k8s_documents() -> tuple[tuple[str, Doc], ...]:
    """(file name, document) for every document of every manifest."""
    return tuple(
        (path.name, doc) for path in k8s_files() for doc in yaml.safe_load_all(path.read_text()) if doc is not None
    )


def of_kind(kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_documents() if doc["kind"] == kind}


def kustomization() -> Doc:
    doc: Doc = load_yaml(KUSTOMIZATION)
    return doc


def compose() -> Doc:
    doc: Doc = load_yaml(COMPOSE)
    return doc


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Doc) -> Doc:
    """The one container of a workload (each of ours runs exactly one)."""
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: {len(containers)} containers"
    only: Doc = containers[0]
    return only


def served(workload_args: list[str] | None) -> str | None:
    """The service an ``i2v serve NAME`` command line runs, else None."""
    if workload_args and len(workload_args) == 2 and workload_args[0] == "serve":
        return workload_args[1]
    return None


def service_deployments() -> dict[str, Doc]:
    """Service name -> the Deployment that runs ``i2v serve <name>``."""
    found: dict[str, Doc] = {}
    for doc in of_kind("Deployment").values():
        name = served(container(doc).get("args"))
        if name is not None:
            assert name not in found, f"two Deployments serve {name}"
            found[name] = doc
    return found


def compose_services_serving() -> dict[str, list[str]]:
    """Service name -> the compose services that run ``i2v serve <name>``."""
    found: dict[str, list[str]] = {}
    for compose_name, service in compose()["services"].items():
        name = served(service.get("command"))
        if name is not None:
            found.setdefault(name, []).append(compose_name)
    return found


def env_file_names(path: Path) -> list[str]:
    """The variable names a KEY=value file sets (comments and blank lines skipped)."""
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split("=", 1)[0])
    return names


def k8s_env_names() -> Iterator[tuple[str, str]]:
    """(where, name) of every environment variable the Kubernetes manifests set."""
    for file, doc in k8s_documents():
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "i2v-config":
            for key in doc["data"]:
                yield f"{file} ConfigMap i2v-config", key
        if doc["kind"] in ("Deployment", "Job", "StatefulSet"):
            for item in container(doc).get("env", []):
                yield f"{file} {doc['kind']} {doc['metadata']['name']}", item["name"]
    for example in sorted((K8S / "secrets").glob("*.env.example")):
        for key in env_file_names(example):
            yield f"k8s/secrets/{example.name}", key


def compose_env_names() -> Iterator[tuple[str, str]]:
    """(compose service, name) of every variable compose.yaml gives an i2v container."""
    for compose_name, service in compose()["services"].items():
        image = str(service.get("image", ""))
        if "I2V_IMAGE" not in image:
            continue  # NATS, MinIO, PostgreSQL: their own variables
        for key in service.get("environment", {}):
            yield compose_name, key


_DOCKER_ENV = re.compile(r"\b(I2V_[A-Z0-9_]+)=")


def dockerfile_env_names() -> list[str]:
    return _DOCKER_ENV.findall((DEPLOY / "Dockerfile").read_text())


_REQUIRED_VAR = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]*\}")


def compose_environment(compose_name: str) -> dict[str, str]:
    """What one compose service's container reads: its ``environment`` (each ``${VAR:?}`` as a placeholder)
    and a placeholder for each variable of its env_files."""
    service = compose()["services"][compose_name]
    env = {key: _REQUIRED_VAR.sub("placeholder", str(value)) for key, value in service.get("environment", {}).items()}
    for file in service.get("env_file", []):
        env |= dict.fromkeys(env_file_names_written(file), "placeholder")
    return env


def env_file_names_written(file: str) -> list[str]:
    """The names in an env_file of compose.yaml: all from `i2v stack nats-auth` (one user's, or the route's)."""
    assert file.startswith("secrets/nats/"), f"env_file {file}: only the files `i2v stack nats-auth` writes are read"
    if file == "secrets/nats/route.env":
        return ["NATS_ROUTE_USER", "NATS_ROUTE_PASSWORD"]
    return ["I2V_NATS_USER", "I2V_NATS_PASSWORD"]


def compose_clients() -> list[str]:
    """Every compose service running the i2v image: the services, the gateways and `stack streams`."""
    return [name for name, service in compose()["services"].items() if "I2V_IMAGE" in str(service.get("image", ""))]


def generated_secrets() -> dict[str, list[str]]:
    """Secret name -> the files kustomize makes it from."""
    made = {}
    for generator in kustomization()["secretGenerator"]:
        sources = [entry.split("=", 1)[-1] for entry in generator.get("files", [])] + generator.get("envs", [])
        made[generator["name"]] = sources
    return made


def k8s_environment(workload: Doc) -> dict[str, str]:
    """What a workload's container reads: the ConfigMaps and Secrets of its envFrom (a Secret's values from
    its *.env.example, or placeholders for the NATS files `i2v stack nats-auth` writes), then its env."""
    config_maps = of_kind("ConfigMap")
    made = generated_secrets()
    env: dict[str, str] = {}
    for source in container(workload).get("envFrom", []):
        if "configMapRef" in source:
            env |= config_maps[source["configMapRef"]["name"]]["data"]
        for file in made.get(source.get("secretRef", {}).get("name", ""), []):
            example = K8S / f"{file}.example"
            if example.is_file():
                lines = example.read_text().splitlines()
                env |= dict(line.split("=", 1) for line in lines if line[:1].isalpha())
            else:
                env |= dict.fromkeys(("I2V_NATS_USER", "I2V_NATS_PASSWORD"), "placeholder")
    env |= {item["name"]: item["value"] for item in container(workload).get("env", []) if "value" in item}
    return env


def k8s_clients() -> dict[str, Doc]:
    """Every workload running the i2v image (the Deployments and the streams Job), by name."""
    return {
        doc["metadata"]["name"]: doc
        for _, doc in k8s_documents()
        if doc["kind"] in ("Deployment", "Job") and container(doc)["image"] == "i2v"
    }


def cpu_request(workload: Doc) -> int:
    """The whole CPUs a workload's container requests (a fraction fails: a thread budget is whole)."""
    cpu = str(container(workload)["resources"]["requests"]["cpu"])
    assert cpu.isdigit(), f"{workload['metadata']['name']}: CPU request {cpu} is not a whole number of CPUs"
    return int(cpu)
