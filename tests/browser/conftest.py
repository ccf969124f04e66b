"""What the browser tests run against: ``stack``, `i2v stack up`'s stack with the gateway, one per module; or,
for tests that need only a gateway, ``gateway``, the one the gateway tests run (its own nats-server per
module, the session's SeaweedFS, uvicorn on a free port: tests/services/gateway/conftest.py)."""

from collections.abc import Iterator

import pytest

from services.stack.embedded import WITH_GATEWAY, EmbeddedStack
from tests.services.gateway.conftest import gateway, gateway_nats

__all__ = ["gateway", "gateway_nats", "stack"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    with EmbeddedStack(tmp_path_factory.mktemp("stack"), services=WITH_GATEWAY) as running:
        yield running
