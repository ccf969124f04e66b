"""The split is faithful: latent service -> bus -> decode service gives what diffusers' own
StableVideoDiffusionPipeline gives in one process with the same tiny model, image and seed."""

import asyncio
from pathlib import Path

import nats
import numpy as np
import pytest
import torch

from contracts.keys import artifact_key
from contracts.messages import FramesReady, JobSpec, PointsReserved
from contracts.params import GenerationParams
from contracts.stages import Stage
from contracts.subjects import WORK_STREAM, durable_name, work_subject
from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore
from infra.seaweed import SeaweedS3
from pipeline.decode import frames_to_uint8
from pipeline.image import prepare_image
from pipeline.latents import fps_conditioning
from pipeline.models import TINY_DEFAULT_RESOLUTION, TINY_NATIVE_FRAMES, build_tiny_svd
from pipeline.tensors import frames_from_bytes, latents_from_bytes
from services.billing.seal import seal_from
from services.bus.publishing import route
from services.bus.streams import ensure_streams
from services.decode.app import build_app as build_decode
from services.latent.app import build_app as build_latent
from tests.server_settings import settings_for_servers

pytestmark = [pytest.mark.slow, pytest.mark.integration]

HARBOR = Path(__file__).resolve().parents[2] / "examples" / "harbor.png"


async def test_latent_then_decode_over_the_bus_equals_the_one_process_pipeline(
    nats_server: NatsServer, seaweed: SeaweedS3, object_store: S3ObjectStore, tmp_path: Path
) -> None:
    settings = settings_for_servers(nats_server, seaweed, object_store, tmp_path, heartbeat_s=1.0)
    # One second at 8 fps is exactly the tiny model's native frame count, so interpolation is the
    # identity and the delivered frames are the decoded frames.
    params = GenerationParams(duration=1, fps=TINY_NATIVE_FRAMES, steps=3, seed=4242, augmentation_level=0.02)
    prepared = prepare_image(HARBOR.read_bytes(), model_size=TINY_DEFAULT_RESOLUTION)
    job = JobSpec(job_id="jfaithful1", account="local", params=params)
    image_ref = object_store.put(artifact_key(job.job_id, 0, "image.png"), prepared.png, "image/png")
    # Sealed as billing would: latent runs nothing without it (services/billing/seal.py).
    seal = seal_from(settings).sign(job, 12)
    command = PointsReserved(
        job=job, image=image_ref, width=prepared.width, height=prepared.height, price=12, seal=seal
    )

    latent, decode = build_latent(settings), build_decode(settings)
    await latent.start()
    await decode.start()
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        where = route(command)
        await js.publish(where.subject, command.model_dump_json().encode(), headers={"Nats-Msg-Id": where.msg_id})
        # Stand in for the mux service: its durable receives what decode produced.
        sub = await js.pull_subscribe(work_subject(Stage.MUX), durable=durable_name(Stage.MUX), stream=WORK_STREAM)
        [msg] = await sub.fetch(1, timeout=180)
        await msg.ack()
        ready = FramesReady.model_validate_json(msg.data)
    finally:
        await nc.close()
        await latent.stop()
        await decode.stop()

    frames = frames_from_bytes(object_store.get(ready.frames))
    stored_latents, _ = latents_from_bytes(
        object_store.get(object_store.head(artifact_key(job.job_id, 0, "latents.safetensors")))  # type: ignore[arg-type]
    )

    pipe = build_tiny_svd()
    common = dict(
        height=prepared.height,
        width=prepared.width,
        num_frames=TINY_NATIVE_FRAMES,
        num_inference_steps=params.steps,
        min_guidance_scale=1.0,
        max_guidance_scale=params.cfg_scale,
        fps=fps_conditioning(TINY_NATIVE_FRAMES, params.duration),
        motion_bucket_id=params.motion_bucket_id,
        noise_aug_strength=params.augmentation_level,
    )
    expected_latents = pipe(
        prepared.image, generator=torch.Generator("cpu").manual_seed(params.seed), output_type="latent", **common
    ).frames
    expected = pipe(
        prepared.image, generator=torch.Generator("cpu").manual_seed(params.seed), output_type="np", **common
    ).frames[0]

    assert ready.frame_count == frames.shape[0] == TINY_NATIVE_FRAMES
    torch.testing.assert_close(stored_latents, expected_latents.float(), atol=1e-5, rtol=1e-5)
    expected_u8 = frames_to_uint8(np.asarray(expected, dtype=np.float32))
    assert frames.shape == expected_u8.shape
    assert np.abs(frames.astype(int) - expected_u8.astype(int)).max() <= 1
    await asyncio.sleep(0)
