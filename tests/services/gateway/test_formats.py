"""Every output format through the API: served with its media type, by byte ranges, decodable; and the
job resource says what the camera made of the motion prompt."""

import io
from pathlib import Path

import av
import pytest
from PIL import Image

from contracts.keys import artifact_key
from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore
from infra.seaweed import SeaweedS3
from pipeline.video import content_type_of_format, encode_video, extension_of_format
from tests.pipeline.pictures import shipped_clip
from tests.services.gateway.conftest import RunningGateway, running_gateway
from tests.services.gateway.test_api import picture, spec_of, submit, wait_status
from tests.services.job_messages import completed


@pytest.mark.parametrize("format", ["mp4", "webm", "gif", "webp"])
async def test_each_format_is_served_with_its_type_and_byte_ranges(gateway: RunningGateway, format: str) -> None:
    name, key = gateway.account(1000)
    frames = shipped_clip("carphone_pristine.mp4", 8)[:, :96, :128]  # real footage, even sides
    video = encode_video(frames, 8, format=format, quality="low")
    content_type = content_type_of_format(format)
    async with gateway.client(key) as client:
        job = (await submit(client, format=format, loop="pingpong", quality="low")).json()
        assert job["parameters"]["format"] == format and job["parameters"]["loop"] == "pingpong"
        spec = spec_of(job, name)
        stored = gateway.store.put(
            artifact_key(spec.job_id, 0, f"video{extension_of_format(format)}"), video, content_type
        )
        poster = gateway.store.put(artifact_key(spec.job_id, 0, "poster.png"), picture(), "image/png")
        done = completed(spec, job["price"], width=128, height=96, video=stored, poster=poster)
        await gateway.publish(done.model_copy(update={"format": format, "content_type": content_type}))
        status = await wait_status(client, job["id"], "succeeded")
        assert status["output"]["format"] == format and status["output"]["content_type"] == content_type

        whole = await client.get(f"/v1/jobs/{job['id']}/video")
        assert whole.status_code == 200 and whole.headers["content-type"] == content_type
        assert whole.content == video
        half = len(video) // 2
        head = await client.get(f"/v1/jobs/{job['id']}/video", headers={"Range": f"bytes=0-{half - 1}"})
        tail = await client.get(f"/v1/jobs/{job['id']}/video", headers={"Range": f"bytes={half}-"})
        assert (head.status_code, tail.status_code) == (206, 206)
        assert head.content + tail.content == video
        download = await client.get(f"/v1/jobs/{job['id']}/video", params={"download": "1"})
        assert download.headers["content-disposition"].endswith(f'{extension_of_format(format)}"')
    assert decoded_frames(head.content + tail.content, content_type) == len(frames)


def decoded_frames(data: bytes, content_type: str) -> int:
    """Frames in the file: Pillow reads animated GIF and WebP (FFmpeg does not read animated WebP), PyAV the rest."""
    if content_type.startswith("image/"):
        with Image.open(io.BytesIO(data)) as image:
            return int(getattr(image, "n_frames", 1))
    with av.open(io.BytesIO(data), mode="r") as container:
        return len(list(container.decode(video=0)))


async def test_the_job_says_which_camera_move_it_read_and_which_words_it_did_not(
    tmp_path: Path, gateway_nats: NatsServer, seaweed: SeaweedS3, object_store: S3ObjectStore
) -> None:
    async with running_gateway(tmp_path, gateway_nats, seaweed, object_store, gateway_max_active_jobs=3) as gateway:
        _name, key = gateway.account(1000)
        async with gateway.client(key) as client:
            english = (await submit(client, motion_prompt="slow zoom in, then pan left with sparkles")).json()
            chinese = (await submit(client, motion_prompt="缓慢推进")).json()
            plain = (await submit(client)).json()
            listed = {item["id"]: item for item in (await client.get("/v1/jobs")).json()["items"]}
    assert english["camera"]["words"] == ["slow", "zoom", "in", "slow", "pan", "left"]
    assert "sparkles" in english["camera"]["unknown"]
    assert chinese["camera"] == {"words": ["slow", "dolly", "in"], "unknown": []}  # 推进: push in
    assert plain["camera"] == {"words": ["static"], "unknown": []}
    assert listed[english["id"]]["camera"] == english["camera"]
