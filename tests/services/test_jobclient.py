"""The job client on a real nats-server: a publish whose ack is late is sent again and stored once."""

import asyncio
import logging
import os
import signal
from pathlib import Path

import nats
import pytest

from contracts.params import GenerationParams
from contracts.subjects import WORK_STREAM
from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore
from services.jobclient import JobClient

IMAGE = (Path(__file__).resolve().parents[2] / "examples" / "harbor.png").read_bytes()


async def test_a_publish_acked_late_is_sent_again_and_stored_once(
    tmp_path: Path, object_store: S3ObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    with NatsServer(tmp_path / "nats") as server:
        pid = server.pid
        assert pid is not None
        client = await JobClient.connect(server.url, object_store)
        client.publish_timeout_s = 1.0
        caplog.set_level(logging.WARNING, logger="i2v.jobclient")
        try:
            os.kill(pid, signal.SIGSTOP)  # the server takes the publish but answers nothing until it resumes
            try:
                submitting = asyncio.create_task(client.submit(IMAGE, GenerationParams(seed=1), "acct"))
                for _ in range(100):  # until the first attempt gives up (or the submit ends, and the test fails)
                    if caplog.records or submitting.done():
                        break
                    await asyncio.sleep(0.05)
            finally:
                os.kill(pid, signal.SIGCONT)
            await submitting
        finally:
            await client.close()
        nc = await nats.connect(server.url)
        try:
            stored = (await nc.jetstream().stream_info(WORK_STREAM)).state.messages  # where JobSubmitted goes
        finally:
            await nc.close()
    assert any("publishing it again" in record.getMessage() for record in caplog.records)
    # Both copies reached the stream; its duplicate window kept one.
    assert stored == 1
