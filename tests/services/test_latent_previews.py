"""The latent service's live previews on a real nats-server and SeaweedFS: stored WebPs, announced in order."""

import io
from pathlib import Path

import numpy as np
import pytest
from faststream import FastStream
from nats.js import JetStreamContext
from PIL import Image

from contracts.keys import PREVIEW_CONTENT_TYPE, artifact_key, preview_key
from contracts.messages import JobSpec, PointsReserved, StageFinished, StagePreview, StageProgress
from contracts.params import GenerationParams
from contracts.stages import Stage
from contracts.subjects import job_events_filter
from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore
from services.billing.seal import ReservationSeal
from services.bus.publishing import route
from services.latent.app import build_app
from tests.services.bus_helpers import TEST_BILLING_SECRET, Tail, consumer_drained, has, settings_for

pytestmark = pytest.mark.integration

WIDTH, HEIGHT, STEPS, PRICE = 128, 64, 5, 10
SEAL = ReservationSeal(TEST_BILLING_SECRET.encode())


def reserved(store: S3ObjectStore, job_id: str) -> PointsReserved:
    job = JobSpec(job_id=job_id, account="alice", params=GenerationParams(duration=2, fps=8, steps=STEPS, seed=4))
    pixels = np.random.default_rng(1).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    image = store.put(artifact_key(job_id, 0, "image.png"), out.getvalue(), "image/png")
    return PointsReserved(job=job, image=image, width=WIDTH, height=HEIGHT, price=PRICE, seal=SEAL.sign(job, PRICE))


async def publish(js: JetStreamContext, cmd: PointsReserved) -> None:
    where = route(cmd)
    await js.publish(where.subject, cmd.model_dump_json().encode(), headers={"Nats-Msg-Id": where.msg_id})


async def denoise(
    js: JetStreamContext, nats_server: NatsServer, store: S3ObjectStore, tmp_path: Path, job_id: str, **settings: object
) -> list[object]:
    """One denoise of the tiny model by the latent service; the job's events up to StageFinished."""
    app: FastStream = build_app(settings_for(nats_server, state_dir=tmp_path, **settings), store=store)
    cmd = reserved(store, job_id)
    events = await Tail.open(js, job_events_filter(job_id))
    await app.start()
    try:
        await publish(js, cmd)
        await events.until(has(StageFinished), timeout=120)
        await consumer_drained(js, Stage.LATENT)
    finally:
        await app.stop()
    return list(events.events())


async def test_previews_are_stored_and_announced_before_the_stage_finishes(
    js: JetStreamContext, nats_server: NatsServer, object_store: S3ObjectStore, tmp_path: Path
) -> None:
    job_id = "job-previews-on"
    # Interval 0: the throttle allows every step, so the tap alternates keeping and showing.
    events = await denoise(js, nats_server, object_store, tmp_path, job_id, preview_interval_s=0.0)

    previews = [e for e in events if isinstance(e, StagePreview)]
    # Steps 1 and 3 are due and kept; 2 and 4 show the estimate; 5, the last, shows the result.
    assert [(p.index, p.step, p.total) for p in previews] == [(0, 2, STEPS), (1, 4, STEPS), (2, STEPS, STEPS)]
    assert isinstance(events[-1], StageFinished)
    assert all(p.stage == Stage.LATENT and p.generation == 0 and p.attempt == 1 for p in previews)
    assert sum(isinstance(e, StageProgress) for e in events) == STEPS
    for p in previews:
        assert p.preview.key == preview_key(job_id, 0, p.index)
        assert p.preview.content_type == PREVIEW_CONTENT_TYPE
        image = Image.open(io.BytesIO(object_store.get(p.preview)))
        # The tiny model's 8 frames, at latent resolution (1/8 of 128x64).
        assert (image.format, image.size, getattr(image, "n_frames", 1)) == ("WEBP", (WIDTH // 8, HEIGHT // 8), 8)


async def test_previews_can_be_turned_off(
    js: JetStreamContext, nats_server: NatsServer, object_store: S3ObjectStore, tmp_path: Path
) -> None:
    job_id = "job-previews-off"
    events = await denoise(js, nats_server, object_store, tmp_path, job_id, previews=False, preview_interval_s=0.0)

    assert not any(isinstance(e, StagePreview) for e in events)
    assert sum(isinstance(e, StageProgress) for e in events) == STEPS
    assert object_store.head(preview_key(job_id, 0, 0)) is None
    assert object_store.head(artifact_key(job_id, 0, "latents.safetensors")) is not None
