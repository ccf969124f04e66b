"""Webhooks through the API: the submit fields and their checks, the account's signing secret, a job's
delivery log. The deliveries themselves are tests/services/webhooks'."""

import base64
import time
from pathlib import Path

from contracts.messages import JobSubmitted
from contracts.subjects import WORK_STREAM
from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore
from infra.seaweed import SeaweedS3
from services.billing.ledger import WebhookAttempt
from tests.services.gateway.conftest import RunningGateway, running_gateway
from tests.services.gateway.test_api import picture, submit


async def test_webhook_fields_are_checked_and_private_addresses_refused(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    async with gateway.client(key) as client:
        cases = [
            ({"webhook": "http://127.0.0.1:9/hook"}, "webhook_refused", "webhook", "loopback or private address"),
            ({"webhook": "https://10.0.0.7/hook"}, "webhook_refused", "webhook", "10.0.0.7"),
            ({"webhook": "ftp://example.com/h"}, "invalid_webhook", "webhook", "https:// or http://"),
            (
                {"webhook": "https://example.com/h", "webhook_events": "completed,done"},
                "invalid_webhook",
                "webhook_events",
                "unknown event 'done'",
            ),
            ({"webhook_events": "completed"}, "invalid_webhook", "webhook_events", "give a webhook URL too"),
        ]
        for fields, code, field, words in cases:
            response = await submit(client, **fields)
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert (error["code"], error["field"]) == (code, field), error
            assert words in error["message"] and "\n" not in error["message"]


async def test_a_job_carries_its_webhook_and_shows_its_deliveries(
    tmp_path: Path, gateway_nats: NatsServer, seaweed: SeaweedS3, object_store: S3ObjectStore
) -> None:
    async with running_gateway(tmp_path, gateway_nats, seaweed, object_store, webhook_allow_private=True) as gateway:
        _, key = gateway.account(1000)
        _, other_key = gateway.account(1000)
        body = {
            "image_base64": base64.b64encode(picture()).decode(),
            "duration": 2,
            "steps": 2,
            "webhook": "http://127.0.0.1:9/hook",
            "webhook_events": ["completed", "started"],
        }
        async with gateway.client(key) as client, gateway.client(other_key) as other:
            response = await client.post("/v1/jobs", json=body)
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            queued = await gateway.nc.jetstream().get_last_msg(WORK_STREAM, "i2v.work.ingest")
            submitted = JobSubmitted.model_validate_json(queued.data or b"")
            assert submitted.job.job_id == job_id and submitted.job.webhook is not None
            assert submitted.job.webhook.url == "http://127.0.0.1:9/hook"
            assert submitted.job.webhook.events == ("started", "completed")
            assert "webhook" not in response.json()["parameters"]
            # The job resource shows where and what is sent, never the account's signing secret.
            shown = {"url": "http://127.0.0.1:9/hook", "events": ["started", "completed"]}
            assert response.json()["webhook"] == shown
            fetched = await client.get(f"/v1/jobs/{job_id}")
            assert fetched.json()["webhook"] == shown
            secret = (await client.get("/v1/account/webhook-secret")).json()["secret"]
            assert secret.startswith("whsec_") and secret not in response.text + fetched.text

            deliveries = await client.get(f"/v1/jobs/{job_id}/deliveries")
            assert deliveries.status_code == 200, deliveries.text
            assert deliveries.json() == {"job_id": job_id, "deliveries": []}
            now = time.time()
            for attempt, (outcome, status) in enumerate([("retrying", 500), ("delivered", 200)], start=1):
                gateway.ledger.record_webhook_attempt(
                    WebhookAttempt(
                        job_id=job_id,
                        webhook_id=f"msg_{job_id}_started_g0",
                        event="started",
                        event_sequence=7,
                        attempt=attempt,
                        outcome=outcome,  # type: ignore[arg-type]
                        status_code=status,
                        error="HTTP 500: no" if status == 500 else "",
                        attempted_at=now + attempt,
                        next_retry_at=now + 5 if status == 500 else None,
                    )
                )
            shown = (await client.get(f"/v1/jobs/{job_id}/deliveries")).json()["deliveries"]
            assert [(d["attempt"], d["outcome"], d["status_code"], d["error"]) for d in shown] == [
                (1, "retrying", 500, "HTTP 500: no"),
                (2, "delivered", 200, None),
            ]
            assert shown[0]["webhook_id"] == f"msg_{job_id}_started_g0" and shown[0]["event"] == "started"
            assert shown[0]["next_retry_at"] is not None and shown[1]["next_retry_at"] is None
            assert (await other.get(f"/v1/jobs/{job_id}/deliveries")).status_code == 404


async def test_the_webhook_secret_is_read_and_rotated(gateway: RunningGateway) -> None:
    account, key = gateway.account(10)
    async with gateway.client(key) as client:
        first = await client.get("/v1/account/webhook-secret")
        assert first.status_code == 200, first.text
        secret = first.json()["secret"]
        assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
        assert (await client.get("/v1/account/webhook-secret")).json()["secret"] == secret
        rotated = await client.post("/v1/account/webhook-secret")
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new != secret and gateway.ledger.webhook_secret(account) == new
        assert (await client.get("/v1/account/webhook-secret")).json()["secret"] == new
    async with gateway.client() as anonymous:
        assert (await anonymous.get("/v1/account/webhook-secret")).status_code == 401


async def test_the_same_idempotency_key_with_another_webhook_is_another_request(
    tmp_path: Path, gateway_nats: NatsServer, seaweed: SeaweedS3, object_store: S3ObjectStore
) -> None:
    async with running_gateway(tmp_path, gateway_nats, seaweed, object_store, webhook_allow_private=True) as gateway:
        _, key = gateway.account(1000)
        async with gateway.client(key) as client:
            client.headers["Idempotency-Key"] = "order-7"
            first = await submit(client, webhook="http://127.0.0.1:9/a")
            again = await submit(client, webhook="http://127.0.0.1:9/a")
            other = await submit(client, webhook="http://127.0.0.1:9/b")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["id"] == first.json()["id"]
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
