"""A whole embedded stack for slow tests: servers plus one process per service, supervised like
`i2v stack up` (a killed service comes back), a job client bound to it, and `i2v generate` as a user runs it."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

from services.jobclient import JobClient
from services.objectstore import object_store_from
from services.stack.embedded import WITH_WEBHOOKS, EmbeddedStack

ROOT = Path(__file__).resolve().parents[1]
HARBOR = ROOT / "examples" / "harbor.png"
ARTIFACTS = ROOT / "test-artifacts"
"""What tests keep for people to look at: the page's screenshots, the ETA check's figures."""
I2V = Path(sys.executable).parent / "i2v"

# A short ack deadline so a killed worker's command comes back quickly; heartbeats keep live work alive.
FAST_REDELIVERY = {"I2V_ACK_WAIT_S": "4", "I2V_HEARTBEAT_S": "1"}


@contextlib.contextmanager
def supervised_stack(
    state_dir: Path,
    env: dict[str, str],
    *,
    services: tuple[str, ...] = WITH_WEBHOOKS,
    replicas: Mapping[str, int] | None = None,
    nats_nodes: int = 1,
    gateways: int = 1,
) -> Iterator[EmbeddedStack]:
    """An embedded stack of ``services`` (``replicas``, ``nats_nodes`` and ``gateways`` as `i2v stack up`'s
    options say) with quick redelivery plus ``env``, supervised on a thread as `i2v stack up` does."""
    stack = EmbeddedStack(
        state_dir,
        services=services,
        extra_env={**FAST_REDELIVERY, **env},
        replicas=replicas or {},
        nats_nodes=nats_nodes,
        gateways=gateways,
    )
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


def clean_env(**i2v: str) -> dict[str, str]:
    """This process's environment without any I2V_ variable, plus ``i2v``: a stack's commands then find it from
    ./.i2v alone."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("I2V_")}, **i2v}


@contextlib.contextmanager
def stack_up(folder: Path, *options: str, env: Mapping[str, str]) -> Iterator[list[str]]:
    """`i2v stack up` in the foreground in ``folder``: yields the lines it printed up to `stack up ...`, then
    stops it with Ctrl-C and adds the rest of its output to the same list; fails the test unless it printed
    `stack up` within 3 minutes, and unless it exited 0 with `stopped`."""
    up = subprocess.Popen(
        [str(I2V), "stack", "up", *options],
        cwd=folder,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert up.stdout is not None
        deadline = time.monotonic() + 180
        for line in up.stdout:
            lines.append(line.rstrip())
            if line.startswith("stack up"):
                break
            assert time.monotonic() < deadline, lines
        assert lines and lines[-1].startswith("stack up"), lines
        yield lines
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
        lines += rest.splitlines()
    assert up.returncode == 0, lines[-20:]
    assert "stopped" in lines, lines[-20:]
