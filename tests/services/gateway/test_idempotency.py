"""``Idempotency-Key`` on ``POST /v1/jobs``: the same key and request within 24 hours is the same job."""

import asyncio
import base64
from pathlib import Path

from contracts.messages import JobSpec
from contracts.params import GenerationParams
from services.gateway.jobs_index import IDEMPOTENCY_WINDOW_S, Idempotency, IdempotencyKeyUsedError, JobsIndex
from services.gateway.progress import JobView
from tests.services.gateway.conftest import RunningGateway
from tests.services.gateway.test_api import picture, submit


async def test_the_same_key_and_request_answer_the_first_job_charged_once(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    async with gateway.client(key) as client:
        headers = {"Idempotency-Key": "order-42"}
        first = await client.post(
            "/v1/jobs", files={"image": ("a.png", picture(), "image/png")}, data={"duration": "2"}, headers=headers
        )
        assert first.status_code == 202, first.text
        assert "idempotent-replayed" not in first.headers
        # The same request again, as JSON this time: the same job, not a second one.
        again = await client.post(
            "/v1/jobs", json={"image_base64": base64.b64encode(picture()).decode(), "duration": 2}, headers=headers
        )
        assert again.status_code == 202, again.text
        assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
        # Even once the balance no longer covers a second one: it was charged for once.
        gateway.ledger.reserve(first.json()["id"], 0, name, 1000 - 1)
        body = {"image_base64": base64.b64encode(picture()).decode(), "duration": 2}
        assert (await client.post("/v1/jobs", json=body, headers=headers)).status_code == 202
        # Several at once: one job between them; a new key races for one slot with the same outcome.
        twins = await asyncio.gather(*(client.post("/v1/jobs", json=body, headers=headers) for _ in range(4)))
        assert {r.json()["id"] for r in twins} == {first.json()["id"]}
        assert [j["id"] for j in (await client.get("/v1/jobs")).json()["items"]] == [first.json()["id"]]
        gateway.ledger.credit(name, 1000)
        racing = await asyncio.gather(
            *(client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "new"}) for _ in range(4))
        )
        assert [r.status_code for r in racing] == [202] * 4, [r.text for r in racing]
        assert len({r.json()["id"] for r in racing}) == 1
        assert len((await client.get("/v1/jobs")).json()["items"]) == 2


async def test_the_key_with_a_different_request_is_422_and_keys_are_per_account(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    _, other_key = gateway.account(1000)
    headers = {"Idempotency-Key": "k-1"}
    async with gateway.client(key) as client, gateway.client(other_key) as other:
        first = await client.post("/v1/jobs", files={"image": ("a.png", picture(), "image/png")}, headers=headers)
        assert first.status_code == 202, first.text
        changed = await client.post(
            "/v1/jobs", files={"image": ("a.png", picture(), "image/png")}, data={"fps": "12"}, headers=headers
        )
        assert changed.status_code == 422
        error = changed.json()["error"]
        assert (error["code"], error["field"]) == ("idempotency_key_reused", "Idempotency-Key")
        assert error["details"] == {"job_id": first.json()["id"]}
        theirs = await other.post("/v1/jobs", files={"image": ("a.png", picture(), "image/png")}, headers=headers)
        assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
        for bad in ("", "x" * 256, "with space"):
            refused = await client.post(
                "/v1/jobs", files={"image": ("a.png", picture(), "image/png")}, headers={"Idempotency-Key": bad}
            )
            assert refused.status_code == 422, bad
        # Without a key every submit is a job of its own.
        assert (await submit(client)).json()["id"] != first.json()["id"]


def test_a_key_names_its_job_for_24_hours(tmp_path: Path) -> None:
    index = JobsIndex(tmp_path / "jobs.sqlite3")
    spec = JobSpec(job_id="j000000000001", account="a", params=GenerationParams(seed=1))
    used = Idempotency("k", "fp")
    assert index.add_if_room(JobView.submitted(spec, 24), 5, used, now=1000.0) is None
    assert index.idempotent("a", "k", now=1000.0 + IDEMPOTENCY_WINDOW_S) == ("j000000000001", "fp")
    assert index.idempotent("b", "k", now=1000.0) is None
    later = JobSpec(job_id="j000000000002", account="a", params=GenerationParams(seed=1))
    try:
        index.add_if_room(JobView.submitted(later, 24), 5, used, now=2000.0)
    except IdempotencyKeyUsedError as exc:
        assert (exc.job_id, exc.fingerprint) == ("j000000000001", "fp")
    else:
        raise AssertionError("the key was taken")
    assert index.get("j000000000002") is None
    # A day on, the key is free again; and a job that was never queued frees its key at once.
    expired_at = 1000.0 + IDEMPOTENCY_WINDOW_S + 1
    assert index.idempotent("a", "k", now=expired_at) is None
    assert index.add_if_room(JobView.submitted(later, 24), 5, used, now=expired_at) is None
    index.remove("j000000000002")
    assert index.idempotent("a", "k", now=expired_at) is None
