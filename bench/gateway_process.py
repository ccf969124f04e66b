"""One real gateway process for the benchmarks: nats-server and SeaweedFS on loopback, an account with
points enough for any run, and ``i2v serve gateway`` started and waited for until it is ready."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.nats_server import NatsServer
from infra.ports import free_port
from infra.seaweed import SeaweedS3
from services.billing.ledger import open_ledger
from services.gateway.auth import hash_api_key, new_api_key

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "bench"
"""The account the gateway's API key belongs to, with 10**9 points."""


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` figure in KiB: ``VmRSS`` (resident now) or ``VmHWM`` (its high-water mark)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


class GatewayDidNotStart(RuntimeError):
    """The gateway exited, or was not ready within a minute; ``log`` is the end of its log."""

    def __init__(self, log: str) -> None:
        super().__init__("the gateway did not start:\n" + log)
        self.log = log


@dataclass(frozen=True)
class Gateway:
    port: int
    key: str
    """An API key of :data:`ACCOUNT`."""
    pid: int
    nats_url: str


@dataclass(frozen=True)
class BenchStack:
    """nats-server, SeaweedFS and a ledger under one state folder; :meth:`gateway` starts gateway processes."""

    state: Path
    nats_url: str
    key: str
    env: dict[str, str]

    @contextmanager
    def gateway(self, name: str = "gateway", **env: str) -> Iterator[Gateway]:
        """One ``i2v serve gateway`` process on a free port, ``env`` added to its environment; stopped
        (terminated, killed after 15 s) on the way out."""
        port = free_port()
        ready = self.state / f"{name}.ready"
        log_path = self.state / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "serve", "gateway"],
                env={**self.env, "I2V_GATEWAY_PORT": str(port), "I2V_READY_FILE": str(ready), **env},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            try:
                deadline = time.monotonic() + 60
                while not ready.exists():
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise GatewayDidNotStart(log_path.read_text()[-3000:])
                    time.sleep(0.1)
                yield Gateway(port, self.key, process.pid, self.nats_url)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()


@contextmanager
def bench_stack(state: Path, max_active_jobs: int) -> Iterator[BenchStack]:
    """Everything under ``state``: the servers, and an account of :data:`ACCOUNT` with an API key."""
    with NatsServer(state / "nats") as nats_server, SeaweedS3(state / "s3") as s3:
        from infra.objectstore import S3ObjectStore

        S3ObjectStore(s3.endpoint, s3.access_key, s3.secret_key, "i2v").ensure_bucket()
        key = new_api_key()
        open_ledger(str(state / "ledger.sqlite3")).create_account(ACCOUNT, 10**9, hash_api_key(key))
        env = {
            **os.environ,
            "I2V_NATS_URL": nats_server.url,
            "I2V_S3_ENDPOINT": s3.endpoint,
            "I2V_S3_ACCESS_KEY": s3.access_key,
            "I2V_S3_SECRET_KEY": s3.secret_key,
            "I2V_STATE_DIR": str(state),
            "I2V_GATEWAY_MAX_ACTIVE_JOBS": str(max_active_jobs),
        }
        yield BenchStack(state, nats_server.url, key, env)


@contextmanager
def served_gateway(state: Path, max_active_jobs: int) -> Iterator[Gateway]:
    """One gateway on :func:`bench_stack`."""
    with bench_stack(state, max_active_jobs) as stack, stack.gateway() as gateway:
        yield gateway
