"""Composition roots connect nothing when built: the ledger and the store are opened when a service
starts. Serving /asyncapi.json builds every service's app, so it must touch no server and no file."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from contracts.stages import Stage
from contracts.subjects import EVENTS_SUBJECTS, TERMINAL_EVENTS_FILTER
from infra.nats_server import NatsServer
from services.billing.app import build_app
from services.billing.ledger import open_ledger
from services.gateway.asyncapi import bus_document
from tests.services.bus_helpers import settings_for

UNREACHABLE_POSTGRES = "postgresql://i2v@127.0.0.1:9/nowhere?connect_timeout=2"


@pytest.fixture
def fresh_document() -> Iterator[None]:
    bus_document.cache_clear()
    yield
    bus_document.cache_clear()


@pytest.mark.usefixtures("fresh_document")
@pytest.mark.parametrize("ledger", ["unreachable postgres", "sqlite in a folder that does not exist"])
def test_the_asyncapi_document_is_built_without_opening_the_ledger(
    ledger: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    dsn = UNREACHABLE_POSTGRES if ledger.startswith("unreachable") else str(missing / "ledger.sqlite3")
    monkeypatch.setenv("I2V_LEDGER_DSN", dsn)
    monkeypatch.setenv("I2V_S3_ENDPOINT", "http://127.0.0.1:9")
    started = time.monotonic()

    document = bus_document()

    assert time.monotonic() - started < 10
    addresses = {channel["address"] for channel in document["channels"].values()}
    # Every service's consumers, billing's settlement included.
    assert {f"i2v.work.{stage}" for stage in Stage} | {TERMINAL_EVENTS_FILTER} <= addresses
    # The webhooks service's durable consumer of every event, beside the gateway's.
    followers = {name for name, channel in document["channels"].items() if channel["address"] == EVENTS_SUBJECTS}
    assert followers == {"i2v.events.>:OnEvent", "webhooks:OnEvent"}
    assert not (tmp_path / "no").exists()  # nothing was created on the way


@pytest.mark.integration
async def test_billing_opens_its_ledger_from_settings_when_it_starts(
    js: JetStreamContext, nats_server: NatsServer, tmp_path: Path
) -> None:
    path = tmp_path / "state" / "ledger.sqlite3"
    settings = settings_for(nats_server, ledger_dsn=str(path), default_account="walk-in", default_account_points=7)
    app = build_app(settings)
    assert not path.parent.exists()  # built, not opened

    await app.start()
    try:
        assert open_ledger(str(path)).balance("walk-in") == 7
    finally:
        await app.stop()
