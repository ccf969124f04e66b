"""A whole embedded stack for slow tests: servers plus one process per service, supervised like
`i2v stack up` (a killed service comes back), and a job client bound to it."""

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from infra.objectstore import S3ObjectStore
from services.jobclient import JobClient
from services.stack.embedded import EmbeddedStack

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
    store = S3ObjectStore(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket)
    client = await JobClient.connect(settings.nats_url, store)
    try:
        yield client
    finally:
        await client.close()
