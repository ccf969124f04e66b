"""The embedded stack on a 3-node nats-server cluster: every client given all three URLs, the streams on
three nodes, a node killed with -9 restarted by the supervisor, and a tiny job run to the end."""

import asyncio
import os
import signal
import time
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamInfo

from contracts.messages import JobCompleted
from contracts.params import GenerationParams
from contracts.subjects import CANCEL_BUCKET, DLQ_STREAM, EVENTS_STREAM, WORK_STREAM
from infra.nats_cluster import NatsCluster
from services.bus.connection import nats_options, nats_servers
from services.stack.embedded import SERVICES, EmbeddedStack
from services.stack.nats_auth import ADMIN
from services.stack.state_file import read_stack_file
from tests.stacks import HARBOR, job_client

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


STREAMS = (WORK_STREAM, EVENTS_STREAM, DLQ_STREAM, f"KV_{CANCEL_BUCKET}")


async def _led(js: JetStreamContext, name: str) -> StreamInfo | None:
    """The stream's info when it has a leader and every replica is current, else None."""
    try:
        info = await js.stream_info(name)
    except nats.errors.TimeoutError:
        return None
    cluster = info.cluster
    current = cluster is not None and bool(cluster.leader) and all(peer.current for peer in cluster.replicas or [])
    return info if current else None


async def _replicas(stack: EmbeddedStack) -> dict[str, int]:
    """Each stream's replica count, once every stream has a leader and its replicas are current: a stream
    whose leader was on a killed node answers nothing until the others elect one (up to ~10 s)."""
    settings = stack.settings_as(ADMIN)
    nc = await nats.connect(nats_servers(settings.nats_url), **nats_options(settings))
    deadline = time.monotonic() + 60
    try:
        js = nc.jetstream(timeout=2.0)
        replicas = {}
        for name in STREAMS:
            while (info := await _led(js, name)) is None:
                assert time.monotonic() < deadline, f"{name} has no leader or a replica behind"
                await asyncio.sleep(0.2)
            replicas[name] = info.config.num_replicas or 1
        return replicas
    finally:
        await nc.close()


async def _run_job(stack: EmbeddedStack) -> object:
    async with job_client(stack) as client:
        job = await client.submit(HARBOR.read_bytes(), GenerationParams(steps=2, duration=1, seed=7), "local")
        deadline = time.monotonic() + 240
        while (history := await client.history(job.job_id)).terminal is None:
            assert time.monotonic() < deadline, f"job {job.job_id} still running"
            await asyncio.sleep(0.5)
        return history.terminal


def test_a_three_node_stack_runs_a_job_and_restarts_a_killed_node(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with EmbeddedStack(state, services=SERVICES, nats_nodes=3) as stack:
        assert isinstance(stack.nats, NatsCluster)
        urls = stack.nats.urls
        # Every client, the services and the `i2v` commands alike, is given all three nodes.
        recorded = read_stack_file(state)
        assert recorded is not None
        assert nats_servers(recorded["I2V_NATS_URL"]) == urls and len(set(urls)) == 3
        assert recorded["I2V_STREAM_REPLICAS"] == "3"
        child = _environ_of(stack.pid("billing"))
        assert (child["I2V_NATS_URL"], child["I2V_STREAM_REPLICAS"]) == (stack.nats.url, "3")
        assert asyncio.run(_replicas(stack)) == dict.fromkeys(STREAMS, 3)

        node = stack.nats.nodes[1]
        crashed_pid = node.pid
        assert crashed_pid is not None
        os.kill(crashed_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while node.pid in (None, crashed_pid):
            assert time.monotonic() < deadline, "the supervisor did not restart the killed node"
            stack.supervise()
            time.sleep(0.2)
        assert node.url == urls[1]  # back on its own port, where every client looks for it
        # It catches up, and the streams it led have leaders again.
        stack.nats.wait_healthy(60)
        assert asyncio.run(_replicas(stack)) == dict.fromkeys(STREAMS, 3)

        assert isinstance(asyncio.run(_run_job(stack)), JobCompleted)
    assert not any(node.running for node in stack.nats.nodes)
