"""A job with a webhook through the whole embedded stack: every service as its own process and NATS user,
the webhooks service among them, a tiny model, and a receiver on loopback verifying signatures."""

import asyncio
import time
from pathlib import Path

import pytest

from contracts.params import GenerationParams
from contracts.webhooks import Webhook
from services.billing.ledger import open_ledger
from services.stack.embedded import LOCAL_ACCOUNT
from tests.services.webhooks.receiver import receiving
from tests.stacks import HARBOR, job_client, supervised_stack

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_a_tiny_job_sends_its_started_and_completed_webhooks(tmp_path: Path) -> None:
    with supervised_stack(tmp_path / "stack", {}) as stack:
        ledger = open_ledger(stack.settings().resolved_ledger_dsn())
        with receiving(lambda: ledger.webhook_secret(LOCAL_ACCOUNT)) as receiver:

            async def scenario() -> str:
                async with job_client(stack) as client:
                    params = GenerationParams(model="tiny", duration=1, fps=4, steps=2, seed=5)
                    webhook = Webhook(url=receiver.url, events=("started", "completed"))
                    spec = await client.submit(HARBOR.read_bytes(), params, LOCAL_ACCOUNT, webhook=webhook)
                    deadline = time.monotonic() + 180
                    while len(receiver.delivered()) < 2:
                        assert time.monotonic() < deadline, receiver.received
                        await asyncio.sleep(0.2)
                    return spec.job_id

            job_id = asyncio.run(scenario())

    assert [r.payload["type"] for r in receiver.received] == ["job.started", "job.completed"]
    assert all(r.verified for r in receiver.received)
    completed = receiver.received[1].payload["data"]
    assert completed["job_id"] == job_id and completed["job"]["status"] == "succeeded"
    assert completed["job"]["output"]["frame_count"] == 4
    assert [(a.event, a.attempt, a.outcome) for a in ledger.webhook_deliveries(job_id)] == [
        ("started", 1, "delivered"),
        ("completed", 1, "delivered"),
    ]
