"""The front doors (gateway, CLI) may read each stage's line of commands for queue positions, and still take
no work from it."""

import nats.errors
import pytest

from contracts.messages import JobSpec, PointsReserved
from contracts.params import GenerationParams
from contracts.refs import ObjectRef
from contracts.stages import Stage
from contracts.subjects import WORK_STREAM, durable_name, work_subject
from services.gateway.eta import WorkQueues
from services.stack.nats_auth import CLIENT, GATEWAY
from tests.security.conftest import Connect

pytestmark = pytest.mark.integration

_IMAGE = ObjectRef(bucket="i2v", key="jobs/jline/g0/image.png", size=1, sha256="0" * 64, content_type="image/png")


@pytest.mark.parametrize("user", [GATEWAY, CLIENT])
async def test_front_doors_read_the_lines_without_a_violation_and_take_nothing(connect_as: Connect, user: str) -> None:
    billing = await connect_as("billing")
    latent = await connect_as("latent")
    pull = await latent.nc.jetstream().pull_subscribe(
        work_subject(Stage.LATENT), durable=durable_name(Stage.LATENT), stream=WORK_STREAM
    )
    await pull.unsubscribe()
    spec = JobSpec(job_id=f"jline-{user}", account="acct", params=GenerationParams(seed=1))
    command = PointsReserved(job=spec, image=_IMAGE, width=64, height=64, price=8)
    await billing.nc.jetstream().publish(work_subject(Stage.LATENT), command.model_dump_json().encode())

    session = await connect_as(user)
    js = session.nc.jetstream(timeout=2.0)
    lines = await WorkQueues(js).lines()
    assert spec.job_id in [queued.job_id for queued in lines[Stage.LATENT]]
    assert session.errors == []

    stolen = await js.pull_subscribe_bind(durable_name(Stage.LATENT), stream=WORK_STREAM)
    with pytest.raises(nats.errors.TimeoutError):
        await stolen.fetch(1, timeout=1.0)
    assert await session.violations(f"$JS.API.CONSUMER.MSG.NEXT.{WORK_STREAM}.{durable_name(Stage.LATENT)}")
