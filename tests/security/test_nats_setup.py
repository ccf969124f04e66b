"""Running NATS with credentials outside the embedded stack: `i2v stack nats-auth` writes the server's
users and each process's settings, `i2v stack streams` declares the streams as the admin, and a user that
may not declare them is told so instead of waiting."""

import asyncio
import stat
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from infra.nats_server import NatsServer
from services.bus.connection import nats_options
from services.bus.streams import StreamsNotDeclaredError, ensure_streams
from services.cli.main import main
from services.config import settings_from
from services.stack.nats_auth import USERS

pytestmark = pytest.mark.integration


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


async def _connect(url: str, env: dict[str, str]) -> NatsClient:
    return await nats.connect(url, allow_reconnect=False, **nats_options(settings_from(env)))


async def test_nats_auth_writes_the_servers_users_and_each_process_settings_and_rotates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nats-auth"
    assert main(["stack", "nats-auth", str(out)]) == 0
    conf = out / "nats-auth.conf"
    files = [conf, *(out / f"{user}.env" for user in USERS)]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    ingest = _env_file(out / "ingest.env")
    assert ingest["I2V_NATS_USER"] == "ingest"
    assert ingest["I2V_NATS_PASSWORD"] not in conf.read_text()  # the server's config holds hashes only
    assert ingest["I2V_NATS_PASSWORD"] not in capsys.readouterr().out

    with NatsServer(tmp_path / "server", config=conf.read_text()) as server:
        admin = await _connect(server.url, _env_file(out / "admin.env"))
        await ensure_streams(admin.jetstream())
        await admin.close()
        nc = await _connect(server.url, ingest)
        await ensure_streams(nc.jetstream())  # streams as declared: looking them up is enough
        await nc.close()

    billing = _env_file(out / "billing.env")
    assert main(["stack", "nats-auth", str(out), "--rotate", "ingest"]) == 0
    assert _env_file(out / "billing.env") == billing  # the others keep theirs
    rotated = _env_file(out / "ingest.env")
    assert rotated["I2V_NATS_PASSWORD"] != ingest["I2V_NATS_PASSWORD"]
    with NatsServer(tmp_path / "server", config=conf.read_text()) as server:
        refused = NatsClient()
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await refused.connect(server.url, allow_reconnect=False, **nats_options(settings_from(ingest)))
        await refused.close()  # a refused connect leaves its socket to the caller
        nc = await _connect(server.url, rotated)
        await nc.close()


async def test_a_service_user_is_told_to_declare_the_streams_as_admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nats-auth"
    assert main(["stack", "nats-auth", str(out)]) == 0
    with NatsServer(tmp_path / "server", config=(out / "nats-auth.conf").read_text()) as server:
        nc = await _connect(server.url, _env_file(out / "latent.env"))
        with pytest.raises(StreamsNotDeclaredError, match="i2v stack streams"):
            await ensure_streams(nc.jetstream())
        await nc.close()

        monkeypatch.setenv("I2V_NATS_URL", server.url)
        for key, value in _env_file(out / "admin.env").items():
            monkeypatch.setenv(key, value)
        assert await asyncio.to_thread(main, ["stack", "streams"]) == 0
        assert "declared" in capsys.readouterr().out

        nc = await _connect(server.url, _env_file(out / "latent.env"))
        await ensure_streams(nc.jetstream())
        await nc.close()
