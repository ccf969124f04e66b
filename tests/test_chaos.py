"""Chaos on the cluster (issue 10): three nats-server nodes, two gateways, latent twice, the ledger and the
jobs index in one PostgreSQL database. Twelve jobs go in alternating between the gateways, each followed
over SSE; mid-batch the work stream's leader node is killed with -9 and started again 10 s later, some
followers move from one gateway to the other with Last-Event-ID, and then one gateway is killed with -9
while its followers are mid-stream, so they resume on the other. Every job completes exactly once with one
video, every account is charged once per job, the ledger reconciles, and every follower saw each of its
job's events exactly once, in order.

How things are killed: the nats-server node through the stack's own handle (``NatsServer.kill``, SIGKILL at
once, as a crash), which the supervisor treats as stopped on purpose and leaves down, so that the test holds
it down 10 s and starts it again itself on the same ports and data; the gateway by pid (``os.kill``,
SIGKILL), which the supervisor sees as a crash and restarts, as `i2v stack up` would."""

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import nats
import psycopg
import pytest

from contracts.messages import TERMINAL_TYPES, JobCompleted
from contracts.subjects import CANCEL_BUCKET, DLQ_STREAM, EVENTS_STREAM, WORK_STREAM
from infra.nats_cluster import NatsCluster
from infra.objectstore import minio_client
from services.billing.ledger import open_ledger
from services.bus.connection import nats_options, nats_servers
from services.gateway.auth import hash_api_key, new_api_key
from services.jobclient import JobHistory
from services.stack.embedded import SERVICES, EmbeddedStack
from services.stack.nats_auth import ADMIN
from tests.stacks import HARBOR, job_client, supervised_stack

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PG_SERVER = os.environ.get("I2V_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
JOBS = 12
ACCOUNTS = ("ada", "bo", "cy")
POINTS = 1000
# Small and quick: the tiny model, 1 s at 4 fps of 256x128 in 3 steps.
FIELDS = {"model": "tiny", "duration": "1", "fps": "4", "steps": "3", "resolution": "256x128"}
OUTAGE_S = 10.0
STREAMS = (WORK_STREAM, EVENTS_STREAM, DLQ_STREAM, f"KV_{CANCEL_BUCKET}")
# Longer than the gateway's 15 s SSE heartbeat: a stream that says nothing for this long is broken.
SSE_READ_S = 40.0
# A connection per request: the gateway closes a keep-alive connection idle 5 s, and a request sent on it
# as it closes is lost (the client's race, not the gateway's).
FRESH = httpx.Limits(max_keepalive_connections=0)


@pytest.fixture
def chaos_db() -> Iterator[str]:
    """A database of its own on the PostgreSQL server, for the ledger and the jobs index; dropped after."""
    name = f"i2v_chaos_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL unreachable at {PG_SERVER}: {exc}")
    parts = urlsplit(PG_SERVER)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@dataclass
class Follower:
    """One SSE client of one job: the events it was given, and each move from one gateway to the other."""

    job_id: str
    key: str
    gateway: int
    hop: bool
    """Leaves its gateway on purpose after two events and resumes on the other."""
    events: list[dict[str, str]] = field(default_factory=list)
    moves: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def last_id(self) -> str | None:
        return self.events[-1]["id"] if self.events else None


async def _sse(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The events of an SSE answer as they come (id, event, data); comments and ``retry`` skipped."""
    current: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "id" in current:
                yield current
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = value


async def _follow(follower: Follower, urls: list[str]) -> None:
    """Follow the job to its end, resuming on the other gateway with Last-Event-ID whenever the stream breaks
    (or, for a hopping follower, once on purpose)."""
    timeout = httpx.Timeout(10.0, read=SSE_READ_S)
    async with httpx.AsyncClient(timeout=timeout) as http:
        while not follower.done:
            headers = {"Authorization": f"Bearer {follower.key}"}
            if follower.last_id is not None:
                headers["Last-Event-ID"] = follower.last_id
            url = f"{urls[follower.gateway]}/v1/jobs/{follower.job_id}/events"
            why = "the stream ended before the job did"
            try:
                async with http.stream("GET", url, headers=headers) as response:
                    if response.status_code != 200:
                        why = f"HTTP {response.status_code}"
                    else:
                        async for event in _sse(response):
                            follower.events.append(event)
                            if event["event"] in TERMINAL_TYPES:
                                follower.done = True
                                break
                            if follower.hop and len(follower.events) == 2 and not follower.moves:
                                why = "hop"
                                break
            except httpx.TransportError as exc:
                why = f"{type(exc).__name__} on gateway {follower.gateway}"
            if not follower.done:
                follower.moves.append(why)
                follower.gateway = 1 - follower.gateway
                await asyncio.sleep(0.2)


async def _leaders(stack: EmbeddedStack) -> dict[str, str]:
    """Each stream's leader (a server name), once every stream has one."""
    settings = stack.settings_as(ADMIN)
    nc = await nats.connect(nats_servers(settings.nats_url), **nats_options(settings))
    try:
        js = nc.jetstream(timeout=2.0)
        leaders: dict[str, str] = {}
        deadline = time.monotonic() + 30
        for name in STREAMS:
            while True:
                with contextlib.suppress(nats.errors.Error):
                    cluster = (await js.stream_info(name)).cluster
                    if cluster is not None and cluster.leader:
                        leaders[name] = cluster.leader
                        break
                assert time.monotonic() < deadline, f"{name} has no leader"
                await asyncio.sleep(0.2)
        return leaders
    finally:
        await nc.close()


@dataclass
class Chaos:
    """What the chaos did, for the assertions and the failure messages."""

    leaders_before: dict[str, str] = field(default_factory=dict)
    killed_node: str = ""
    leaders_during: dict[str, str] = field(default_factory=dict)
    killed_gateway: int = -1
    cut_followers: list[str] = field(default_factory=list)


def _latent_started(follower: Follower) -> bool:
    return any(e["event"] == "StageStarted" and '"stage":"latent"' in e["data"] for e in follower.events)


async def _chaos(stack: EmbeddedStack, followers: list[Follower], chaos: Chaos) -> None:
    """Mid-batch: kill -9 the work stream leader's node, start it again 10 s later; then kill -9 a gateway
    that has followers mid-stream."""
    assert isinstance(stack.nats, NatsCluster)
    deadline = time.monotonic() + 240
    # 1. Mid-batch: both latents at work, most jobs still to come.
    while sum(_latent_started(f) for f in followers) < 2:
        assert time.monotonic() < deadline, "no two jobs reached latent"
        await asyncio.sleep(0.1)
    chaos.leaders_before = await _leaders(stack)
    chaos.killed_node = chaos.leaders_before[WORK_STREAM]
    node = stack.nats.nodes[stack.nats.server_names.index(chaos.killed_node)]
    node.kill()  # SIGKILL; the supervisor leaves a node killed through its handle down
    killed_at = time.monotonic()
    # The other two elect new leaders for what it led.
    chaos.leaders_during = await _leaders(stack)
    await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - killed_at)))
    await asyncio.to_thread(node.start)  # same ports, same data; it catches up from its peers
    await asyncio.to_thread(stack.nats.wait_healthy, 60)
    # 2. A gateway with followers mid-stream (a job started, not ended), killed by pid: the supervisor
    #    restarts it, and its followers resume on the other gateway.
    while True:
        mid = [f for f in followers if f.events and not f.done]
        victim = max((0, 1), key=lambda g: sum(f.gateway == g for f in mid))
        if any(f.gateway == victim for f in mid):
            break
        assert time.monotonic() < deadline, "no follower left mid-stream to cut"
        await asyncio.sleep(0.1)
    chaos.killed_gateway = victim
    # Nothing else runs between this and the kill: these are the followers it may cut.
    chaos.cut_followers = [f.job_id for f in followers if f.gateway == victim and not f.done]
    os.kill(stack.pid("gateway" if victim == 0 else f"gateway-{victim + 1}"), signal.SIGKILL)


def _accounts(dsn: str) -> dict[str, str]:
    """An API key for each account, each with ``POINTS`` points."""
    ledger = open_ledger(dsn)
    keys = {}
    for name in ACCOUNTS:
        keys[name] = new_api_key()
        ledger.create_account(name, POINTS, api_key_hash=hash_api_key(keys[name]))
    return keys


async def _batch(stack: EmbeddedStack, keys: dict[str, str]) -> tuple[list[Follower], list[dict[str, object]], Chaos]:
    urls = stack.gateway_urls
    image = HARBOR.read_bytes()
    followers: list[Follower] = []
    submitted: list[dict[str, object]] = []
    tasks = []
    async with httpx.AsyncClient(timeout=30.0, limits=FRESH) as http:
        for i in range(JOBS):
            gateway, account = i % 2, ACCOUNTS[i % len(ACCOUNTS)]
            answer = await http.post(
                f"{urls[gateway]}/v1/jobs",
                headers={"Authorization": f"Bearer {keys[account]}"},
                files={"image": ("harbor.png", image, "image/png")},
                data={**FIELDS, "seed": str(100 + i)},
            )
            assert answer.status_code == 202, answer.text
            job = answer.json()
            submitted.append({**job, "account": account})
            # A third of the followers move to the other gateway on purpose after two events.
            follower = Follower(job["id"], keys[account], gateway, hop=i % 3 == 0)
            followers.append(follower)
            tasks.append(asyncio.create_task(_follow(follower, urls)))
    chaos = Chaos()
    await asyncio.wait_for(_chaos(stack, followers, chaos), 300)
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    return followers, submitted, chaos


def test_a_batch_survives_the_work_stream_leader_and_a_gateway_killed(tmp_path: Path, chaos_db: str) -> None:
    env = {"I2V_LEDGER_DSN": chaos_db, "I2V_GATEWAY_MAX_ACTIVE_JOBS": str(JOBS)}
    with supervised_stack(
        tmp_path / "state",
        env,
        services=(*SERVICES, "gateway"),
        replicas={"latent": 2},
        nats_nodes=3,
        gateways=2,
    ) as stack:
        keys = _accounts(chaos_db)
        followers, submitted, chaos = asyncio.run(_batch(stack, keys))
        print(f"killed {chaos.killed_node} ({WORK_STREAM}'s leader): {chaos.leaders_before} -> {chaos.leaders_during}")
        survivor = stack.gateway_urls[1 - chaos.killed_gateway]
        _check_followers(followers, chaos, asyncio.run(_whole_histories(survivor, followers)))
        _check_jobs_and_books(stack, chaos_db, submitted)
        asyncio.run(_check_index(survivor, submitted, keys))


def _check_followers(followers: list[Follower], chaos: Chaos, wholes: list[list[dict[str, str]]]) -> None:
    """Every follower saw its job's whole history, each event once and in order, across its moves; it moved
    only on purpose (a hop) or when its gateway was killed under it."""
    assert chaos.leaders_during[WORK_STREAM] != chaos.killed_node, chaos
    for follower, whole in zip(followers, wholes, strict=True):
        # Up to the job's end: a command redelivered after it (its ack lost in the election) may still show
        # a stage starting again, which a stream read from the start shows too.
        ends = [i for i, e in enumerate(whole) if e["event"] in TERMINAL_TYPES]
        assert ends, (follower.job_id, whole)
        assert follower.events == whole[: ends[0] + 1], (follower.job_id, follower.moves)
        ids = [int(e["id"]) for e in follower.events]
        assert ids == sorted(set(ids)), follower.job_id
        assert follower.events[-1]["event"] == "JobCompleted", follower.job_id
        hops = [m for m in follower.moves if m == "hop"]
        cuts = [m for m in follower.moves if m != "hop"]
        assert len(hops) == follower.hop, (follower.job_id, follower.moves)
        # A follower on the killed gateway may have read its job's end before the kill.
        assert len(cuts) <= (follower.job_id in chaos.cut_followers), (follower.job_id, follower.moves)
    cut = [f.job_id for f in followers if any(m != "hop" for m in f.moves)]
    assert cut, f"no follower of gateway {chaos.killed_gateway} was cut mid-stream: {chaos}"


async def _whole_histories(url: str, followers: list[Follower]) -> list[list[dict[str, str]]]:
    """Each job's events read afresh from the start on ``url``."""
    wholes = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=SSE_READ_S), limits=FRESH) as http:
        for follower in followers:
            headers = {"Authorization": f"Bearer {follower.key}"}
            async with http.stream("GET", f"{url}/v1/jobs/{follower.job_id}/events", headers=headers) as response:
                assert response.status_code == 200
                wholes.append([event async for event in _sse(response)])
    return wholes


def _check_jobs_and_books(stack: EmbeddedStack, dsn: str, submitted: list[dict[str, object]]) -> None:
    """One terminal event per job, JobCompleted; one video; one capture of the price; the books reconcile."""

    async def histories() -> list[JobHistory]:
        async with job_client(stack) as client:
            await asyncio.sleep(3)  # a doubled delivery would show itself by now
            return [await client.history(str(job["id"])) for job in submitted]

    settings = stack.settings()
    store = minio_client(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key)
    ledger = open_ledger(dsn)
    charged = dict.fromkeys(ACCOUNTS, 0)
    for job, history in zip(submitted, asyncio.run(histories()), strict=True):
        job_id = str(job["id"])
        terminals = [f.event for f in history.events if f.event.type in TERMINAL_TYPES]
        assert len(terminals) == 1 and isinstance(terminals[0], JobCompleted), (job_id, terminals)
        videos = [
            o.object_name
            for o in store.list_objects(settings.s3_bucket, prefix=f"jobs/{job_id}/", recursive=True)
            if "/video." in (o.object_name or "")
        ]
        assert videos == [f"jobs/{job_id}/g0/video.mp4"], videos
        reservation = ledger.reservation(job_id, 0)
        assert reservation is not None and reservation.state == "captured", reservation
        assert reservation.points == job["price"], job_id
        charged[str(job["account"])] += reservation.points
    balances = {name: ledger.balance(name) for name in ACCOUNTS}
    assert balances == {name: POINTS - points for name, points in charged.items()}
    assert ledger.reconcile() == []


async def _check_index(url: str, submitted: list[dict[str, object]], keys: dict[str, str]) -> None:
    """The surviving gateway's jobs index has every job succeeded and no account with a job still active."""
    async with httpx.AsyncClient(base_url=url, timeout=10.0, limits=FRESH) as http:
        for job in submitted:
            headers = {"Authorization": f"Bearer {keys[str(job['account'])]}"}
            deadline = time.monotonic() + 30
            while (
                status := (await http.get(f"/v1/jobs/{job['id']}", headers=headers)).json()["status"]
            ) != "succeeded":
                assert time.monotonic() < deadline, (job["id"], status)
                await asyncio.sleep(0.2)
        for key in keys.values():
            account = (await http.get("/v1/account", headers={"Authorization": f"Bearer {key}"})).json()
            assert account["active_jobs"] == 0, account
