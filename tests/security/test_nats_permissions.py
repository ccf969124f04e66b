"""NATS as the embedded stack runs it: no anonymous client, and each user publishes and reads only what
its part of the pipeline needs. Each refusal is the server's (a permissions violation), on a real nats-server."""

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerConfig

from contracts.keys import command_key, upload_key
from contracts.messages import JobCancelled, JobSpec, JobSubmitted, PointsReserved, StageStarted
from contracts.params import GenerationParams
from contracts.refs import ObjectRef
from contracts.stages import Stage
from contracts.subjects import (
    EVENTS_STREAM,
    TERMINAL_EVENTS_FILTER,
    WORK_STREAM,
    durable_name,
    event_subject,
    work_subject,
)
from infra.objectstore import MemoryObjectStore
from services.bus.connection import inbox_prefix
from services.bus.publishing import route
from services.jobclient import JobClient
from services.stack.nats_auth import ADMIN, CLIENT, GATEWAY, SERVICE_USERS, SETTLE_DURABLE, permissions
from tests.security.conftest import Connect, SecuredNats
from tests.services.job_messages import completed

pytestmark = pytest.mark.integration

_PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
_IMAGE = ObjectRef(bucket="i2v", key="jobs/jforged/g0/image.png", size=1, sha256="0" * 64, content_type="image/png")


def _job(account: str = "victim") -> JobSpec:
    return JobSpec(job_id="jforged", account=account, params=GenerationParams().with_resolved_seed())


def _forged_reservation() -> bytes:
    return PointsReserved(job=_job(), image=_IMAGE, width=256, height=192, price=0).model_dump_json().encode()


async def _count(connect: Connect, subject: str) -> int:
    """Messages the work stream holds on ``subject`` (looked up as the admin)."""
    admin = await connect(ADMIN)
    info = await admin.nc.jetstream().stream_info(WORK_STREAM, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def _purge_work(connect: Connect) -> None:
    admin = await connect(ADMIN)
    await admin.nc.jetstream().purge_stream(WORK_STREAM)


async def test_an_anonymous_client_or_a_wrong_password_is_refused(secured_nats: SecuredNats) -> None:
    for user, password in ((None, None), ("billing", "guessed")):
        nc = NatsClient()
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nc.connect(secured_nats.url, allow_reconnect=False, connect_timeout=2, user=user, password=password)
        await nc.close()  # a refused connect leaves its socket to the caller


@pytest.mark.parametrize("user", [u for u in (*SERVICE_USERS, GATEWAY, CLIENT) if u != "billing"])
async def test_a_forged_reservation_is_refused_to_everyone_but_billing(connect_as: Connect, user: str) -> None:
    """The attack of the review: a PointsReserved straight onto i2v.work.latent, skipping billing."""
    await _purge_work(connect_as)
    forger = await connect_as(user)
    with pytest.raises(nats.errors.TimeoutError):
        await forger.nc.jetstream().publish(work_subject(Stage.LATENT), _forged_reservation(), timeout=1.0)
    assert await forger.violations(work_subject(Stage.LATENT))
    assert await _count(connect_as, work_subject(Stage.LATENT)) == 0


async def test_billing_may_put_a_reservation_on_the_latent_subject(connect_as: Connect) -> None:
    await _purge_work(connect_as)
    billing = await connect_as("billing")
    ack = await billing.nc.jetstream().publish(work_subject(Stage.LATENT), _forged_reservation(), timeout=5.0)
    assert ack.stream == WORK_STREAM
    assert await _count(connect_as, work_subject(Stage.LATENT)) == 1
    await _purge_work(connect_as)


# Who may send each command: its producer in the flow, billing forwarding a replay, clients submitting.
_SENDERS = {
    Stage.INGEST: {GATEWAY, CLIENT},
    Stage.BILLING: {"ingest", GATEWAY, CLIENT},
    Stage.LATENT: {"billing"},
    Stage.DECODE: {"latent", "billing"},
    Stage.MUX: {"decode", "billing"},
}


@pytest.mark.parametrize("stage", list(Stage))
async def test_each_command_subject_takes_only_its_senders(connect_as: Connect, stage: Stage) -> None:
    await _purge_work(connect_as)
    subject = work_subject(stage)
    sessions = {user: await connect_as(user) for user in (*SERVICE_USERS, GATEWAY, CLIENT)}
    for session in sessions.values():
        await session.nc.publish(subject, b"{}")
        await session.nc.flush()
    refused = {user for user, session in sessions.items() if await session.violations(subject, timeout=0.5)}
    assert refused == set(sessions) - _SENDERS[stage]
    assert await _count(connect_as, subject) == len(_SENDERS[stage])
    await _purge_work(connect_as)


async def test_clients_cannot_publish_a_terminal_event(connect_as: Connect) -> None:
    """A forged JobCompleted would end someone's job (and settle it); only stages end jobs."""
    subject = event_subject("jforged", "terminal")
    body = completed(_job(), price=0).model_dump_json().encode()
    for user in (GATEWAY, CLIENT):
        session = await connect_as(user)
        with pytest.raises(nats.errors.TimeoutError):
            await session.nc.jetstream().publish(subject, body, timeout=1.0)
        assert await session.violations(subject)


async def test_the_client_reads_no_work_no_raw_subjects_and_no_one_elses_replies(connect_as: Connect) -> None:
    latent = await connect_as("latent")
    # The latent service's own durable consumer, as the service creates it at start.
    pull = await latent.nc.jetstream().pull_subscribe(
        work_subject(Stage.LATENT), durable=durable_name(Stage.LATENT), stream=WORK_STREAM
    )
    await pull.unsubscribe()

    client = await connect_as(CLIENT)
    for subject in ("i2v.work.>", "i2v.>", ">", "_INBOX.>", "_INBOX_billing.>"):
        await client.nc.subscribe(subject)
        await client.nc.flush()
        assert await client.violations(subject), subject

    js = client.nc.jetstream()
    stolen = await js.pull_subscribe_bind(durable_name(Stage.LATENT), stream=WORK_STREAM)
    with pytest.raises(nats.errors.TimeoutError):
        await stolen.fetch(1, timeout=1.0)
    assert await client.violations(f"$JS.API.CONSUMER.MSG.NEXT.{WORK_STREAM}.{durable_name(Stage.LATENT)}")
    with pytest.raises(nats.errors.TimeoutError):
        await js.add_consumer(
            WORK_STREAM, ConsumerConfig(name="spy", durable_name="spy", filter_subject=work_subject(Stage.LATENT))
        )
    assert await client.violations(f"$JS.API.CONSUMER.CREATE.{WORK_STREAM}.spy.{work_subject(Stage.LATENT)}")


async def test_a_service_cannot_take_another_services_work(connect_as: Connect) -> None:
    ingest = await connect_as("ingest")
    js = ingest.nc.jetstream()
    with pytest.raises(nats.errors.TimeoutError):
        await js.pull_subscribe(
            work_subject(Stage.LATENT), durable=durable_name(Stage.LATENT), stream=WORK_STREAM, config=None
        )
    assert await ingest.violations(f"$JS.API.CONSUMER.INFO.{WORK_STREAM}.{durable_name(Stage.LATENT)}")


async def test_front_doors_cannot_change_billings_settlement_consumer(connect_as: Connect) -> None:
    for user in (GATEWAY, CLIENT):
        session = await connect_as(user)
        subject = f"$JS.API.CONSUMER.CREATE.{EVENTS_STREAM}.{SETTLE_DURABLE}.{TERMINAL_EVENTS_FILTER}"
        with pytest.raises(nats.errors.TimeoutError):
            await session.nc.jetstream().add_consumer(
                EVENTS_STREAM,
                ConsumerConfig(
                    name=SETTLE_DURABLE, durable_name=SETTLE_DURABLE, filter_subject=TERMINAL_EVENTS_FILTER, ack_wait=1
                ),
            )
        assert await session.violations(subject)


@pytest.mark.parametrize("user", [GATEWAY, CLIENT])
async def test_front_doors_submit_follow_cancel_and_replay(
    secured_nats: SecuredNats, connect_as: Connect, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What the CLI and the gateway do works under their permissions, with no violation on the way."""
    await _purge_work(connect_as)
    login = secured_nats.logins[user]
    store = MemoryObjectStore()
    client = await JobClient.connect(
        secured_nats.url,
        store,
        user=login.user,
        password=login.password,
        inbox_prefix=inbox_prefix(user),
    )
    ingest = (await connect_as("ingest")).nc.jetstream()

    async def as_ingest(message: StageStarted | JobCancelled) -> None:
        where = route(message)
        await ingest.publish(where.subject, message.model_dump_json().encode(), headers={"Nats-Msg-Id": where.msg_id})

    try:
        job = await client.submit(_PNG, GenerationParams(), "acct")
        (upload,) = store.puts
        await as_ingest(StageStarted(job_id=job.job_id, stage=Stage.INGEST))
        await client.cancel(job.job_id)
        await as_ingest(JobCancelled(job=job, stage=Stage.INGEST))
        store.put(
            command_key(job.job_id, Stage.INGEST),
            JobSubmitted(job=job, upload=upload).model_dump_json().encode(),
            "application/json",
        )
        replayed = await client.replay(job.job_id)
        history = await client.history(job.job_id)
        if user == CLIENT:
            assert await client.dead_letters() == []
    finally:
        await client.close()
    assert upload.key == upload_key(job.job_id)
    assert replayed.generation == 1
    assert [f.event.type for f in history.events] == [
        "StageStarted",
        "CancelRequested",
        "JobCancelled",
        "ReplayRequested",
    ]
    assert await _count(connect_as, work_subject(Stage.INGEST)) == 2  # the submit and the replay
    await _purge_work(connect_as)
    assert "permissions violation" not in caplog.text


def test_the_table_names_the_durables_the_services_create() -> None:
    """Each service may create and pull from the durables its app declares, and from no other."""
    import importlib

    from services.config import Settings

    settings = Settings(nats_url="nats://127.0.0.1:9", s3_endpoint="http://127.0.0.1:9")
    for user in SERVICE_USERS:
        app = importlib.import_module(f"services.{user}.app").build_app(settings)
        allowed = set(permissions(user).publish)
        for subscriber in app.broker.subscribers:
            config = subscriber.config
            stream = subscriber.stream.name if subscriber.stream else ""
            subject = config.filter_subject or subscriber.subject.broker_address
            durable = config.durable_name
            assert f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.{subject}" in allowed, (user, durable)
            assert f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}" in allowed, (user, durable)
