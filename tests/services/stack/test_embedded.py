"""The embedded stack's settings: one source for its services, its own settings() and the CLI's state file."""

import contextlib
import os
import socket
import stat
from pathlib import Path

import httpx
import pytest

from infra.objectstore import minio_client
from infra.ports import LOOPBACK, free_ports
from services.billing.ledger import open_ledger
from services.config import settings_from
from services.stack import embedded
from services.stack.embedded import LOCAL_ACCOUNT, LOCAL_ACCOUNT_POINTS, EmbeddedStack
from services.stack.state_file import read_stack_file, stack_file

pytestmark = pytest.mark.integration


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_shell_settings_reach_the_services_and_the_cli_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger_path = tmp_path / "elsewhere" / "books.sqlite3"
    monkeypatch.setenv("I2V_S3_BUCKET", "shell-bucket")
    monkeypatch.setenv("I2V_LEDGER_DSN", str(ledger_path))
    monkeypatch.setenv("I2V_NATS_URL", "nats://127.0.0.1:9")  # a stale export: the stack's own server wins
    state = tmp_path / "state"

    with EmbeddedStack(state, services=("billing",)) as stack:
        settings = stack.settings()
        as_billing = stack.settings_as("billing")
        child = {k: v for k, v in _environ_of(stack.pid("billing")).items() if k.startswith("I2V_")}
        client = read_stack_file(state)
        mode = stat.S_IMODE(stack_file(state).stat().st_mode)
        folder_mode = stat.S_IMODE(state.stat().st_mode)
        assert stack.nats is not None
        nats_url = stack.nats.url
        metrics_port = stack.metrics_ports["billing"]
        bucket_there = minio_client(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key).bucket_exists(
            "shell-bucket"
        )

    # The stack's settings are what the shell asked for, on the stack's own servers.
    assert (settings.s3_bucket, settings.resolved_ledger_dsn(), settings.nats_url) == (
        "shell-bucket",
        str(ledger_path),
        nats_url,
    )
    assert bucket_there
    # The billing process got exactly those settings, as NATS user billing: it opened the same ledger and
    # made the demo account there.
    assert child.pop("I2V_READY_FILE")
    assert child.pop("I2V_LOG_FILE").endswith("billing.log")
    assert child.pop("I2V_METRICS_PORT") == str(metrics_port)
    assert settings_from(child) == as_billing
    assert as_billing.model_copy(update={"nats_user": "", "nats_password": ""}) == settings.model_copy(
        update={"nats_user": "", "nats_password": ""}
    )
    assert (as_billing.nats_user, settings.nats_user) == ("billing", "client")
    assert as_billing.nats_password != settings.nats_password
    assert open_ledger(str(ledger_path)).balance(LOCAL_ACCOUNT) == LOCAL_ACCOUNT_POINTS
    assert not (state / "ledger.sqlite3").exists()
    # The CLI's file says the same, readable by the owner only, and is gone once the stack stops.
    assert client is not None and settings_from(client) == settings
    assert mode == 0o600
    assert folder_mode == 0o700  # data, logs, ledger and credentials: the owner's only
    assert not stack_file(state).exists()
    assert os.environ["I2V_NATS_URL"] == "nats://127.0.0.1:9"


def test_a_port_taken_before_its_service_binds_it_is_picked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process takes the ports chosen for billing's metrics and for the gateway between their
    # choice and the services' start: each fails to bind, and runs again on a port picked afresh.
    taken = [socket.create_server((LOOPBACK, 0)) for _ in range(2)]
    taken_ports = [sock.getsockname()[1] for sock in taken]
    picks: list[list[int]] = []

    def first_pick_taken(n: int, host: str = LOOPBACK) -> list[int]:
        ports = free_ports(n, host)
        if n == 3 and not picks:  # billing, gateway's metrics, gateway's HTTP
            ports[0], ports[2] = taken_ports
        picks.append(ports)
        return ports

    monkeypatch.setattr(embedded, "free_ports", first_pick_taken)
    with contextlib.ExitStack() as held:
        for sock in taken:
            held.enter_context(sock)
        with EmbeddedStack(tmp_path / "state", services=("billing", "gateway")) as stack:
            ports = (stack.metrics_ports["billing"], stack.gateway_port)
            health = httpx.get(f"{stack.gateway_url}/healthz", timeout=10)
            billing = httpx.get(stack.metrics_urls["billing"].replace("/metrics", "/healthz"), timeout=10)
            log = stack.log_path("billing").read_text()
    assert picks[0][0] == taken_ports[0] and picks[0][2] == taken_ports[1]
    assert not set(ports) & set(taken_ports)
    assert health.status_code == 200 and billing.status_code == 200
    assert "address already in use" in log.lower()
