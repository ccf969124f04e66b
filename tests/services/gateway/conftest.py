"""A real gateway (uvicorn on a free loopback port) against a real nats-server and SeaweedFS."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client

from contracts.messages import Event
from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore
from infra.ports import free_port
from infra.seaweed import SeaweedS3
from services.billing.ledger import SqlLedger, open_ledger
from services.bus.publishing import route
from services.config import Settings
from services.gateway.app import build_app
from services.gateway.auth import hash_api_key, new_api_key
from services.gateway.server import uvicorn_server
from tests.server_settings import settings_for_servers


@pytest.fixture(scope="module")
def gateway_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server of this module's own: the gateway uses the real stream names."""
    with NatsServer(tmp_path_factory.mktemp("gateway-nats")) as server:
        yield server


@dataclass
class RunningGateway:
    url: str
    settings: Settings
    ledger: SqlLedger
    store: S3ObjectStore
    nc: Client

    def account(self, points: int, name: str | None = None) -> tuple[str, str]:
        """A new account with an API key: (name, key)."""
        name = name or f"acct-{uuid.uuid4().hex[:8]}"
        key = new_api_key()
        self.ledger.create_account(name, points, api_key_hash=hash_api_key(key))
        return name, key

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=20.0)

    async def publish(self, event: Event) -> int:
        """Publish an event straight to the events stream as a stage would; returns its sequence."""
        where = route(event)
        ack = await self.nc.jetstream().publish(
            where.subject, event.model_dump_json().encode(), stream=where.stream, headers={"Nats-Msg-Id": where.msg_id}
        )
        return int(ack.seq)


@contextlib.asynccontextmanager
async def running_gateway(
    tmp_path: Path, nats_server: NatsServer, seaweed: SeaweedS3, store: S3ObjectStore, **overrides: Any
) -> AsyncIterator[RunningGateway]:
    """A gateway under uvicorn on a free port; ``overrides`` set any field of its settings."""
    overrides.setdefault("gateway_max_active_jobs", 2)
    settings = settings_for_servers(nats_server, seaweed, store, tmp_path / "state", **overrides)
    ledger = open_ledger(str(tmp_path / "ledger.sqlite3"))
    app = build_app(settings, ledger=ledger, store=store, heartbeat_s=0.3)
    port = free_port()
    server = uvicorn_server(app, "127.0.0.1", port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the gateway did not start"
        await asyncio.sleep(0.02)
    nc = await nats.connect(nats_server.url)
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", settings, ledger, store, nc)
    finally:
        await nc.close()
        server.should_exit = True
        await task


@pytest.fixture
async def gateway(
    tmp_path: Path, gateway_nats: NatsServer, seaweed: SeaweedS3, object_store: S3ObjectStore
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(tmp_path, gateway_nats, seaweed, object_store) as running:
        yield running
