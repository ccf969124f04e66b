"""Live previews through the gateway: the SSE event with its URL, and GET /v1/jobs/{id}/previews/{n} with
the video's access rules (owner, link token for the job; anyone else is told nothing)."""

import json
from typing import Any

from contracts.keys import PREVIEW_CONTENT_TYPE, preview_key
from contracts.messages import StagePreview
from contracts.stages import Stage
from tests.services.gateway.conftest import RunningGateway
from tests.services.gateway.test_api import read_sse, submit
from tests.services.gateway.test_auth import link_token

PREVIEW = b"RIFF\x10\x00\x00\x00WEBPVP8 a preview's bytes"


async def announce(gateway: RunningGateway, job: dict[str, Any], index: int, data: bytes) -> None:
    """What the latent stage does: store the preview, then publish its event."""
    ref = gateway.store.put(preview_key(job["id"], 0, index), data, PREVIEW_CONTENT_TYPE)
    event = StagePreview(job_id=job["id"], stage=Stage.LATENT, index=index, step=3, total=6, preview=ref)
    await gateway.publish(event)


async def test_the_preview_event_carries_a_url_the_owner_loads(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    async with gateway.client(key) as owner:
        job = (await submit(owner)).json()
        await announce(gateway, job, 0, PREVIEW)
        async with owner.stream("GET", job["links"]["events"]) as stream:
            events = await read_sse(stream, stop_after=1)
        [shown] = [json.loads(e["data"]) for e in events if e.get("event") == "StagePreview"]
        assert shown == {
            "type": "StagePreview",
            "job_id": job["id"],
            "generation": 0,
            "stage": "latent",
            "index": 0,
            "step": 3,
            "total": 6,
            "url": f"/v1/jobs/{job['id']}/previews/0?generation=0",
        }

        response = await owner.get(shown["url"])
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == PREVIEW_CONTENT_TYPE and response.content == PREVIEW
        assert response.headers["cache-control"] == "private, no-cache"  # a retried stage rewrites the number
        again = await owner.get(shown["url"], headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
        # Without the generation: the job's current one.
        assert (await owner.get(f"/v1/jobs/{job['id']}/previews/0")).content == PREVIEW
        missing = await owner.get(f"/v1/jobs/{job['id']}/previews/1")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert (await owner.get(f"/v1/jobs/{job['id']}/previews/-1")).status_code == 422


async def test_a_preview_is_the_owners_and_a_link_token_for_the_job_opens_it(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    _, other_key = gateway.account(1000)
    async with gateway.client(key) as owner:
        job = (await submit(owner)).json()
        await announce(gateway, job, 0, PREVIEW)
        token = await link_token(owner, job["links"]["self"])
    url = f"/v1/jobs/{job['id']}/previews/0"
    async with gateway.client(other_key) as other, gateway.client() as anonymous:
        refused = await other.get(url)
        assert refused.status_code == 404 and PREVIEW not in refused.content
        assert (await anonymous.get(url)).status_code == 401
        linked = await anonymous.get(url, params={"token": token})
        assert (linked.status_code, linked.content) == (200, PREVIEW)
