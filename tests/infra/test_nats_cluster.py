"""A 3-node nats-server cluster from the wheel on loopback: routes that log in, streams on three nodes, a
leader killed with -9 while a client with every node's URL keeps publishing, and the node catching up."""

import asyncio
import json
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from contracts.params import GenerationParams
from contracts.subjects import CANCEL_BUCKET, DLQ_STREAM, EVENTS_STREAM, WORK_STREAM
from infra import nats_cluster
from infra.nats_cluster import NatsCluster
from infra.nats_server import NatsServer
from infra.objectstore import MemoryObjectStore
from infra.ports import free_ports
from services.bus.connection import nats_servers
from services.bus.streams import StreamReplicasError, ensure_streams
from services.config import settings_from
from services.jobclient import JobClient

pytestmark = pytest.mark.integration

_WAIT_S = 30.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "cluster", 3) as running:
        yield running


def _monitor(node: NatsServer, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{node.host}:{node.monitor_port}{path}", timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for a cluster to settle (an election, a catch-up); fails naming ``what`` after 30 s."""
    deadline = time.monotonic() + _WAIT_S
    while not await check():
        assert time.monotonic() < deadline, f"not within {_WAIT_S:.0f}s: {what}"
        await asyncio.sleep(0.1)


async def _replicas_current(js: JetStreamContext, stream: str, peers: int) -> bool:
    cluster = (await js.stream_info(stream)).cluster
    return bool(
        cluster
        and cluster.leader
        and len(cluster.replicas or []) == peers
        and all(peer.current for peer in cluster.replicas or [])
    )


async def _has_leader(js: JetStreamContext, stream: str) -> bool:
    try:
        cluster = (await js.stream_info(stream)).cluster
    except nats.errors.Error:  # no leader to answer yet
        return False
    return bool(cluster and cluster.leader)


def test_route_urls_into_the_config_and_each_node_routes_to_the_other_two(cluster: NatsCluster) -> None:
    names = cluster.server_names
    for node, name in zip(cluster.nodes, names, strict=True):
        routez = _monitor(node, "/routez")
        assert {route["remote_name"] for route in routez["routes"]} == set(names) - {name}
        meta = _monitor(node, "/jsz")["meta_cluster"]
        assert meta["cluster_size"] == 3 and meta["leader"] in names
        # Every JetStream write is on disk before it is acknowledged.
        assert _monitor(node, "/varz")["jetstream"]["config"]["sync_always"] is True
    # Every port the node uses is set in its own configuration, and routes log in.
    config = cluster.nodes[0].config_path.read_text()
    assert f'listen: "127.0.0.1:{cluster._cluster_ports[0]}"' in config
    assert 'authorization { user: "route"' in config
    assert config.count(f"nats-route://route:{cluster.route_auth.password}@") == 2


def test_a_cluster_port_taken_before_its_node_starts_gives_a_fresh_start_on_other_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process holds the port picked for the last node's routes (it took it while the first two
    # nodes started): that node cannot listen, and the cluster begins again on fresh ports.
    taken = socket.create_server(("127.0.0.1", 0))
    taken_port = taken.getsockname()[1]
    picks: list[list[int]] = []

    def first_pick_taken(n: int, host: str) -> list[int]:
        ports = free_ports(n, host)
        if not picks:
            ports[-1] = taken_port
        picks.append(ports)
        return ports

    monkeypatch.setattr(nats_cluster, "free_ports", first_pick_taken)
    with taken, NatsCluster(tmp_path / "cluster", 3) as cluster:
        assert len(picks) == 2 and taken_port not in cluster._cluster_ports
        assert "Error listening on router port" not in cluster.nodes[2].log_path.read_text()
        for node in cluster.nodes:
            assert _monitor(node, "/jsz")["meta_cluster"]["cluster_size"] == 3


def test_a_route_without_the_password_is_refused(cluster: NatsCluster, tmp_path: Path) -> None:
    target = cluster.nodes[0]
    port = cluster._cluster_ports[0]
    intruder_config = (
        'server_name: "intruder"\n'
        f'cluster {{ name: "i2v", listen: "127.0.0.1:-1", routes: ["nats-route://route:guess@127.0.0.1:{port}"] }}\n'
    )
    with NatsServer(tmp_path / "intruder", config=intruder_config):
        deadline = time.monotonic() + _WAIT_S
        while "authentication error" not in target.log_path.read_text():
            assert time.monotonic() < deadline, "the node never refused the intruder's route"
            time.sleep(0.1)
        remote = {route["remote_name"] for route in _monitor(target, "/routez")["routes"]}
    assert "intruder" not in remote and len(remote) == 2


async def test_streams_get_replicas_from_the_setting_and_are_rescaled(cluster: NatsCluster) -> None:
    settings = settings_from({"I2V_NATS_URL": cluster.url, "I2V_STREAM_REPLICAS": "3"})
    nc = await nats.connect(nats_servers(settings.nats_url))
    try:
        js = nc.jetstream()
        await ensure_streams(js)  # one copy, as on a single server
        assert (await js.stream_info(WORK_STREAM)).config.num_replicas == 1
        await ensure_streams(js, settings.stream_replicas)
        for stream in (WORK_STREAM, EVENTS_STREAM, DLQ_STREAM, f"KV_{CANCEL_BUCKET}"):
            info = await js.stream_info(stream)
            assert info.config.num_replicas == 3, stream
            await _until(lambda s=stream: _replicas_current(js, s, 2), f"{stream} on three current nodes")  # type: ignore[misc]
    finally:
        await nc.close()


async def test_a_single_server_refuses_three_replicas_in_one_line(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as server:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            with pytest.raises(StreamReplicasError) as refused:
                await ensure_streams(js, 3)
        finally:
            await nc.close()
    message = str(refused.value)
    assert "\n" not in message
    assert "I2V_STREAM_REPLICAS=3" in message and "set I2V_STREAM_REPLICAS=1" in message


async def test_killing_the_leader_loses_no_acked_write_and_the_node_catches_up(cluster: NatsCluster) -> None:
    nc = await nats.connect(cluster.urls, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
    try:
        js = nc.jetstream(timeout=2.0)
        await js.add_stream(
            StreamConfig(name="LEDGER", subjects=["ledger.>"], storage=StorageType.FILE, num_replicas=3)
        )
        await _until(lambda: _replicas_current(js, "LEDGER", 2), "LEDGER on three current nodes")

        async def publish(i: int) -> None:
            """Until acked: a publish lost in the election is sent again under the same id, stored once."""
            while True:
                try:
                    await js.publish("ledger.charge", f"charge {i}".encode(), headers={"Nats-Msg-Id": f"c{i}"})
                    return
                except (nats.errors.TimeoutError, nats.errors.Error):
                    await asyncio.sleep(0.1)

        for i in range(50):
            await publish(i)
        before = await js.stream_info("LEDGER")
        assert before.cluster is not None and before.cluster.leader
        leader = cluster.nodes[cluster.server_names.index(before.cluster.leader)]
        leader.kill()

        for i in range(50, 100):
            await publish(i)
        after = await js.stream_info("LEDGER")
        assert after.cluster is not None and after.cluster.leader not in (None, before.cluster.leader)
        assert after.state.messages == 100
        read = [(await js.get_msg("LEDGER", seq)).data for seq in range(1, 101)]
        assert read == [f"charge {i}".encode() for i in range(100)]

        assert cluster.revive() == [before.cluster.leader]
        await _until(lambda: _replicas_current(js, "LEDGER", 2), "the restarted node current again")

        async def caught_up() -> bool:
            jsz = await asyncio.to_thread(_monitor, leader, "/jsz?accounts=true&streams=true")
            streams = [s for account in jsz.get("account_details", []) for s in account.get("stream_detail", [])]
            return any(s["name"] == "LEDGER" and s["state"]["messages"] == 100 for s in streams)

        await _until(caught_up, "the restarted node holding all 100 messages")
    finally:
        await nc.close()


async def test_a_client_given_every_url_connects_past_a_node_that_is_down(cluster: NatsCluster) -> None:
    admin = await nats.connect(cluster.urls)
    try:
        js = admin.jetstream()
        await ensure_streams(js, 3)
        streams = (WORK_STREAM, EVENTS_STREAM, DLQ_STREAM, f"KV_{CANCEL_BUCKET}")
        for stream in streams:
            await _until(lambda s=stream: _replicas_current(js, s, 2), f"{stream} on three current nodes")  # type: ignore[misc]
        cluster.nodes[0].kill()
        for stream in streams:  # a stream whose leader was on the killed node elects another
            await _until(lambda s=stream: _has_leader(js, s), f"{stream} led again")  # type: ignore[misc]
    finally:
        await admin.close()
    # Tried in the order given: the first URL refuses, the next node takes the connection.
    client = await JobClient.connect(cluster.url, MemoryObjectStore(), replicas=3, dont_randomize=True)
    try:
        await client.submit(b"\x89PNG not really", GenerationParams(seed=1), "acct")
    finally:
        await client.close()
    check = await nats.connect(cluster.urls[1:])
    try:
        assert (await check.jetstream().stream_info(WORK_STREAM)).state.messages == 1  # JobSubmitted, on two nodes
    finally:
        await check.close()


def test_the_url_setting_takes_a_list_of_servers() -> None:
    assert nats_servers("nats://a:1") == ["nats://a:1"]
    assert nats_servers("nats://a:1, nats://b:2,nats://c:3") == ["nats://a:1", "nats://b:2", "nats://c:3"]
    with pytest.raises(ValueError, match="empty entry"):
        nats_servers("nats://a:1,,nats://b:2")


def test_only_a_server_that_died_on_its_own_counts_as_crashed(tmp_path: Path) -> None:
    """What the stack's supervisor restarts: never a server stopped, killed or restarted through its object."""
    with NatsServer(tmp_path / "nats") as server:
        assert not server.crashed
        server.kill()
        assert not server.crashed
        server.start()
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + _WAIT_S
        while not server.crashed:
            assert time.monotonic() < deadline, "the killed server still runs"
            time.sleep(0.05)
        server.restart()
        assert server.running and not server.crashed
