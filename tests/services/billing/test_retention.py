"""Retention: what a job stored is deleted once it is older than ``retention_days``, by billing's sweep."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from contracts.keys import artifact_key, command_key, upload_key
from contracts.stages import Stage
from infra.nats_server import NatsServer
from infra.objectstore import MemoryObjectStore
from services.billing.app import build_app
from services.billing.retention import sweep
from tests.services.bus_helpers import settings_for

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def stored_long_ago(store: MemoryObjectStore, key: str, days: float) -> None:
    store.put(key, b"x", "application/octet-stream")
    store.backdate(key, NOW - timedelta(days=days))


def test_objects_past_the_retention_are_deleted_and_the_rest_kept() -> None:
    store = MemoryObjectStore()
    stored_long_ago(store, upload_key("jold"), days=31)
    stored_long_ago(store, artifact_key("jold", 0, "video.mp4"), days=30.5)
    stored_long_ago(store, command_key("jold", Stage.LATENT), days=29)  # a recent replay's command stays
    stored_long_ago(store, upload_key("jnew"), days=1)
    stored_long_ago(store, "outside/jobs", days=400)  # not a job's: not ours to delete

    assert sweep(store, days=30, now=NOW) == 2

    assert store.keys() == sorted([command_key("jold", Stage.LATENT), upload_key("jnew"), "outside/jobs"])
    assert sweep(store, days=30, now=NOW) == 0
    with pytest.raises(ValueError, match="positive"):
        sweep(store, days=0, now=NOW)


@pytest.mark.integration
async def test_billing_sweeps_when_it_starts_and_then_periodically(
    js: JetStreamContext, nats_server: NatsServer, tmp_path: Path
) -> None:
    store = MemoryObjectStore()
    long_ago = datetime.now(UTC) - timedelta(days=40)
    store.put(upload_key("jold"), b"x", "image/png")
    store.backdate(upload_key("jold"), long_ago)
    store.put(upload_key("jnew"), b"x", "image/png")
    settings = settings_for(
        nats_server, ledger_dsn=str(tmp_path / "ledger.sqlite3"), retention_days=30, retention_sweep_s=0.2
    )
    app = build_app(settings, store=store)

    await app.start()
    try:
        await _until(lambda: store.keys() == [upload_key("jnew")])
        # Objects that age past the retention while billing runs go on a later round.
        store.backdate(upload_key("jnew"), long_ago)
        await _until(lambda: store.keys() == [])
    finally:
        await app.stop()


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the sweep did not happen in time"
        await asyncio.sleep(0.05)
