"""Inputs that once gave a 500 (or a stream that never ended): each gets a 4xx with the error body now."""

import asyncio
import base64
from typing import Any

import httpx

from contracts.keys import command_key, upload_key
from contracts.messages import JobCancelled, JobSubmitted, ReplayRequested, StageStarted, parse_event
from contracts.stages import Stage
from contracts.subjects import EVENTS_STREAM, job_events_filter
from tests.services.gateway.conftest import RunningGateway
from tests.services.gateway.test_api import picture, read_sse, spec_of, submit, wait_status


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] and error["message"]
    return error


async def test_last_event_id_that_is_no_event_id_gets_422(gateway: RunningGateway) -> None:
    _name, key = gateway.account(1000)
    async with gateway.client(key) as client:
        job = (await submit(client)).json()
        await gateway.publish(StageStarted(job_id=job["id"], stage=Stage.INGEST))
        # '²' is a digit to str.isdigit, not to int(); 5,000 digits is past int()'s limit; 2**64 is past
        # any stream sequence (NATS reset the connection when asked for it).
        for value in (b"\xb2", b"9" * 5000, b"999999999999999999999999", b"-1", b"1e3"):
            response = await client.get(job["links"]["events"], headers=[(b"Last-Event-ID", value)])
            error = error_of(response)
            assert (response.status_code, error["field"]) == (422, "last-event-id"), value[:20]
        # The bus is still there for the next follower.
        async with client.stream("GET", job["links"]["events"]) as stream:
            assert [e["event"] for e in await read_sse(stream, stop_after=1) if "id" in e] == ["StageStarted"]


async def test_sse_resumed_past_the_streams_end_ends_when_the_job_does(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    async with gateway.client(key) as client:
        job = (await submit(client)).json()
        last = await gateway.publish(StageStarted(job_id=job["id"], stage=Stage.INGEST))

        async def cancel_soon() -> None:
            await asyncio.sleep(0.8)  # the follower is waiting on the live feed by then
            await gateway.publish(JobCancelled(job=spec_of(job, name), stage=Stage.INGEST))

        canceller = asyncio.create_task(cancel_soon())
        headers = {"Last-Event-ID": str(2**63 - 1)}  # past the end, and the largest id there can be
        del last
        async with client.stream("GET", job["links"]["events"], headers=headers) as stream:
            assert stream.status_code == 200
            await asyncio.wait_for(read_sse(stream), 10)  # ends; before, heartbeats went on for ever
        await canceller


async def test_json_bodies_of_the_wrong_shape_get_4xx(gateway: RunningGateway) -> None:
    _name, key = gateway.account(1000)
    image = base64.b64encode(picture()).decode()
    async with gateway.client(key) as client:
        cases: list[tuple[object, int, str | None]] = [
            ({"image_base64": "AAAA", "model": []}, 422, "model"),
            ({"image_base64": image, "model": {"a": 1}}, 422, "model"),
            ({"image_base64": image, "resolution": 5}, 422, "resolution"),
            ({"image_base64": image, "duration": [1]}, 422, "duration"),
            ({"image_base64": image, "duration": "2"}, 422, "duration"),  # JSON says what type it means
            ({"image_base64": image, "resolution": {"width": 64, "height": 64}}, 422, "resolution"),
            ({"image_base64": image, "seed": True}, 422, "seed"),
            ({}, 422, "image_base64"),
            ({"image_base64": ""}, 422, "image_base64"),
            ({"image_base64": 7}, 422, "image_base64"),
            ([], 400, None),
            ("text", 400, None),
        ]
        for body, status, field in cases:
            response = await client.post("/v1/jobs", json=body)
            error = error_of(response)
            assert (response.status_code, error.get("field")) == (status, field), (body, response.text)
        for raw in (b"{", b"\xff\xfe", b'{"image_base64": "AAAA"' + b" " * 10):
            response = await client.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
            assert error_of(response)["code"] == "bad_json"


async def test_concurrent_replays_of_one_job_run_it_once_and_the_others_get_409(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    async with gateway.client(key) as client:
        job = (await submit(client)).json()
        job_id = job["id"]
        upload = gateway.store.head(upload_key(job_id))
        assert upload is not None
        command = JobSubmitted(job=spec_of(job, name), upload=upload).model_dump_json().encode()
        gateway.store.put(command_key(job_id, Stage.INGEST), command, "application/json")
        await gateway.publish(StageStarted(job_id=job_id, stage=Stage.INGEST))
        await gateway.publish(JobCancelled(job=spec_of(job, name), stage=Stage.INGEST))
        await wait_status(client, job_id, "cancelled")

        answers = await asyncio.gather(*(client.post(f"/v1/jobs/{job_id}/replay") for _ in range(5)))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [202, 409, 409, 409, 409], [r.text for r in answers]
        for refused in (r for r in answers if r.status_code == 409):
            assert error_of(refused)["code"] in {"replay_in_progress", "cannot_replay"}
        replays = [e for e in await _events(gateway, job_id) if isinstance(e, ReplayRequested)]
        assert [r.generation for r in replays] == [1]


async def _events(gateway: RunningGateway, job_id: str) -> list[object]:
    js = gateway.nc.jetstream()
    sub = await js.subscribe(job_events_filter(job_id), stream=EVENTS_STREAM, ordered_consumer=True)
    events: list[object] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=1.0)
            events.append(parse_event(msg.data))
            if msg.metadata.num_pending == 0:
                return events
    finally:
        await sub.unsubscribe()
