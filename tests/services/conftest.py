"""Fixtures shared by the service tests: a fresh JetStream bus, and a PostgreSQL schema per test for the
production ledger."""

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import psycopg
import pytest
from nats.js import JetStreamContext

from infra.nats_server import NatsServer
from tests.services.bus_helpers import fresh_bus

PG_SERVER = os.environ.get("I2V_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The PostgreSQL server URL; skips the PostgreSQL cases only if the server cannot be reached."""
    try:
        with psycopg.connect(PG_SERVER, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL unreachable at {PG_SERVER}: {exc}")
    return PG_SERVER


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """A DSN whose search_path is a fresh schema, dropped after the test."""
    schema = f"ledger_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{pg_server}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    """JetStream on the session's nats-server, its streams emptied of earlier tests' messages."""
    async with fresh_bus(nats_server) as context:
        yield context
