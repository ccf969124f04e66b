"""A whole embedded stack for slow tests: servers plus one process per service, supervised like
`i2v stack up` (a killed service comes back), a job client bound to it, and `i2v generate` as a user runs it."""

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

from services.jobclient import JobClient
from services.objectstore import object_store_from
from services.stack.embedded import EmbeddedStack

ROOT = Path(__file__).resolve().parents[1]
HARBOR = ROOT / "examples" / "harbor.png"

# A short ack deadline so a killed worker's command comes back quickly; heartbeats keep live work alive.
FAST_REDELIVERY = {"I2V_ACK_WAIT_S": "4", "I2V_HEARTBEAT_S": "1"}


@contextlib.contextmanager
def supervised_stack(state_dir: Path, env: dict[str, str]) -> Iterator[EmbeddedStack]:
    stack = EmbeddedStack(state_dir, extra_env={**FAST_REDELIVERY, **env})
    stack.start()
    stop = threading.Event()

    def supervise() -> None:
        while not stop.is_set():
            stack.supervise()
            time.sleep(0.2)

    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()
    try:
        yield stack
    finally:
        stop.set()
        supervisor.join()
        stack.stop()


@contextlib.asynccontextmanager
async def job_client(stack: EmbeddedStack) -> AsyncIterator[JobClient]:
    settings = stack.settings()
    client = await JobClient.from_settings(settings, object_store_from(settings))
    try:
        yield client
    finally:
        await client.close()


def run_generate(out: Path, *options: str, env: Mapping[str, str]) -> "subprocess.CompletedProcess[str]":
    """`i2v generate` of the harbor example into ``out`` in a process of its own; fails the test unless it exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "generate", str(HARBOR), "-o", str(out), *options],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result
