"""The HTTP API against a real gateway, nats-server and SeaweedFS; the pipeline's events are published
straight to the events stream, as the stages would, so no model runs here."""

import asyncio
import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from contracts.failures import FailureCode
from contracts.keys import artifact_key, command_key, upload_key
from contracts.messages import (
    ImagePrepared,
    JobCancelled,
    JobFailed,
    JobSpec,
    JobSubmitted,
    PointsReserved,
    StageFinished,
    StageProgress,
    StageStarted,
)
from contracts.params import GenerationParams
from contracts.stages import Stage
from contracts.subjects import EVENTS_STREAM, WORK_STREAM, durable_name, job_events_filter, work_subject
from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore, minio_client
from infra.seaweed import SeaweedS3
from services.bus.streams import ensure_streams
from tests.services.gateway.conftest import RunningGateway, running_gateway
from tests.services.job_messages import completed


def picture(kind: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 120, 200)).save(out, format=kind)
    return out.getvalue()


async def submit(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    files = {"image": ("pic.png", picture(), "image/png")}
    data = {k: str(v) for k, v in {"duration": 2, "fps": 8, "steps": 2, **fields}.items()}
    return await client.post("/v1/jobs", files=files, data=data)


def spec_of(job: dict[str, Any], account: str, generation: int = 0) -> JobSpec:
    return JobSpec(
        job_id=job["id"], account=account, params=GenerationParams(**job["parameters"]), generation=generation
    )


async def wait_status(client: httpx.AsyncClient, job_id: str, status: str) -> dict[str, Any]:
    for _ in range(100):
        job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] == status:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} stayed {job['status']}, never {status}")


async def complete(
    gateway: RunningGateway, job: dict[str, Any], account: str, video: bytes, generation: int = 0
) -> None:
    """Publish a whole successful history of ``job``'s ``generation`` with ``video`` as its MP4."""
    spec = spec_of(job, account, generation)
    video_ref = gateway.store.put(artifact_key(spec.job_id, generation, "video.mp4"), video, "video/mp4")
    poster_ref = gateway.store.put(artifact_key(spec.job_id, generation, "poster.png"), picture(), "image/png")
    for stage in Stage:
        await gateway.publish(StageStarted(job_id=spec.job_id, stage=stage, generation=generation))
        await gateway.publish(StageFinished(job_id=spec.job_id, stage=stage, generation=generation, seconds=0.5))
    await gateway.publish(completed(spec, job["price"], width=256, height=192, video=video_ref, poster=poster_ref))


async def read_sse(response: httpx.Response, stop_after: int | None = None) -> list[dict[str, str]]:
    """Events of an SSE response as dicts (id, event, data); comments are kept as {"comment": ...}."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            events.append({"comment": line[1:].strip()})
        elif line == "":
            if current:
                events.append(current)
                current = {}
                if stop_after is not None and sum(1 for e in events if "id" in e) >= stop_after:
                    break
        else:
            name, _, value = line.partition(": ")
            current[name] = value
    return events


# --- auth -----------------------------------------------------------------------------------------


async def test_requests_without_a_valid_key_get_401(gateway: RunningGateway) -> None:
    async with gateway.client() as anonymous, gateway.client("i2v_not-a-key") as wrong:
        for client in (anonymous, wrong):
            response = await client.get("/v1/jobs")
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
        forged = await anonymous.get("/v1/account", params={"token": "i2vt.bG9jYWw.9999999999.forged"})
        assert forged.status_code == 401


# --- submitting -----------------------------------------------------------------------------------


async def test_submit_multipart_and_json_then_list_newest_first(gateway: RunningGateway) -> None:
    _name, key = gateway.account(1000)
    async with gateway.client(key) as client:
        first = await submit(client, seed=7, motion_prompt="waves")
        assert first.status_code == 202, first.text
        job = first.json()
        assert job["status"] == "queued" and job["progress"] == 0
        assert job["price"] == 9 and job["seed"] == 7  # 8 + ceil(256·192 · 16 frames · 2 steps / 2,457,600)
        assert job["parameters"]["motion_prompt"] == "waves"
        assert job["links"] == {
            "self": f"/v1/jobs/{job['id']}",
            "events": f"/v1/jobs/{job['id']}/events",
            "cancel": f"/v1/jobs/{job['id']}/cancel",
            "video": f"/v1/jobs/{job['id']}/video",
            "poster": f"/v1/jobs/{job['id']}/poster",
        }
        assert first.headers["location"] == job["links"]["self"]
        assert gateway.store.head(upload_key(job["id"])) is not None

        second = await client.post(
            "/v1/jobs",
            json={"image_base64": base64.b64encode(picture("WEBP")).decode(), "duration": 4, "fps": 24},
        )
        assert second.status_code == 202, second.text
        assert second.json()["price"] == 8 + 48  # 96 frames at 25 steps
        assert second.json()["seed"] >= 0  # -1 resolved at submit

        page = (await client.get("/v1/jobs", params={"limit": 1})).json()
        assert [j["id"] for j in page["items"]] == [second.json()["id"]]
        older = (await client.get("/v1/jobs", params={"limit": 1, "cursor": page["next_cursor"]})).json()
        assert [j["id"] for j in older["items"]] == [job["id"]] and older["next_cursor"] is None
        assert (await client.get(f"/v1/jobs/{job['id']}")).json()["status"] == "queued"


async def test_someone_elses_job_is_404_never_403(gateway: RunningGateway) -> None:
    _, owner_key = gateway.account(1000)
    _, other_key = gateway.account(1000)
    async with gateway.client(owner_key) as owner, gateway.client(other_key) as other:
        job_id = (await submit(owner)).json()["id"]
        for method, path in [
            ("GET", f"/v1/jobs/{job_id}"),
            ("GET", f"/v1/jobs/{job_id}/events"),
            ("GET", f"/v1/jobs/{job_id}/video"),
            ("POST", f"/v1/jobs/{job_id}/cancel"),
            ("DELETE", f"/v1/jobs/{job_id}"),
            ("GET", "/v1/jobs/jnosuchjob000"),
        ]:
            response = await other.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "job_not_found"
        assert (await other.get("/v1/jobs")).json()["items"] == []


async def test_points_that_do_not_cover_the_price_get_402(gateway: RunningGateway) -> None:
    _, key = gateway.account(8)
    async with gateway.client(key) as client:
        response = await submit(client)  # 9 points
        assert response.status_code == 402
        error = response.json()["error"]
        assert error["code"] == "insufficient_points"
        assert error["details"] == {"price": 9, "balance": 8}
        assert "9 points" in error["message"]


async def test_a_gif_or_a_text_file_gets_415(gateway: RunningGateway) -> None:
    _, key = gateway.account(100)
    async with gateway.client(key) as client:
        for name, data in [("cat.gif", picture("GIF")), ("notes.txt", b"hello, not a picture\n")]:
            response = await client.post("/v1/jobs", files={"image": (name, data, "image/gif")})
            assert response.status_code == 415, response.text
            assert response.json()["error"]["field"] == "image"
        gif = (await client.post("/v1/jobs", files={"image": ("cat.gif", picture("GIF"), "image/gif")})).json()
        assert "GIF is not supported" in gif["error"]["message"]
        wrong_type = await client.post("/v1/jobs", content=picture(), headers={"Content-Type": "image/png"})
        assert wrong_type.status_code == 415


async def test_bad_fields_get_422_naming_the_field(gateway: RunningGateway) -> None:
    _, key = gateway.account(100)
    async with gateway.client(key) as client:
        response = await submit(client, fps=0)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["field"] == "fps" and error["message"].startswith("fps:")
        as_json = await client.post("/v1/jobs", json={"image_base64": base64.b64encode(picture()).decode(), "fps": 0})
        assert as_json.status_code == 422 and as_json.json()["error"]["field"] == "fps"
        cases: list[tuple[dict[str, object], str]] = [
            ({"duration": 99}, "duration"),
            ({"colour": "red"}, "colour"),
            ({"model": "/etc"}, "model"),
        ]
        for fields, field in cases:
            response = await submit(client, **fields)
            assert (response.status_code, response.json()["error"]["field"]) == (422, field), response.text
        missing = await client.post("/v1/jobs", data={"fps": "8"}, files={"other": ("x", b"x")})
        assert missing.status_code == 422 and missing.json()["error"]["field"] == "image"
        quote = await client.get("/v1/quote", params={"duration": 2, "fps": 0})
        assert quote.status_code == 422 and quote.json()["error"]["field"] == "fps"


async def test_an_image_over_the_limit_gets_413(gateway: RunningGateway) -> None:
    _, key = gateway.account(100)
    async with gateway.client(key) as client:
        big = picture() + os.urandom(26 * 2**20)
        response = await client.post("/v1/jobs", files={"image": ("big.png", big, "image/png")})
        assert response.status_code == 413
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("too_large", "image")
        assert "the limit is 25 MB" in error["message"]


async def test_past_the_concurrency_limit_gets_429(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    async with gateway.client(key) as client:
        accepted = [await submit(client), await submit(client)]  # the fixture's limit is 2
        assert [r.status_code for r in accepted] == [202, 202]
        refused = await submit(client)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_active_jobs"
        assert refused.headers["retry-after"]
        # Once one finishes, there is room again.
        await complete(gateway, accepted[0].json(), (await client.get("/v1/account")).json()["name"], b"mp4")
        await wait_status(client, accepted[0].json()["id"], "succeeded")
        assert (await submit(client)).status_code == 202


# --- following ------------------------------------------------------------------------------------


async def test_sse_history_then_live_and_resume_without_loss_or_duplicates(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    async with gateway.client(key) as client:
        job = (await submit(client)).json()
        job_id = job["id"]
        # History from before anyone listens.
        published = [await gateway.publish(StageStarted(job_id=job_id, stage=Stage.INGEST))]
        published.append(await gateway.publish(StageFinished(job_id=job_id, stage=Stage.INGEST, seconds=0.1)))

        async with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            seen: list[dict[str, str]] = []
            current: dict[str, str] = {}
            # Live events published while we read; stop reading half way, as a dropped connection would.
            for step in range(1, 4):
                published.append(
                    await gateway.publish(StageProgress(job_id=job_id, stage=Stage.LATENT, step=step, total=10))
                )
            while len(seen) < 4:
                line = await lines.__anext__()
                if line == "" and current:
                    seen.append(current)
                    current = {}
                elif line and not line.startswith(":") and not line.startswith("retry"):
                    field, _, value = line.partition(": ")
                    current[field] = value
        last_id = seen[-1]["id"]
        # More happens while we are away.
        for step in range(4, 6):
            published.append(
                await gateway.publish(StageProgress(job_id=job_id, stage=Stage.LATENT, step=step, total=10))
            )

        async def finish() -> None:
            await asyncio.sleep(0.8)  # long enough for a heartbeat on the resumed stream
            await complete(gateway, job, name, b"fake mp4")

        finisher = asyncio.create_task(finish())
        async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": last_id}) as resumed:
            rest = await read_sse(resumed)
        await finisher

        events = seen + [e for e in rest if "id" in e]
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(set(ids)), "duplicates or disorder"
        stream_ids = [seq for seq in await _job_sequences(gateway, job_id)]
        assert ids == stream_ids, "lost events"
        assert set(published) <= set(ids)
        assert events[0]["event"] == "StageStarted" and events[-1]["event"] == "JobCompleted"
        assert any(e.get("comment") == "heartbeat" for e in rest)
        # Clients are shown public fields and this API's URLs, never where objects are kept or whose they are.
        shown = json.loads(events[-1]["data"])
        assert shown["video"] == job["links"]["video"] and shown["poster"] == job["links"]["poster"]
        assert shown["output"]["frame_count"] == 16 and shown["generation"] == 0
        for event in events:
            if "data" in event:
                for internal in (gateway.store.bucket, name, "sha256", '"jobs/', "schema_version"):
                    assert internal not in event["data"], (internal, event)

        # A late subscriber gets the whole history, and the stream ends after the terminal event.
        async with client.stream("GET", f"/v1/jobs/{job_id}/events") as late:
            replay = [int(e["id"]) for e in await read_sse(late) if "id" in e]
        assert replay == stream_ids
        final = await wait_status(client, job_id, "succeeded")
        assert final["progress"] == 100
        # The second StageFinished of ingest carried the same Nats-Msg-Id: JetStream dropped it.
        assert final["timings"] == {**{s.value: 0.5 for s in Stage}, "ingest": 0.1}
        # Resuming after the end: 204 tells EventSource to stop reconnecting.
        done = await client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(stream_ids[-1])})
        assert done.status_code == 204


async def _job_sequences(gateway: RunningGateway, job_id: str) -> list[int]:
    js = gateway.nc.jetstream()
    sub = await js.subscribe(job_events_filter(job_id), stream=EVENTS_STREAM, ordered_consumer=True)
    sequences = []
    try:
        while True:
            msg = await sub.next_msg(timeout=1.0)
            sequences.append(msg.metadata.sequence.stream)
            if msg.metadata.num_pending == 0:
                return sequences
    finally:
        await sub.unsubscribe()


async def test_status_and_progress_follow_the_events(gateway: RunningGateway) -> None:
    _name, key = gateway.account(1000)
    async with gateway.client(key) as client:
        job = (await submit(client)).json()
        job_id = job["id"]
        for stage in (Stage.INGEST, Stage.BILLING):
            await gateway.publish(StageStarted(job_id=job_id, stage=stage))
            await gateway.publish(StageFinished(job_id=job_id, stage=stage, seconds=0.25))
        await gateway.publish(StageStarted(job_id=job_id, stage=Stage.LATENT))
        await gateway.publish(StageProgress(job_id=job_id, stage=Stage.LATENT, step=5, total=10))
        for _ in range(100):
            status = (await client.get(f"/v1/jobs/{job_id}")).json()
            if status["step"] == 5:
                break
            await asyncio.sleep(0.05)
        assert status["status"] == "generating"
        assert status["progress"] == 5 + 5 + 35
        assert status["timings"] == {"ingest": 0.25, "billing": 0.25}


# --- cancel, media, delete ------------------------------------------------------------------------


async def test_cancel_asks_the_pipeline_to_stop(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    async with gateway.client(key) as client:
        job = (await submit(client)).json()
        await gateway.publish(StageStarted(job_id=job["id"], stage=Stage.INGEST))
        await wait_status(client, job["id"], "preprocessing")
        response = await client.post(f"/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 202 and response.json()["cancel_requested"] is True
        async with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
            events = await read_sse(stream, stop_after=2)
        assert [e["event"] for e in events if "id" in e] == ["StageStarted", "CancelRequested"]
        assert json.loads(events[-1]["data"])["job_id"] == job["id"]

        await complete(gateway, job, name, b"too late")
        await wait_status(client, job["id"], "succeeded")
        finished = await client.post(f"/v1/jobs/{job['id']}/cancel")
        assert finished.status_code == 409 and finished.json()["error"]["code"] == "job_finished"


async def test_video_supports_range_requests(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    video = os.urandom(5000)
    async with gateway.client(key) as client:
        job = (await submit(client)).json()
        not_yet = await client.get(f"/v1/jobs/{job['id']}/video")
        assert not_yet.status_code == 409 and not_yet.json()["error"]["code"] == "not_ready"
        await complete(gateway, job, name, video)
        await wait_status(client, job["id"], "succeeded")

        whole = await client.get(f"/v1/jobs/{job['id']}/video")
        assert whole.status_code == 200 and whole.content == video
        assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"

        part = await client.get(f"/v1/jobs/{job['id']}/video", headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206
        assert part.content == video[100:1100]
        assert part.headers["content-range"] == "bytes 100-1099/5000"
        assert part.headers["content-length"] == "1000"

        tail = await client.get(f"/v1/jobs/{job['id']}/video", headers={"Range": "bytes=-10"})
        assert (tail.status_code, tail.content) == (206, video[-10:])
        open_ended = await client.get(f"/v1/jobs/{job['id']}/video", headers={"Range": "bytes=4990-"})
        assert (open_ended.status_code, open_ended.content) == (206, video[4990:])
        outside = await client.get(f"/v1/jobs/{job['id']}/video", headers={"Range": "bytes=6000-7000"})
        assert outside.status_code == 416 and outside.headers["content-range"] == "bytes */5000"

        poster = await client.get(f"/v1/jobs/{job['id']}/poster")
        assert poster.status_code == 200 and poster.content.startswith(b"\x89PNG")
        download = await client.get(f"/v1/jobs/{job['id']}/video", params={"download": "1"})
        assert download.headers["content-disposition"].startswith("attachment")


async def test_video_and_poster_answer_head_and_revalidate_by_etag(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    video = os.urandom(3000)
    async with gateway.client(key) as client:
        job = (await submit(client)).json()
        await complete(gateway, job, name, video)
        await wait_status(client, job["id"], "succeeded")
        url = job["links"]["video"]
        whole = await client.get(url)
        etag = whole.headers["etag"]
        assert etag.startswith('"') and whole.content == video

        head = await client.head(url)
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == "3000" and head.headers["etag"] == etag
        assert head.headers["content-type"] == "video/mp4" and head.headers["accept-ranges"] == "bytes"
        poster = await client.head(job["links"]["poster"])
        assert poster.status_code == 200 and poster.headers["content-type"] == "image/png"

        for headers in ({"If-None-Match": etag}, {"If-None-Match": f'W/{etag}, "other"'}, {"If-None-Match": "*"}):
            cached = await client.get(url, headers=headers)
            assert (cached.status_code, cached.content, cached.headers["etag"]) == (304, b"", etag), headers
        # The cached copy is current whatever part of it a player asks for.
        ranged = await client.get(url, headers={"If-None-Match": etag, "Range": "bytes=0-9"})
        assert ranged.status_code == 304
        assert (await client.head(url, headers={"If-None-Match": etag})).status_code == 304
        changed = await client.get(url, headers={"If-None-Match": '"something-else"'})
        assert changed.status_code == 200 and changed.content == video
        # If-Range: a range of the same version is served, one of another version gets the whole file.
        same = await client.get(url, headers={"If-Range": etag, "Range": "bytes=0-9"})
        assert (same.status_code, same.content) == (206, video[:10])
        other = await client.get(url, headers={"If-Range": '"older"', "Range": "bytes=0-9"})
        assert (other.status_code, other.content) == (200, video)


async def test_delete_removes_the_files_and_keeps_the_ledger(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    async with gateway.client(key) as client:
        job = (await submit(client)).json()
        running = await client.delete(f"/v1/jobs/{job['id']}")
        assert running.status_code == 409
        await complete(gateway, job, name, b"video bytes")
        await wait_status(client, job["id"], "succeeded")
        gateway.ledger.reserve(job["id"], 0, name, job["price"])  # as billing would have
        entries_before = gateway.ledger.entries(name)

        assert (await client.delete(f"/v1/jobs/{job['id']}")).status_code == 204
        assert gateway.store.head(artifact_key(job["id"], 0, "video.mp4")) is None
        assert gateway.store.head(upload_key(job["id"])) is None
        gone = await client.get(f"/v1/jobs/{job['id']}/video")
        assert gone.status_code == 410
        assert (await client.get(f"/v1/jobs/{job['id']}")).json()["deleted"] is True
        assert job["id"] not in [j["id"] for j in (await client.get("/v1/jobs")).json()["items"]]
        assert gateway.ledger.entries(name) == entries_before


async def test_account_quote_docs(gateway: RunningGateway) -> None:
    name, key = gateway.account(321)
    async with gateway.client(key) as client:
        account = (await client.get("/v1/account")).json()
        assert account["name"] == name and account["balance"] == 321
        assert account["entries"][0]["kind"] == "credit" and account["entries"][0]["points"] == 321
        quote = (await client.get("/v1/quote", params={"duration": 8, "fps": 24})).json()
        assert quote == {
            "duration": 8,
            "fps": 24,
            "frames": 192,
            "steps": 25,
            "width": 256,
            "height": 192,
            "price": 104,
        }
        # Steps and resolution are priced: pixels x frames x steps.
        wide: dict[str, str | int] = {"duration": 4, "fps": 8, "steps": 25, "resolution": "1024x576"}
        assert (await client.get("/v1/quote", params=wide)).json()["price"] == 200
        assert (await client.get("/v1/quote", params={**wide, "steps": 50})).json()["price"] == 392
        too_big = await client.get("/v1/quote", params={"duration": 8, "fps": 24, "resolution": "2048x2048"})
        assert too_big.status_code == 422, too_big.text
        openapi = (await client.get("/openapi.json")).json()
        assert "/v1/jobs/{job_id}/events" in openapi["paths"]
        assert (await client.get("/docs")).status_code == 200
        asyncapi = (await client.get("/asyncapi.json")).json()
        assert any(c.startswith("i2v.work.latent") for c in asyncapi["channels"])
        page = await client.get("/")
        assert page.status_code == 200 and "<title>i2v" in page.text


async def test_replay_resumes_a_failed_job_at_its_stage_through_billing(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    async with gateway.client(key) as client:
        job = (await submit(client, seed=5)).json()
        running = await client.post(f"/v1/jobs/{job['id']}/replay")
        assert running.status_code == 409 and running.json()["error"]["code"] == "cannot_replay"

        # The job got as far as latent and failed there: billing's and latent's commands are stored.
        spec = JobSpec(job_id=job["id"], account=name, params=GenerationParams(seed=5, duration=2))
        image = gateway.store.put(artifact_key(job["id"], 0, "image.png"), picture("PNG"), "image/png")
        prepared = ImagePrepared(job=spec, image=image, width=256, height=192, source_width=256, source_height=192)
        reserved = PointsReserved(job=spec, image=image, width=256, height=192, price=16)
        gateway.store.put(
            command_key(job["id"], Stage.BILLING), prepared.model_dump_json().encode(), "application/json"
        )
        gateway.store.put(command_key(job["id"], Stage.LATENT), reserved.model_dump_json().encode(), "application/json")
        await gateway.publish(StageStarted(job_id=job["id"], stage=Stage.LATENT))
        await gateway.publish(
            JobFailed(job=spec, stage=Stage.LATENT, code=FailureCode.INTERNAL, reason="GPU fell off the bus")
        )
        await wait_status(client, job["id"], "failed")

        js = gateway.nc.jetstream()
        billing = await js.pull_subscribe(work_subject(Stage.BILLING), durable=durable_name(Stage.BILLING))
        replayed = await client.post(f"/v1/jobs/{job['id']}/replay")
        assert replayed.status_code == 202, replayed.text
        # The answer describes the job as replayed: queued under a new generation, the stages before kept.
        answer = replayed.json()
        assert (answer["status"], answer["generation"], answer["error"], answer["progress"]) == ("queued", 1, None, 0)
        [msg] = await billing.fetch(1, timeout=10)
        await msg.ack()
        command = ImagePrepared.model_validate_json(msg.data)
        assert command.job.generation == 1 and command.resume == Stage.LATENT
        assert command.resume_command is not None
        assert command.resume_command.key == command_key(job["id"], Stage.LATENT)

        _other, other_key = gateway.account(1000)
        async with gateway.client(other_key) as other:
            assert (await other.post(f"/v1/jobs/{job['id']}/replay")).status_code == 404


async def test_sse_follows_a_replayed_job_to_the_new_generations_end(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    async with gateway.client(key) as client:
        job = (await submit(client)).json()
        job_id, events_url = job["id"], job["links"]["events"]
        spec = spec_of(job, name)
        upload = gateway.store.head(upload_key(job_id))
        assert upload is not None
        # Ingest started (and kept its command, as the runner does), then the job was cancelled.
        command = JobSubmitted(job=spec, upload=upload).model_dump_json().encode()
        gateway.store.put(command_key(job_id, Stage.INGEST), command, "application/json")
        await gateway.publish(StageStarted(job_id=job_id, stage=Stage.INGEST))
        assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status_code == 202
        await gateway.publish(JobCancelled(job=spec, stage=Stage.INGEST))
        await wait_status(client, job_id, "cancelled")
        async with client.stream("GET", events_url) as before:
            ended = [e for e in await asyncio.wait_for(read_sse(before), 10) if "id" in e]
        assert ended[-1]["event"] == "JobCancelled", "generation 0 was current: its end ended the stream"

        replayed = await client.post(f"/v1/jobs/{job_id}/replay")
        assert replayed.status_code == 202, replayed.text
        assert (replayed.json()["status"], replayed.json()["generation"]) == ("queued", 1)
        assert (await wait_status(client, job_id, "queued"))["generation"] == 1

        async def run_generation_1() -> None:
            await asyncio.sleep(0.5)  # the follower below is reading history by then
            await gateway.publish(StageProgress(job_id=job_id, stage=Stage.LATENT, generation=1, step=1, total=2))
            await complete(gateway, job, name, b"mp4 of generation 1", generation=1)

        runner = asyncio.create_task(run_generation_1())
        async with client.stream("GET", events_url) as stream:
            events = [e for e in await asyncio.wait_for(read_sse(stream), 20) if "id" in e]
        await runner
        seen = [(e["event"], json.loads(e["data"])["generation"]) for e in events]
        assert seen[: len(ended)] == [(e["event"], 0) for e in ended]
        assert seen[len(ended)] == ("ReplayRequested", 1)
        assert ("StageProgress", 1) in seen
        assert seen[-1] == ("JobCompleted", 1)
        assert json.loads(events[-1]["data"])["video"] == f"/v1/jobs/{job_id}/video"

        # A client resuming after generation 0's end (EventSource does) is taken to generation 1's.
        async with client.stream("GET", events_url, headers={"Last-Event-ID": ended[-1]["id"]}) as resumed:
            rest = [e for e in await asyncio.wait_for(read_sse(resumed), 10) if "id" in e]
        assert rest == events[len(ended) :]
        final = await wait_status(client, job_id, "succeeded")
        assert final["generation"] == 1 and final["progress"] == 100
        done = await client.get(events_url, headers={"Last-Event-ID": events[-1]["id"]})
        assert done.status_code == 204


async def test_a_job_that_cannot_be_queued_leaves_no_upload_behind(gateway: RunningGateway, seaweed: SeaweedS3) -> None:
    _, key = gateway.account(100)
    js = gateway.nc.jetstream()
    await js.delete_stream(WORK_STREAM)  # publishing a command now finds no stream
    try:
        async with gateway.client(key) as client:
            response = await submit(client)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "unavailable"
            assert (await client.get("/v1/jobs")).json()["items"] == []
            assert (await client.get("/v1/account")).json()["active_jobs"] == 0
    finally:
        await ensure_streams(js)
    s3 = minio_client(seaweed.endpoint, seaweed.access_key, seaweed.secret_key)
    assert [o.object_name for o in s3.list_objects(gateway.store.bucket, prefix="jobs/", recursive=True)] == []


async def test_uploads_are_checked_for_the_model_the_server_runs(
    tmp_path: Path, gateway_nats: NatsServer, seaweed: SeaweedS3, object_store: S3ObjectStore
) -> None:
    folder = tmp_path / "svd-xt"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "config.json").write_text('{"num_frames": 14}')
    async with running_gateway(tmp_path / "a", gateway_nats, seaweed, object_store, model=str(folder)) as running:
        _, key = running.account(100)
        async with running.client(key) as client:
            accepted = await submit(client)
            assert accepted.status_code == 202, accepted.text
            assert accepted.json()["parameters"]["model"] == str(folder)
            assert (await submit(client, model="tiny")).status_code == 202
    missing = str(tmp_path / "no-such-model")
    async with running_gateway(tmp_path / "b", gateway_nats, seaweed, object_store, model=missing) as running:
        _, key = running.account(100)
        async with running.client(key) as client:
            refused = await submit(client)
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert (error["code"], error["field"]) == ("model_not_found", "model")
            assert (await submit(client, model="tiny")).status_code == 202


async def test_healthz_says_whether_the_jobs_index_is_current(gateway: RunningGateway) -> None:
    async with gateway.client() as anonymous:
        health = await anonymous.get("/healthz")
    assert health.status_code == 200
    assert health.json()["ok"] is True and health.json()["index"]["error"] is None


async def test_the_document_states_the_bounds_the_api_checks_and_405_names_the_allowed_methods(
    gateway: RunningGateway,
) -> None:
    _, key = gateway.account(100)
    async with gateway.client(key) as client:
        openapi = (await client.get("/openapi.json")).json()
        quote = {p["name"]: p["schema"] for p in openapi["paths"]["/v1/quote"]["get"]["parameters"]}
        assert (quote["duration"]["minimum"], quote["duration"]["maximum"]) == (1, 8)
        assert (quote["fps"]["minimum"], quote["fps"]["maximum"]) == (4, 24)
        assert (quote["steps"]["minimum"], quote["steps"]["maximum"]) == (1, 50)
        body = openapi["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["properties"]["image_base64"]["minLength"] == 1
        for path in ("/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/replay"):
            assert {"404", "409"} <= set(openapi["paths"][path]["post"]["responses"]), path
        for method, path, allowed in [
            ("OPTIONS", "/v1/jobs", "GET, POST"),
            ("PUT", "/v1/jobs/jx", "DELETE, GET"),
            ("TRACE", "/v1/jobs/jx/video", "GET, HEAD"),
        ]:
            response = await client.request(method, path)
            assert (response.status_code, response.headers.get("allow")) == (405, allowed), (method, path)
            assert response.json()["error"]["code"] == "method_not_allowed"


async def test_a_completion_naming_another_jobs_files_is_not_served(gateway: RunningGateway) -> None:
    victim_name, victim_key = gateway.account(1000)
    name, key = gateway.account(1000)
    secret = os.urandom(2000)
    async with gateway.client(victim_key) as victim:
        theirs = (await submit(victim)).json()
        await complete(gateway, theirs, victim_name, secret)
    async with gateway.client(key) as client:
        job = (await submit(client)).json()
        # A completion for this job whose refs point at the other job's video and poster.
        spec = spec_of(job, name, 0)
        video_ref = gateway.store.head(artifact_key(theirs["id"], 0, "video.mp4"))
        poster_ref = gateway.store.head(artifact_key(theirs["id"], 0, "poster.png"))
        assert video_ref is not None and poster_ref is not None
        await gateway.publish(completed(spec, job["price"], width=256, height=192, video=video_ref, poster=poster_ref))
        await wait_status(client, job["id"], "succeeded")
        for link in ("video", "poster"):
            answer = await client.get(job["links"][link])
            assert answer.status_code == 404 and secret not in answer.content, link
