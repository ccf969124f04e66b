"""A nats-server configured as the embedded stack configures it (its users, passwords and permissions),
with the streams declared by the admin, and connections to it as any of those users."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import nats
import pytest
from nats.aio.client import Client as NatsClient

from infra.nats_server import NatsServer
from services.bus.connection import inbox_prefix
from services.bus.streams import ensure_streams
from services.stack.credentials import NatsLogin, nats_logins
from services.stack.nats_auth import ADMIN, USERS, authorization_block


@dataclass
class SecuredNats:
    server: NatsServer
    logins: dict[str, NatsLogin]

    @property
    def url(self) -> str:
        return self.server.url


@dataclass
class Session:
    """One connection as a user, with every asynchronous error the server sent it (permission violations)."""

    nc: NatsClient
    errors: list[Exception] = field(default_factory=list)

    async def violations(self, subject: str, timeout: float = 5.0) -> list[str]:
        """The permission violations reported for ``subject`` (waits up to ``timeout`` for the first)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            # nats-py lower-cases the server's error line.
            wanted = f'permissions violation for {{}} to "{subject.lower()}"'
            found = [
                str(e) for e in self.errors if any(wanted.format(w) in str(e) for w in ("publish", "subscription"))
            ]
            if found or loop.time() > deadline:
                return found
            await asyncio.sleep(0.05)


Connect = Callable[[str], Awaitable[Session]]


@pytest.fixture(scope="module")
def secured_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredNats]:
    state = tmp_path_factory.mktemp("secured-nats")
    logins = nats_logins(state, USERS)
    config = authorization_block({user: login.hashed for user, login in logins.items()})
    with NatsServer(state / "nats", config=config) as server:
        yield SecuredNats(server, logins)


@pytest.fixture
async def connect_as(secured_nats: SecuredNats) -> AsyncIterator[Connect]:
    """Connect as a user of the stack's table, with that user's inbox prefix; streams declared by the admin."""
    sessions: list[Session] = []

    async def connect(user: str) -> Session:
        session = Session(nc=NatsClient())

        async def record(exc: Exception) -> None:
            session.errors.append(exc)

        login = secured_nats.logins[user]
        session.nc = await nats.connect(
            secured_nats.url,
            user=login.user,
            password=login.password,
            inbox_prefix=inbox_prefix(user),
            error_cb=record,
            max_reconnect_attempts=1,
        )
        sessions.append(session)
        return session

    admin = await connect(ADMIN)
    await ensure_streams(admin.nc.jetstream())
    yield connect
    for session in sessions:
        with contextlib.suppress(Exception):
            await session.nc.close()
