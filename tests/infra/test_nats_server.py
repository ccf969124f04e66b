"""nats-server from the wheel: JetStream on free ports, dedup, restarts that keep data, no clashes."""

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StorageType

from infra import nats_server as nats_server_module
from infra.nats_server import NatsServer, NatsServerError, find_nats_server_binary
from infra.ports import free_ports

pytestmark = pytest.mark.integration


@pytest.fixture
def blocked_port() -> Iterator[int]:
    """A loopback port held by a listening socket for the test's duration."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def _stream_messages(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(stream)
        return info.state.messages
    finally:
        await nc.close()


def test_binary_comes_from_the_wheel() -> None:
    binary = find_nats_server_binary()
    assert binary.is_file()
    assert binary != Path("/usr/local/bin/nats-server")


async def test_publish_with_same_msg_id_is_deduplicated(nats_server: NatsServer) -> None:
    assert nats_server.port != 4222
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="DEDUP_TEST", subjects=["dedup-test.>"], storage=StorageType.FILE)
        headers = {"Nats-Msg-Id": "job123:latents:g0"}
        first = await js.publish("dedup-test.a", b"one", headers=headers)
        second = await js.publish("dedup-test.a", b"one again", headers=headers)
        assert not first.duplicate
        assert second.duplicate
        assert second.seq == first.seq
        assert (await js.stream_info("DEDUP_TEST")).state.messages == 1
    finally:
        await nc.close()


async def test_restart_keeps_port_and_file_stored_messages(tmp_path: Path) -> None:
    with NatsServer(tmp_path) as server:
        url = server.url
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="KEEP", subjects=["keep.>"], storage=StorageType.FILE)
            for i in range(3):
                await js.publish("keep.x", f"m{i}".encode())
        finally:
            await nc.close()

        server.restart()
        assert server.url == url
        assert await _stream_messages(url, "KEEP") == 3

        # A crash (SIGKILL) must not lose acknowledged messages either.
        server.kill()
        assert not server.running
        server.start()
        nc = await nats.connect(url)
        try:
            message = await nc.jetstream().get_msg("KEEP", 1)
            assert message.data == b"m0"
        finally:
            await nc.close()
    assert (tmp_path / "jetstream").is_dir()
    assert server.log_path.stat().st_size > 0


async def test_two_servers_run_side_by_side(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "a") as a, NatsServer(tmp_path / "b") as b:
        assert len({a.port, a.monitor_port, b.port, b.monitor_port}) == 4
        for server in (a, b):
            nc = await nats.connect(server.url)
            try:
                await nc.jetstream().account_info()
            finally:
                await nc.close()


def test_taken_explicit_port_fails_with_the_port_named(tmp_path: Path, blocked_port: int) -> None:
    server = NatsServer(tmp_path, port=blocked_port)
    started = time.monotonic()
    with pytest.raises(NatsServerError, match=str(blocked_port)):
        server.start(timeout=10)
    assert time.monotonic() - started < 5
    assert not server.running


def test_port_taken_between_pick_and_bind_is_retried(
    tmp_path: Path, blocked_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    picks: list[int] = []

    def first_pick_taken(n: int, host: str = "127.0.0.1") -> list[int]:
        ports = free_ports(n, host)
        if not picks:
            ports[0] = blocked_port
        picks.append(ports[0])
        return ports

    monkeypatch.setattr(nats_server_module, "free_ports", first_pick_taken)
    with NatsServer(tmp_path) as server:
        assert picks[0] == blocked_port
        assert server.port != blocked_port
        assert len(picks) == 2


def test_stop_is_idempotent_and_safe_before_start(tmp_path: Path) -> None:
    server = NatsServer(tmp_path)
    server.stop()
    server.start()
    pid = server.pid
    assert pid is not None
    server.stop()
    server.stop()
    assert server.pid is None
    assert not server.running


def test_missing_binary_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-nats-server"
    with pytest.raises(NatsServerError, match="no-such-nats-server"):
        NatsServer(tmp_path, binary=missing).start()


def test_the_server_rotates_its_own_log(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as server:
        config = server.config_path.read_text()
        assert "logfile_size_limit: 10MB" in config and "logfile_max_num: 3" in config
        assert server.config_path.stat().st_mode & 0o777 == 0o600
        assert "Server is ready" in server.log_path.read_text()
