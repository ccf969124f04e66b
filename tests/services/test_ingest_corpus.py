"""Every kind of bad image through the real ingest service on a real bus: each gets its specific error
(or is prepared correctly), nothing is dead-lettered as a crash, and the service keeps consuming."""

import contextlib

import pytest
from nats.js import JetStreamContext

from contracts.keys import upload_key
from contracts.messages import ImagePrepared, JobFailed, JobSpec, JobSubmitted
from contracts.params import GenerationParams
from contracts.stages import Stage
from contracts.subjects import DLQ_STREAM, WORK_STREAM, durable_name, work_subject
from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore
from infra.seaweed import SeaweedS3
from pipeline.image import content_type_of
from services.bus.publishing import route
from services.ingest.app import build_app
from tests.pipeline.bad_images import bad_image_corpus
from tests.services.bus_helpers import Tail, consumer_drained, has, settings_for

pytestmark = pytest.mark.integration


async def test_the_bad_image_corpus_through_the_ingest_service(
    js: JetStreamContext, nats_server: NatsServer, seaweed: SeaweedS3, object_store: S3ObjectStore
) -> None:
    corpus = bad_image_corpus()
    assert len(corpus) >= 15
    settings = settings_for(
        nats_server,
        s3_endpoint=seaweed.endpoint,
        s3_access_key=seaweed.access_key,
        s3_secret_key=seaweed.secret_key,
        s3_bucket=object_store.bucket,
    )
    app = build_app(settings)
    terminal = await Tail.open(js, "i2v.events.*.terminal")
    await app.start()
    try:
        jobs: dict[str, str] = {}
        for i, (case, (data, _code)) in enumerate(sorted(corpus.items())):
            job = JobSpec(job_id=f"jcorpus{i:03d}", account="local", params=GenerationParams(seed=i))
            upload = object_store.put(upload_key(job.job_id), data, content_type_of(data))
            command = JobSubmitted(job=job, upload=upload)
            where = route(command)
            await js.publish(where.subject, command.model_dump_json().encode(), headers={"Nats-Msg-Id": where.msg_id})
            jobs[job.job_id] = case
        rejected = sum(code is not None for _data, code in corpus.values())
        await terminal.until(has(JobFailed, rejected), timeout=120)
        await consumer_drained(js, Stage.INGEST, timeout=60)
    finally:
        await app.stop()

    failures = {e.job.job_id: e for e in terminal.events() if isinstance(e, JobFailed)}
    billing = await js.pull_subscribe(
        work_subject(Stage.BILLING), durable=durable_name(Stage.BILLING), stream=WORK_STREAM
    )
    prepared: dict[str, ImagePrepared] = {}
    # fetch raises nats' TimeoutError or asyncio's, depending on where the wait ends.
    with contextlib.suppress(TimeoutError):
        while True:
            for msg in await billing.fetch(50, timeout=2):
                ready = ImagePrepared.model_validate_json(msg.data)
                prepared[ready.job.job_id] = ready
                await msg.ack()
    for job_id, case in jobs.items():
        expected = corpus[case][1]
        if expected is None:
            assert job_id in prepared and job_id not in failures, case
            image = prepared[job_id]
            # The model's pixel count in the picture's own aspect, in multiples of 64.
            assert image.width % 64 == 0 and image.height % 64 == 0, case
            assert 0.5 < image.width * image.height / (256 * 192) < 1.6, (case, image.width, image.height)
            assert object_store.get(image.image).startswith(b"\x89PNG"), case
        else:
            assert job_id in failures, case
            assert (failures[job_id].stage, failures[job_id].code) == (Stage.INGEST, expected), case
    assert (await js.stream_info(DLQ_STREAM)).state.messages == 0  # bad input is not a crash
