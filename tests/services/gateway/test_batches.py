"""``variations`` on ``POST /v1/jobs``: one submission, several jobs of consecutive seeds under one batch,
each priced and charged on its own; ``GET /v1/batches/{id}``; the batch in the jobs index (SQLite and
PostgreSQL)."""

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.keys import upload_key
from contracts.messages import JobSpec
from contracts.params import MAX_SEED, GenerationParams
from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore
from infra.seaweed import SeaweedS3
from services.gateway.jobs_index import Idempotency, IdempotencyKeyUsedError, JobsIndex
from services.gateway.progress import JobView
from tests.services.gateway.conftest import RunningGateway, running_gateway
from tests.services.gateway.test_api import picture, submit

FIELDS = {"duration": 2, "fps": 8, "steps": 2}


def as_json(**fields: Any) -> dict[str, Any]:
    return {"image_base64": base64.b64encode(picture()).decode(), **FIELDS, **fields}


async def price_of(client: httpx.AsyncClient) -> int:
    """The quote of one job of FIELDS for the test picture (64x48 fits the tiny model at its size)."""
    response = await client.post("/v1/jobs", json=as_json(variations=1))
    assert response.status_code == 202, response.text
    price: int = response.json()["price"]
    assert response.json()["batch_id"] is None
    return price


@pytest.fixture
async def roomy(
    tmp_path: Path, gateway_nats: NatsServer, seaweed: SeaweedS3, object_store: S3ObjectStore
) -> AsyncIterator[RunningGateway]:
    """A gateway whose accounts may have 4 unfinished jobs (the usual fixture's limit is 2)."""
    async with running_gateway(tmp_path, gateway_nats, seaweed, object_store, gateway_max_active_jobs=4) as running:
        yield running


async def test_variations_make_jobs_of_consecutive_seeds_under_one_batch(roomy: RunningGateway) -> None:
    gateway = roomy
    _, key = gateway.account(1000)
    _, other_key = gateway.account(1000)
    async with gateway.client(key) as client, gateway.client(other_key) as other:
        response = await submit(client, variations=3, seed=MAX_SEED - 1)  # multipart
        assert response.status_code == 202, response.text
        batch = response.json()["batch"]
        assert response.headers["location"] == f"/v1/batches/{batch['id']}" == batch["links"]["self"]
        jobs = batch["jobs"]
        assert [job["seed"] for job in jobs] == [MAX_SEED - 1, MAX_SEED, 0]  # wrapping within the seed's range
        assert [job["parameters"]["seed"] for job in jobs] == [MAX_SEED - 1, MAX_SEED, 0]
        assert len({job["id"] for job in jobs}) == 3 and {job["batch_id"] for job in jobs} == {batch["id"]}
        for job in jobs:
            assert gateway.store.head(upload_key(job["id"])) is not None  # each a job of its own, queued
        # Together under the batch; each on its own, in the list, as usual.
        shown = (await client.get(f"/v1/batches/{batch['id']}")).json()
        assert shown["id"] == batch["id"] and [job["id"] for job in shown["jobs"]] == [job["id"] for job in jobs]
        listed = (await client.get("/v1/jobs")).json()["items"]
        assert sorted(job["id"] for job in listed) == sorted(job["id"] for job in jobs)
        single = (await client.get(f"/v1/jobs/{jobs[1]['id']}")).json()
        assert single["batch_id"] == batch["id"]
        # Someone else's batch, or none, is 404 as a job is.
        for path in [f"/v1/batches/{batch['id']}", "/v1/batches/bnosuchbatch00"]:
            missing = await other.get(path)
            assert missing.status_code == 404, missing.text
            assert missing.json()["error"]["code"] == "batch_not_found"


async def test_a_random_seed_is_drawn_once_and_json_takes_variations_too(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    async with gateway.client(key) as client:
        response = await client.post("/v1/jobs", json=as_json(variations=2))
        assert response.status_code == 202, response.text
        first, second = (job["seed"] for job in response.json()["batch"]["jobs"])
        assert second == (first + 1) % (MAX_SEED + 1)
        # Without variations the answer is the job itself, as before.
        plain = await client.post("/v1/jobs", json=as_json())
        assert plain.status_code == 429  # the fixture's limit of 2 is taken by the batch
        assert "the account already has 2 unfinished jobs" in plain.json()["error"]["message"]


async def test_each_job_is_priced_and_the_balance_must_cover_the_whole_batch(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    async with gateway.client(key) as client:
        price = await price_of(client)
    for balance, status in [(2 * price - 1, 402), (2 * price, 202)]:
        _, key = gateway.account(balance)
        async with gateway.client(key) as client:
            response = await client.post("/v1/jobs", json=as_json(variations=2))
            assert response.status_code == status, response.text
            if status == 402:
                error = response.json()["error"]
                assert error["details"] == {"price": 2 * price, "balance": balance}
                assert f"these 2 jobs cost 2 x {price} = {2 * price} points" in error["message"]
                assert (await client.get("/v1/jobs")).json()["items"] == []  # none of it queued
            else:
                assert [job["price"] for job in response.json()["batch"]["jobs"]] == [price, price]


async def test_a_batch_past_the_active_jobs_limit_is_refused_whole(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    async with gateway.client(key) as client:
        await price_of(client)  # one of the limit of 2 taken
        refused = await client.post("/v1/jobs", json=as_json(variations=2))
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "too_many_active_jobs" and error["details"] == {"active": 1, "limit": 2}
        assert "the account has 1 unfinished jobs and 2 more would pass the limit of 2" in error["message"]
        assert len((await client.get("/v1/jobs")).json()["items"]) == 1  # nothing of the batch queued


async def test_bad_variations_are_refused_naming_the_field(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    async with gateway.client(key) as client:
        answers = [await submit(client, variations=value) for value in (0, 5, "x", "-1", "2.5")]
        answers += [await client.post("/v1/jobs", json=as_json(variations=v)) for v in (0, 5, "2", True, 2.0, None)]
        for response in answers:
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert (error["code"], error["field"]) == ("invalid_variations", "variations")
            assert error["message"] == "variations: a whole number from 1 to 4"
        assert (await client.get("/v1/jobs")).json()["items"] == []


async def test_an_idempotency_key_replays_the_whole_batch(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    headers = {"Idempotency-Key": "batch-1"}
    async with gateway.client(key) as client:
        first = await client.post("/v1/jobs", json=as_json(variations=2), headers=headers)
        assert first.status_code == 202, first.text
        again = await client.post(
            "/v1/jobs",
            files={"image": ("p.png", picture(), "image/png")},
            data={**FIELDS, "variations": "2"},
            headers=headers,
        )
        assert again.status_code == 202, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["batch"]["id"] == first.json()["batch"]["id"]
        assert [j["id"] for j in again.json()["batch"]["jobs"]] == [j["id"] for j in first.json()["batch"]["jobs"]]
        assert len((await client.get("/v1/jobs")).json()["items"]) == 2  # not two more
        # The key with another count is another request.
        other = await client.post("/v1/jobs", json=as_json(variations=3), headers=headers)
        assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
        single = await client.post("/v1/jobs", json=as_json(), headers=headers)
        assert single.status_code == 422


# --- the index ------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "gateway" / "jobs.sqlite3")
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


def _batch(batch_id: str, job_ids: list[str], account: str = "a") -> list[JobView]:
    views = []
    for seed, job_id in enumerate(job_ids):
        spec = JobSpec(
            job_id=job_id, account=account, params=GenerationParams(seed=seed), submitted_at=datetime.now(UTC)
        )
        view = JobView.submitted(spec, 9)
        view.batch_id = batch_id
        views.append(view)
    return views


def test_a_batch_is_recorded_whole_or_not_at_all(target: str) -> None:
    index, other_gateway = JobsIndex(target), JobsIndex(target)
    key = Idempotency("k", "fp")
    assert index.add_batch_if_room(_batch("b1", ["j000001", "j000002", "j000003"]), 4, key) is None
    assert [v.job_id for v in other_gateway.batch("a", "b1")] == ["j000001", "j000002", "j000003"]
    assert {v.batch_id for v in other_gateway.list("a", 10)} == {"b1"}
    assert other_gateway.idempotent("a", "k") == ("j000001", "fp")  # the key names the first job
    with pytest.raises(IdempotencyKeyUsedError):
        other_gateway.add_batch_if_room(_batch("b2", ["j000004"]), 4, key)
    # Three active and a limit of 4: a batch of 2 does not fit, and none of it is kept.
    assert other_gateway.add_batch_if_room(_batch("b3", ["j000005", "j000006"]), 4) == 3
    assert other_gateway.batch("a", "b3") == [] and index.active_count("a") == 3
    assert index.batch("someone-else", "b1") == []
    index.remove("j000001")  # as a submission that could not be queued
    assert [v.job_id for v in index.batch("a", "b1")] == ["j000002", "j000003"] and index.idempotent("a", "k") is None


def test_an_index_from_before_batches_gains_the_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "gateway.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, account TEXT NOT NULL, status TEXT NOT NULL,"
            " deleted INTEGER NOT NULL DEFAULT 0, view TEXT NOT NULL, last_sequence BIGINT NOT NULL DEFAULT 0)"
        )
    index = JobsIndex(path)
    assert index.add_batch_if_room(_batch("b1", ["j000001", "j000002"]), 2) is None
    assert [v.params.seed for v in index.batch("a", "b1")] == [0, 1]


async def test_prefer_wait_holds_a_batch_until_all_end_or_the_time_passes(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    async with gateway.client(key) as client:
        # No stage runs here: neither job ends, so after the wait the answer is 202 with the batch as it stands.
        response = await client.post("/v1/jobs", json=as_json(variations=2), headers={"Prefer": "wait=1"})
        assert response.status_code == 202, response.text
        assert response.headers["preference-applied"] == "wait=1"
        assert [job["status"] for job in response.json()["batch"]["jobs"]] == ["queued", "queued"]
