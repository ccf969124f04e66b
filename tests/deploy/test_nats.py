"""The NATS cluster of compose.yaml and of k8s/: each node's configuration run for real, three nodes of the
wheel's nats-server on loopback with the login files `i2v stack nats-auth` writes, to see JetStream fsync
before acknowledging and routes log in as the `route` user; and the route URLs each deployment gives its
nodes, which name every node and carry that login."""

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.nats_server import find_nats_server_binary
from infra.ports import LOOPBACK, free_ports
from services.stack.nats_auth import ROUTE, write_nats_auth
from tests.deploy.manifests import DEPLOY, Doc, compose, container, generated_secrets, kustomization, of_kind

pytestmark = pytest.mark.integration

_WAIT_S = 30.0
_STORE_DIR = "store_dir: /data/jetstream"
_CLUSTER_PORT = "port: 6222"
_CONFIG_IN_CONTAINER = "/etc/nats/nats.conf"
_ROUTE_VARIABLE = re.compile(r"^\s*\$(NATS_ROUTE_\w+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^\s*include\s+(\S+)\s*$", re.MULTILINE)
_K8S_REFERENCE = re.compile(r"\$\((\w+)\)")


@dataclass(frozen=True)
class Deployment:
    """One shape's NATS cluster as its manifests give it: the configuration every node runs, each node's
    server name, and the environment (route URLs included) each node's process gets."""

    name: str
    config: str
    nodes: dict[str, dict[str, str]]
    """Server name -> the variables its process gets that the configuration reads."""
    included: dict[str, str]
    """File a configuration includes (as written in it) -> the file of `i2v stack nats-auth` mounted there."""
    hosts: dict[str, str]
    """Server name -> the host name the other nodes reach it at."""


def _route_login(folder: Path) -> dict[str, str]:
    lines = (folder / f"{ROUTE}.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def _compose(auth: Path, tmp_path: Path) -> Deployment:
    """The compose nodes: each one's environment as its entrypoint's shell line leaves it for nats-server
    (run by a real `sh`, with nats-server replaced by a script that records what it was given)."""
    services = compose()["services"]
    nodes = {name: s for name, s in services.items() if str(s.get("image", "")).startswith("nats:")}
    recorder = tmp_path / "bin" / "nats-server"
    recorder.parent.mkdir()
    recorder.write_text('#!/bin/sh\nenv > "$RECORD.env"\necho "$@" > "$RECORD.args"\n')
    recorder.chmod(0o755)
    environments: dict[str, dict[str, str]] = {}
    mounts: dict[str, dict[str, str]] = {}
    for name, node in nodes.items():
        assert node["entrypoint"] == ["/bin/sh", "-c"], name
        (line,) = node["command"]
        given = dict(node["environment"])
        for file in node["env_file"]:
            assert file == f"secrets/nats/{ROUTE}.env", f"{name} reads {file}"
            given |= _route_login(auth)
        record = tmp_path / name
        # Compose writes $ as $$ in a command.
        env = {"PATH": f"{recorder.parent}:/usr/bin:/bin", "RECORD": str(record), **given}
        subprocess.run(["/bin/sh", "-c", line.replace("$$", "$")], env=env, check=True, timeout=10)
        assert record.with_suffix(".args").read_text().split() == ["--config", _CONFIG_IN_CONTAINER], name
        lines = record.with_suffix(".env").read_text().splitlines()
        environments[name] = dict(item.split("=", 1) for item in lines if "=" in item)
        mounts[name] = {v.split(":")[1]: v.split(":")[0] for v in node["volumes"] if v.startswith("./")}
    # Every node mounts the same files at the same places, the configuration among them.
    kinds = {tuple(sorted(m.items())) for m in mounts.values()}
    assert len(kinds) == 1, f"the nodes mount different files: {mounts}"
    by_target = dict(kinds.pop())
    config = (DEPLOY / by_target.pop(_CONFIG_IN_CONTAINER).removeprefix("./")).read_text()
    included = {f"./{Path(target).relative_to('/etc/nats')}": source for target, source in by_target.items()}
    hosts = {name: node["hostname"] for name, node in nodes.items()}
    return Deployment("compose", config, environments, included, hosts)


def _k8s(auth: Path) -> Deployment:
    """The StatefulSet's pods: each one's environment as the kubelet makes it (a Secret's keys from the
    files kustomize reads, the pod's name, then each $(VAR) of a later value expanded)."""
    nats = of_kind("StatefulSet")["nats"]
    config_volume, auth_volume = _nats_volumes(nats)
    config = of_kind("ConfigMap")[config_volume]["data"]["nats.conf"]
    secrets = generated_secrets()
    environments, hosts = {}, {}
    for ordinal in range(nats["spec"]["replicas"]):
        pod = f"{nats['metadata']['name']}-{ordinal}"
        env: dict[str, str] = {}
        for item in container(nats)["env"]:
            source = item.get("valueFrom", {})
            if "fieldRef" in source:
                assert source["fieldRef"]["fieldPath"] == "metadata.name", item
                env[item["name"]] = pod
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                (file,) = secrets[ref["name"]]
                assert file == f"secrets/nats/{ROUTE}.env", f"{item['name']} from {file}: only the route's login"
                env[item["name"]] = _route_login(auth)[ref["key"]]
            else:
                env[item["name"]] = _expand(item["value"], env)
        environments[pod] = env
        hosts[pod] = f"{pod}.{nats['spec']['serviceName']}"
    (generator,) = [g for g in kustomization()["secretGenerator"] if g["name"] == auth_volume]
    mount = {m["name"]: m["mountPath"] for m in container(nats)["volumeMounts"]}
    assert mount["config"] == _CONFIG_IN_CONTAINER
    assert container(nats)["args"] == ["--config", _CONFIG_IN_CONTAINER]
    folder = Path(mount["auth"]).relative_to("/etc/nats")
    included = {f"./{folder}/{key}": source for key, source in (f.split("=", 1) for f in generator["files"])}
    return Deployment("k8s", config, environments, included, hosts)


def _expand(value: str, earlier: dict[str, str]) -> str:
    """Kubernetes' $(VAR) in an env value: the variable's value when defined earlier, else left as written."""
    return _K8S_REFERENCE.sub(lambda m: earlier.get(m.group(1), m.group(0)), value)


def _nats_volumes(nats: Doc) -> tuple[str, str]:
    """The ConfigMap mounted as the configuration and the Secret mounted as ``auth``."""
    volumes = {v["name"]: v for v in nats["spec"]["template"]["spec"]["volumes"]}
    return volumes["config"]["configMap"]["name"], volumes["auth"]["secret"]["secretName"]


@pytest.fixture(params=["compose", "k8s"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Deployment, Path]:
    auth = tmp_path / "secrets" / "nats"
    write_nats_auth(auth)
    shape = _compose(auth, tmp_path) if request.param == "compose" else _k8s(auth)
    return shape, auth


def _host_of(url: str) -> str:
    match = re.fullmatch(r"nats-route://([^:@/]+):([^@/]+)@([^:/]+):(\d+)", url)
    assert match, f"not a route URL with a login: {url}"
    return match.group(3)


def test_each_node_routes_to_every_node_logging_in_as_the_route_user(deployment: tuple[Deployment, Path]) -> None:
    shape, auth = deployment
    login = _route_login(auth)
    variables = _ROUTE_VARIABLE.findall(shape.config)
    assert len(variables) == len(shape.nodes), f"{shape.name}: routes {variables} for {len(shape.nodes)} nodes"
    for name, env in shape.nodes.items():
        urls = [env[variable] for variable in variables]
        hosts = [_host_of(url) for url in urls]
        assert sorted(hosts) == sorted(shape.hosts.values()), f"{shape.name} {name}: routes to {hosts}"
        for url in urls:
            assert url.startswith(f"nats-route://{login['NATS_ROUTE_USER']}:{login['NATS_ROUTE_PASSWORD']}@")
            assert url.endswith(":6222"), url
    # The files the configuration includes are those `i2v stack nats-auth` writes, the route's among them.
    included = _INCLUDE.findall(shape.config)
    assert sorted(included) == sorted(shape.included), f"{shape.name}: includes {included}, mounts {shape.included}"
    for source in shape.included.values():
        assert (auth / Path(source).name).is_file(), f"`i2v stack nats-auth` writes no {source}"
    assert any(Path(source).name == "nats-route-auth.conf" for source in shape.included.values())


@dataclass
class _Node:
    name: str
    client: int
    cluster: int
    monitor: int
    log: Path


def _monitor(node: _Node, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{node.monitor}{path}", timeout=2) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return json.loads(refused.read())


def _until_healthy(nodes: list[_Node]) -> None:
    deadline = time.monotonic() + _WAIT_S
    for node in nodes:
        while True:
            try:
                if _monitor(node, "/healthz").get("status") == "ok":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{node.name} not healthy: {node.log.read_text()[-2000:]}"
            time.sleep(0.1)


@pytest.fixture
def running(deployment: tuple[Deployment, Path], tmp_path: Path) -> Iterator[tuple[Deployment, list[_Node]]]:
    """The deployment's three nodes on loopback: its configuration and its nodes' environments as they are,
    but for the store folder, the cluster's listening address and, in each route URL, the address of the
    node it names. (The cluster port cannot come from the command line: nats-server's --cluster_listen
    drops the cluster's authorization.)"""
    shape, auth = deployment
    assert shape.config.count(_STORE_DIR) == 1 and shape.config.count(_CLUSTER_PORT) == 1
    names = sorted(shape.nodes)
    ports = free_ports(3 * len(names))
    nodes = [
        _Node(name, ports[3 * i], ports[3 * i + 1], ports[3 * i + 2], tmp_path / f"{name}.log")
        for i, name in enumerate(names)
    ]
    cluster_port = {shape.hosts[node.name]: node.cluster for node in nodes}
    folder = tmp_path / "config"
    (folder / "auth").mkdir(parents=True)
    for written, source in shape.included.items():
        (folder / written).write_bytes((auth / Path(source).name).read_bytes())
    binary = find_nats_server_binary()
    with ExitStack() as stack:
        for node in nodes:
            config = folder / f"{node.name}.conf"
            text = shape.config.replace(_STORE_DIR, f"store_dir: {tmp_path / node.name}")
            config.write_text(text.replace(_CLUSTER_PORT, f'listen: "{LOOPBACK}:{node.cluster}"'))
            env = {}
            for key, value in shape.nodes[node.name].items():
                if key.startswith("NATS_ROUTE_") and value.startswith("nats-route://"):
                    host = _host_of(value)
                    value = value.replace(f"@{host}:6222", f"@{LOOPBACK}:{cluster_port[host]}")
                env[key] = value
            # Client and monitoring ports from the command line, over the configuration's.
            command = [
                str(binary), "--config", str(config), "--addr", LOOPBACK, "--port", str(node.client),
                "--http_port", str(node.monitor), "--log", str(node.log),
            ]  # fmt: skip
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            stack.callback(_stop, process)
        _until_healthy(nodes)
        yield shape, nodes


def _stop(process: "subprocess.Popen[bytes]") -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_the_nodes_form_one_cluster_and_fsync_every_jetstream_write(
    running: tuple[Deployment, list[_Node]],
) -> None:
    shape, nodes = running
    names = {node.name for node in nodes}
    for node in nodes:
        remote = {route["remote_name"] for route in _monitor(node, "/routez")["routes"]}
        assert remote == names - {node.name}, f"{shape.name} {node.name} routes to {remote}"
        assert _monitor(node, "/jsz")["meta_cluster"]["cluster_size"] == len(nodes)
        # sync_interval: always; the server's default fsyncs every 2 minutes.
        assert _monitor(node, "/varz")["jetstream"]["config"].get("sync_always") is True, f"{shape.name} {node.name}"


def test_a_route_without_the_login_is_refused(running: tuple[Deployment, list[_Node]], tmp_path: Path) -> None:
    shape, nodes = running
    target = nodes[0]
    intruder = tmp_path / "intruder.conf"
    intruder.write_text(
        'server_name: "intruder"\n'
        f'cluster {{ name: "i2v", listen: "{LOOPBACK}:-1", routes: ["nats-route://{LOOPBACK}:{target.cluster}"] }}\n'
    )
    command = [str(find_nats_server_binary()), "--config", str(intruder), "--addr", LOOPBACK, "--port", "-1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + _WAIT_S
        while "authentication error" not in target.log.read_text():
            assert time.monotonic() < deadline, f"{shape.name}: {target.name} took a route that gave no login"
            time.sleep(0.1)
        remote = {route["remote_name"] for route in _monitor(target, "/routez")["routes"]}
    finally:
        _stop(process)
    assert "intruder" not in remote
