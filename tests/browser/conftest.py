"""Browser tests that need only a gateway run the one the gateway tests run: its own nats-server per module,
the session's SeaweedFS, uvicorn on a free port (tests/services/gateway/conftest.py)."""

from tests.services.gateway.conftest import gateway, gateway_nats

__all__ = ["gateway", "gateway_nats"]
