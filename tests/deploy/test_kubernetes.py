"""infra/deploy/k8s: every manifest against the Kubernetes schemas (offline, kubernetes-validate), and the
names in them against the code's: services, settings, streams, consumers, NATS users."""

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from contracts.stages import Stage
from contracts.subjects import WORK_STREAM, durable_name
from services.bus.connection import nats_servers
from services.bus.streams import EVENTS
from services.cli.main import SERVICE_NAMES
from services.config import settings_from
from services.stack.nats_auth import ADMIN, USERS, write_nats_auth
from services.threads import ONE_THREAD, SHARE_WEIGHTS, service_threads
from tests.deploy.manifests import (
    EVERYONE,
    K8S,
    NEEDS,
    SECRET_SETTINGS,
    SETTING_NAMES,
    Doc,
    container,
    cpu_request,
    env_file_names,
    k8s_clients,
    k8s_documents,
    k8s_env_names,
    k8s_environment,
    k8s_files,
    kustomization,
    of_kind,
    pod_spec,
    service_deployments,
)

KUBERNETES_VERSION = kubernetes_validate.latest_version()
GPU_SERVICES = {"latent", "decode"}
METRICS_PORT_NAME = "metrics"

# KEDA's ScaledObject is a custom resource: the Kubernetes schemas do not know it. This schema holds it to
# what KEDA documents for a ScaledObject with a nats-jetstream trigger (keda.sh, "NATS JetStream" scaler):
# the fields a ScaledObject's spec takes, and the trigger's metadata, a map of strings, with its required
# keys. Any other kind outside the Kubernetes schemas fails the test below rather than being skipped.
_COUNT = {"type": "integer", "minimum": 0}
NATS_JETSTREAM_METADATA = {
    "type": "object",
    "required": ["natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"],
    "properties": {
        key: {"type": "string", "minLength": 1}
        for key in (
            "natsServerMonitoringEndpoint",
            "account",
            "stream",
            "consumer",
            "lagThreshold",
            "activationLagThreshold",
            "useHttps",
        )
    },
    "additionalProperties": False,
}
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
        },
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "apiVersion": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": _COUNT,
                "initialCooldownPeriod": _COUNT,
                "idleReplicaCount": _COUNT,
                "minReplicaCount": _COUNT,
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"const": "nats-jetstream"},
                            "name": {"type": "string"},
                            "metadata": NATS_JETSTREAM_METADATA,
                        },
                    },
                },
            },
        },
    },
}


def _validate(doc: Doc) -> None:
    if doc.get("apiVersion", "").startswith("keda.sh/"):
        jsonschema.validate(doc, SCALED_OBJECT_SCHEMA)
        spec = doc["spec"]
        assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100), "minReplicaCount > maxReplicaCount"
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("file", "doc"), k8s_documents(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_manifest_fits_its_schema(file: str, doc: Doc) -> None:
    _validate(doc)


def test_the_validators_refuse_a_broken_manifest() -> None:
    deployment = copy.deepcopy(service_deployments()["latent"])
    container(deployment)["ports"][0]["containerPort"] = "nine thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)
    unknown_field = copy.deepcopy(service_deployments()["mux"])
    pod_spec(unknown_field)["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(unknown_field)
    scaled = copy.deepcopy(next(iter(of_kind("ScaledObject").values())))
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 2  # KEDA's metadata is strings only
    with pytest.raises(jsonschema.ValidationError):
        _validate(scaled)
    del scaled["spec"]["triggers"][0]["metadata"]["consumer"]
    with pytest.raises(jsonschema.ValidationError):
        _validate(scaled)


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    assert sorted(listed) == sorted(p.name for p in k8s_files())


def _generated_secrets() -> dict[str, list[str]]:
    """Secret name -> the files kustomize makes it from."""
    made = {}
    for generator in kustomization()["secretGenerator"]:
        sources = [entry.split("=", 1)[-1] for entry in generator.get("files", [])] + generator.get("envs", [])
        made[generator["name"]] = sources
    return made


def test_nats_secrets_come_from_what_i2v_stack_nats_auth_writes(tmp_path: Path) -> None:
    write_nats_auth(tmp_path)
    written = {p.name for p in tmp_path.iterdir()}
    for sources in _generated_secrets().values():
        for source in sources:
            if source.startswith("secrets/nats/"):
                assert source.removeprefix("secrets/nats/") in written, f"`i2v stack nats-auth` writes no {source}"


def test_other_secrets_have_an_example_of_settings_the_code_reads() -> None:
    for name, sources in _generated_secrets().items():
        for source in sources:
            if source.startswith("secrets/nats/"):
                continue
            example = K8S / f"{source}.example"
            assert example.is_file(), f"Secret {name}: no {example.name} to copy {source} from"
            keys = env_file_names(example)
            assert keys, f"{example.name} sets nothing"
            assert set(keys) <= SETTING_NAMES, f"{example.name}: not settings: {set(keys) - SETTING_NAMES}"
            assert "REPLACE_ME" in example.read_text(), f"{example.name}: placeholders must say REPLACE_ME"
    ignore = (K8S / "secrets" / ".gitignore").read_text().split("\n")
    assert "*" in ignore and "!*.example" in ignore, "k8s/secrets/ must keep all but the examples out of git"


def test_every_reference_names_something_the_kustomization_makes() -> None:
    secrets = set(_generated_secrets())
    config_maps = set(of_kind("ConfigMap"))
    claims = set(of_kind("PersistentVolumeClaim"))
    for file, doc in k8s_documents():
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        spec = pod_spec(doc)
        for source in container(doc).get("envFrom", []):
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets, f"{file}: no Secret {source['secretRef']['name']}"
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in config_maps, f"{file}: {source}"
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, f"{file}: {volume}"
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, f"{file}: {volume}"
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{file}: {volume}"


def test_every_setting_named_is_one_the_code_reads() -> None:
    names = list(k8s_env_names())
    assert names
    unknown = [f"{where}: {name}" for where, name in names if name.startswith("I2V_") and name not in SETTING_NAMES]
    assert not unknown, unknown
    config = [name for where, name in names if "i2v-config" in where]
    assert config and all(name.startswith("I2V_") for name in config), config


def test_every_service_has_a_deployment_as_its_own_nats_user() -> None:
    deployments = service_deployments()
    assert sorted(deployments) == sorted(SERVICE_NAMES)
    for name, deployment in deployments.items():
        refs = [s["secretRef"]["name"] for s in container(deployment)["envFrom"] if "secretRef" in s]
        nats = [ref for ref in refs if ref.startswith("i2v-nats-")]
        assert nats == [f"i2v-nats-{name}"], f"{name} connects as {nats}"
        assert name in USERS
    streams_job = of_kind("Job")["declare-streams"]
    assert container(streams_job)["args"] == ["stack", "streams"]
    assert {"secretRef": {"name": f"i2v-nats-{ADMIN}"}} in container(streams_job)["envFrom"]


def _secret_settings(workload: Doc) -> set[str]:
    """The I2V_* names a workload gets from the Secrets kustomize generates from *.env.example files."""
    made = _generated_secrets()
    names: set[str] = set()
    for source in container(workload).get("envFrom", []):
        for file in made.get(source.get("secretRef", {}).get("name", ""), []):
            example = K8S / f"{file}.example"
            names |= set(env_file_names(example)) if example.is_file() else {"I2V_NATS_USER", "I2V_NATS_PASSWORD"}
    return names


def test_each_service_gets_exactly_the_credentials_it_needs() -> None:
    for name, deployment in service_deployments().items():
        got = _secret_settings(deployment)
        assert got >= EVERYONE | NEEDS[name], f"{name} lacks {(EVERYONE | NEEDS[name]) - got}"
        assert not (got & SECRET_SETTINGS) - NEEDS[name], f"{name} gets {(got & SECRET_SETTINGS) - NEEDS[name]}"


def test_gpus_go_to_latent_and_decode_only() -> None:
    for name, deployment in service_deployments().items():
        resources = container(deployment)["resources"]
        gpus = resources.get("limits", {}).get("nvidia.com/gpu")
        assert (gpus == 1) == (name in GPU_SERVICES), f"{name}: nvidia.com/gpu {gpus}"


def test_probes_ask_the_health_endpoints_on_the_metrics_port() -> None:
    config = of_kind("ConfigMap")["i2v-config"]["data"]
    port = int(config["I2V_METRICS_PORT"])
    assert config["I2V_METRICS_HOST"] == "0.0.0.0", "the kubelet probes the pod's address, not its loopback"
    for name, deployment in service_deployments().items():
        settings = settings_from(k8s_environment(deployment))
        assert (settings.metrics_port, settings.metrics_host) == (port, "0.0.0.0"), f"{name} serves no probes"
        main = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        assert ports[METRICS_PORT_NAME] == port, name
        assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": METRICS_PORT_NAME}, name
        assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": METRICS_PORT_NAME}, name


def test_the_gateway_runs_twice_behind_a_service_and_disruption_budgets() -> None:
    gateway = service_deployments()["gateway"]
    assert gateway["spec"]["replicas"] == 2
    service = of_kind("Service")["gateway"]
    assert service["spec"]["selector"] == gateway["spec"]["selector"]["matchLabels"]
    env = {e["name"]: e["value"] for e in container(gateway)["env"]}
    http = {p["name"]: p["containerPort"] for p in container(gateway)["ports"]}["http"]
    assert int(env["I2V_GATEWAY_PORT"]) == http and env["I2V_GATEWAY_HOST"] == "0.0.0.0"
    budgets = {
        doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for doc in of_kind("PodDisruptionBudget").values()
    }
    assert {"gateway", "latent", "nats"} <= budgets


def test_keda_scales_the_gpu_stages_on_their_durable_consumers_of_the_work_stream() -> None:
    scaled_objects = of_kind("ScaledObject")
    deployments = service_deployments()
    by_deployment = {doc["metadata"]["name"]: service for service, doc in deployments.items()}
    scaled = {by_deployment[doc["spec"]["scaleTargetRef"]["name"]] for doc in scaled_objects.values()}
    assert scaled == GPU_SERVICES
    nats = of_kind("StatefulSet")["nats"]
    headless = of_kind("Service")[nats["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    monitor = {p["name"]: p["port"] for p in headless["spec"]["ports"]}["monitor"]
    namespace = kustomization()["namespace"]
    for doc in scaled_objects.values():
        service = by_deployment[doc["spec"]["scaleTargetRef"]["name"]]
        assert "replicas" not in deployments[service]["spec"], f"the ScaledObject owns {service}'s replicas"
        (trigger,) = doc["spec"]["triggers"]
        meta = trigger["metadata"]
        assert meta["stream"] == WORK_STREAM
        assert meta["consumer"] == durable_name(Stage(service))
        assert meta["account"] == "$G", "nats-auth.conf's users belong to no account: NATS's global one"
        # In a cluster KEDA asks the consumer's leader at <server name>.<endpoint>: the headless Service
        # of the StatefulSet whose pod names are the server names, in the kustomization's namespace.
        endpoint = f"{headless['metadata']['name']}.{namespace}.svc.cluster.local:{monitor}"
        assert meta["natsServerMonitoringEndpoint"] == endpoint
    assert "server_name: $POD_NAME" in of_kind("ConfigMap")["nats-config"]["data"]["nats.conf"]


def test_nats_is_three_routed_jetstream_servers_with_their_own_volumes() -> None:
    nats = of_kind("StatefulSet")["nats"]
    replicas = nats["spec"]["replicas"]
    assert replicas == 3
    conf = of_kind("ConfigMap")["nats-config"]["data"]["nats.conf"]
    # Routes, fsync and the route login: tests/deploy/test_nats.py runs this configuration.
    assert "jetstream" in conf and "store_dir: /data/jetstream" in conf
    assert "include ./auth/nats-auth.conf" in conf
    (claim,) = nats["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container(nats)["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    assert mounts["auth"] == "/etc/nats/auth"


def test_only_nats_servers_reach_the_route_port_and_only_i2v_pods_the_client_port() -> None:
    policy = of_kind("NetworkPolicy")["nats"]
    nats = of_kind("StatefulSet")["nats"]
    assert policy["spec"]["podSelector"]["matchLabels"] == nats["spec"]["selector"]["matchLabels"]
    allowed = {rule["ports"][0]["port"]: rule["from"][0] for rule in policy["spec"]["ingress"]}
    assert allowed[6222] == {"podSelector": {"matchLabels": nats["spec"]["selector"]["matchLabels"]}}
    clients = allowed[4222]["podSelector"]["matchLabels"]
    for file, doc in k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert clients.items() <= labels.items(), f"{file}: {doc['metadata']['name']} could not reach NATS"
    assert set(allowed) == {6222, 4222, 8222}


def test_the_gateways_share_one_jobs_index_in_postgresql() -> None:
    gateway = service_deployments()["gateway"]
    env = dict(of_kind("ConfigMap")["i2v-config"]["data"])
    made = _generated_secrets()
    for source in container(gateway)["envFrom"]:
        for file in made.get(source.get("secretRef", {}).get("name", ""), []):
            example = K8S / f"{file}.example"
            if example.is_file():
                env |= dict(line.split("=", 1) for line in example.read_text().splitlines() if line[:1].isalpha())
    env |= {item["name"]: item["value"] for item in container(gateway)["env"]}
    assert settings_from(env).resolved_index_dsn().startswith("postgresql://"), "each gateway would index alone"


def _client_port(nats: Doc) -> int:
    (port,) = [p["containerPort"] for p in container(nats)["ports"] if p["name"] == "client"]
    conf = of_kind("ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert f"\nport: {port}\n" in f"\n{conf}", "the client port the pods expose is not the one the servers use"
    return int(port)


def test_every_client_lists_every_nats_pod_and_keeps_streams_on_all() -> None:
    nats = of_kind("StatefulSet")["nats"]
    replicas = nats["spec"]["replicas"]
    name, headless = nats["metadata"]["name"], nats["spec"]["serviceName"]
    every_pod = [f"nats://{name}-{ordinal}.{headless}:{_client_port(nats)}" for ordinal in range(replicas)]
    clients = k8s_clients()
    assert "declare-streams" in clients and len(clients) == len(SERVICE_NAMES) + 1
    for workload, doc in clients.items():
        settings = settings_from(k8s_environment(doc))
        assert nats_servers(settings.nats_url) == every_pod, f"{workload}: I2V_NATS_URL {settings.nats_url}"
        # Every process checks the streams' replicas at start: one count for all, one copy per server.
        assert settings.stream_replicas == replicas, f"{workload}: I2V_STREAM_REPLICAS {settings.stream_replicas}"


def test_each_compute_stage_has_as_many_threads_as_cpus_it_requests() -> None:
    budgeted = set(SHARE_WEIGHTS) | ONE_THREAD
    assert budgeted <= set(SERVICE_NAMES)
    for service, deployment in service_deployments().items():
        env = k8s_environment(deployment)
        if service not in budgeted:
            assert "I2V_THREADS" not in env, f"{service} runs no compute pool: nothing reads I2V_THREADS"
            continue
        # Without it a pod takes a thread per core of its node, however few it requested.
        assert "I2V_THREADS" in env, f"{service} has no I2V_THREADS"
        threads = service_threads(settings_from(env), service)
        assert threads == cpu_request(deployment), (
            f"{service}: {threads} threads, CPU request {cpu_request(deployment)}"
        )


def test_webhooks_go_to_public_addresses_and_are_retried_within_the_events_kept() -> None:
    deployments = service_deployments()
    for service in ("webhooks", "gateway"):
        settings = settings_from(k8s_environment(deployments[service]))
        assert settings.webhook_allow_private is False, f"{service} would send webhooks into the private network"
    webhooks = deployments["webhooks"]
    settings = settings_from(k8s_environment(webhooks))
    assert EVENTS.max_age is not None and settings.webhook_retry_hours * 3600 < EVENTS.max_age
    assert settings.resolved_ledger_dsn().startswith("postgresql://"), "the secrets and delivery log are in the ledger"
    # A POST in flight may finish before the pod is killed.
    assert pod_spec(webhooks)["terminationGracePeriodSeconds"] > settings.webhook_timeout_s
