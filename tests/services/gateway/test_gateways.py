"""Two gateways sharing one PostgreSQL jobs index and one nats-server: a client may use either, and
move from one to the other mid-stream."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts.messages import StageProgress, StageStarted
from contracts.stages import Stage
from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore
from infra.seaweed import SeaweedS3
from tests.services.gateway.conftest import RunningGateway, running_gateway
from tests.services.gateway.test_api import complete, picture, read_sse, submit, wait_status

pytestmark = pytest.mark.integration


@pytest.fixture
async def pair(
    tmp_path: Path, gateway_nats: NatsServer, seaweed: SeaweedS3, object_store: S3ObjectStore, pg_dsn: str
) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    """Gateways A and B: one index (PostgreSQL), one ledger, one state folder (so one session secret)."""
    async with (
        running_gateway(tmp_path, gateway_nats, seaweed, object_store, index_dsn=pg_dsn) as a,
        running_gateway(tmp_path, gateway_nats, seaweed, object_store, index_dsn=pg_dsn) as b,
    ):
        assert a.url != b.url
        yield a, b


async def test_a_job_submitted_on_one_gateway_is_read_and_followed_on_the_other(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    a, b = pair
    name, key = a.account(1000)
    async with a.client(key) as on_a, b.client(key) as on_b:
        job = (await submit(on_a)).json()
        seen = await on_b.get(f"/v1/jobs/{job['id']}")
        assert seen.status_code == 200 and seen.json()["status"] == "queued", seen.text
        assert [j["id"] for j in (await on_b.get("/v1/jobs")).json()["items"]] == [job["id"]]
        await complete(a, job, name, b"fake mp4")
        # Both gateways fold the same events into the one index: each sees the job end, once.
        for client in (on_a, on_b):
            assert (await wait_status(client, job["id"], "succeeded"))["progress"] == 100
        assert (await on_b.get("/v1/account")).json()["active_jobs"] == 0


async def test_an_idempotency_key_names_one_job_whichever_gateway_is_asked(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    a, b = pair
    _, key = a.account(1000)
    async with a.client(key) as on_a, b.client(key) as on_b:
        files = {"image": ("a.png", picture(), "image/png")}
        headers = {"Idempotency-Key": "order-1"}
        first = await on_a.post("/v1/jobs", files=files, data={"duration": "2"}, headers=headers)
        assert first.status_code == 202, first.text
        again = await on_b.post("/v1/jobs", files=files, data={"duration": "2"}, headers=headers)
        assert again.status_code == 202, again.text
        assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
        # A new key sent to both at once, several times: one job between them.
        racing = await asyncio.gather(
            *(
                client.post("/v1/jobs", files=files, data={"duration": "2"}, headers={"Idempotency-Key": "order-2"})
                for client in (on_a, on_b, on_a, on_b)
            )
        )
        assert [r.status_code for r in racing] == [202] * 4, [r.text for r in racing]
        assert len({r.json()["id"] for r in racing}) == 1
        assert len((await on_b.get("/v1/jobs")).json()["items"]) == 2


async def test_the_active_jobs_limit_counts_both_gateways(pair: tuple[RunningGateway, RunningGateway]) -> None:
    a, b = pair
    _, key = a.account(1000)
    async with a.client(key) as on_a, b.client(key) as on_b:
        # The limit is 2 (running_gateway's default): four submits at once, two per gateway, two accepted.
        answers = await asyncio.gather(*(submit(client) for client in (on_a, on_b, on_a, on_b)))
        assert sorted(r.status_code for r in answers) == [202, 202, 429, 429], [r.text for r in answers]


async def test_sse_followed_on_one_gateway_resumes_on_the_other_with_nothing_lost_or_repeated(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    a, b = pair
    name, key = a.account(1000)
    async with a.client(key) as on_a, b.client(key) as on_b:
        job = (await submit(on_a)).json()
        job_id = job["id"]
        published = [await a.publish(StageStarted(job_id=job_id, stage=Stage.LATENT))]
        for step in range(1, 4):
            published.append(await a.publish(StageProgress(job_id=job_id, stage=Stage.LATENT, step=step, total=9)))
        async with on_a.stream("GET", f"/v1/jobs/{job_id}/events") as on_a_events:
            first = [e for e in await read_sse(on_a_events, stop_after=3) if "id" in e]
        # Gateway A goes away for this client; more happens meanwhile, and more while it follows B.
        for step in range(4, 7):
            published.append(await b.publish(StageProgress(job_id=job_id, stage=Stage.LATENT, step=step, total=9)))

        async def finish() -> None:
            await asyncio.sleep(0.5)
            await complete(b, job, name, b"fake mp4")

        finisher = asyncio.create_task(finish())
        headers = {"Last-Event-ID": first[-1]["id"]}
        async with on_b.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as on_b_events:
            assert on_b_events.status_code == 200
            rest = [e for e in await read_sse(on_b_events) if "id" in e]
        await finisher
        # B's whole history of the job: what A gave, then exactly the rest.
        async with on_b.stream("GET", f"/v1/jobs/{job_id}/events") as whole:
            everything = [e for e in await read_sse(whole) if "id" in e]
    assert len(first) == 3
    assert first + rest == everything
    ids = [int(e["id"]) for e in everything]
    assert ids == sorted(set(ids)) and set(published) <= set(ids)
    assert rest[-1]["event"] == "JobCompleted"
