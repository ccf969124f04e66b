"""The webhooks service as it runs (`i2v serve webhooks`, a process of its own) on a real nats-server and
SeaweedFS: events published as the stages publish them, a receiver on loopback that verifies signatures
with the standardwebhooks package."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from contracts.keys import command_key, upload_key
from contracts.messages import DeadLetter, Event, JobFailed, JobSpec, JobSubmitted, StageProgress, StageStarted
from contracts.params import GenerationParams
from contracts.refs import ObjectRef
from contracts.stages import Stage
from contracts.subjects import DLQ_STREAM
from contracts.webhooks import Webhook, parse_webhook_events
from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore
from infra.seaweed import SeaweedS3
from services.billing.ledger import SqlLedger, open_ledger
from services.bus.connection import inbox_prefix
from services.bus.publishing import route
from services.bus.streams import ensure_streams
from services.stack.credentials import NatsLogin, nats_logins
from services.stack.nats_auth import ADMIN, USERS, WEBHOOKS, WEBHOOKS_DLQ, authorization_block
from tests.services.job_messages import completed
from tests.services.webhooks.receiver import receiving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
ACCOUNT = "acme"


@dataclass
class SecuredNats:
    server: NatsServer
    logins: dict[str, NatsLogin]

    def env(self, user: str) -> dict[str, str]:
        login = self.logins[user]
        return {"I2V_NATS_URL": self.server.url, "I2V_NATS_USER": login.user, "I2V_NATS_PASSWORD": login.password}

    async def connect(self, user: str) -> Client:
        login = self.logins[user]
        return await nats.connect(
            self.server.url, user=login.user, password=login.password, inbox_prefix=inbox_prefix(user)
        )


@pytest.fixture(scope="module")
def webhooks_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredNats]:
    """A nats-server of this module's own with the stack's users and permissions: the service runs as its
    own ``webhooks`` user, the events come from ``mux``'s."""
    state = tmp_path_factory.mktemp("webhooks-nats")
    logins = nats_logins(state, USERS)
    config = authorization_block({user: login.hashed for user, login in logins.items()})
    with NatsServer(state / "nats", config=config) as server:
        yield SecuredNats(server, logins)


class Service:
    """``i2v serve webhooks`` in a child process, restartable."""

    def __init__(self, env: dict[str, str], ready: Path, log: Path) -> None:
        self._env = {**env, "I2V_READY_FILE": str(ready)}
        self._ready = ready
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._ready.unlink(missing_ok=True)
        with self._log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "serve", "webhooks"],
                cwd=ROOT,
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not self._ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the webhooks service did not get ready: {self._log.read_text()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
            self.process.wait(timeout=20)


@pytest.fixture
def ledger(tmp_path: Path) -> SqlLedger:
    ledger = open_ledger(str(tmp_path / "ledger.sqlite3"))
    ledger.create_account(ACCOUNT, 100)
    return ledger


@pytest.fixture
def service_overrides() -> dict[str, str]:
    """I2V_* settings a test sets for its service (by parametrizing this name)."""
    return {}


@pytest.fixture
def service(
    service_overrides: dict[str, str],
    tmp_path: Path,
    webhooks_nats: SecuredNats,
    seaweed: SeaweedS3,
    object_store: S3ObjectStore,
    ledger: SqlLedger,
    nc: Client,  # the streams, declared by the admin first
) -> Iterator[Service]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("I2V_")},
        **webhooks_nats.env(WEBHOOKS),
        "I2V_S3_ENDPOINT": seaweed.endpoint,
        "I2V_S3_ACCESS_KEY": seaweed.access_key,
        "I2V_S3_SECRET_KEY": seaweed.secret_key,
        "I2V_S3_BUCKET": object_store.bucket,
        "I2V_STATE_DIR": str(tmp_path / "state"),
        "I2V_LEDGER_DSN": str(tmp_path / "ledger.sqlite3"),
        "I2V_WEBHOOK_ALLOW_PRIVATE": "1",
        # Short backoff (1 s, then 2 s) and deadlines, so retries and a restart fit in seconds.
        "I2V_WEBHOOK_BACKOFF_S": "1",
        "I2V_WEBHOOK_TIMEOUT_S": "2",
        "I2V_ACK_WAIT_S": "3",
    }
    env.update(service_overrides)
    running = Service(env, tmp_path / "webhooks.ready", tmp_path / "webhooks.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def nc(webhooks_nats: SecuredNats) -> AsyncIterator[Client]:
    """Connected as mux, which publishes stage and terminal events."""
    admin = await webhooks_nats.connect(ADMIN)
    await ensure_streams(admin.jetstream())
    await admin.close()
    client = await webhooks_nats.connect("mux")
    try:
        yield client
    finally:
        await client.close()


async def publish(nc: Client, event: Event) -> None:
    where = route(event)
    body = event.model_dump_json().encode()
    await nc.jetstream().publish(where.subject, body, stream=where.stream, headers={"Nats-Msg-Id": where.msg_id})


# Retried for 3.6 s: attempts at 0, 1, 3 and 3.6 s, then given up.
@pytest.mark.parametrize("service_overrides", [{"I2V_WEBHOOK_RETRY_HOURS": "0.001"}])
async def test_a_webhook_out_of_time_is_dead_lettered(
    service: Service, nc: Client, ledger: SqlLedger, webhooks_nats: SecuredNats
) -> None:
    spec = job("job-hook-gone", "http://127.0.0.1:9/nobody-listens")
    await publish(nc, completed(spec, 12))
    await until(lambda: any(a.outcome == "gave_up" for a in ledger.webhook_deliveries(spec.job_id)), "giving up")

    client = await webhooks_nats.connect("client")  # the operators' user reads the dead letters
    try:
        sub = await client.jetstream().subscribe(WEBHOOKS_DLQ, stream=DLQ_STREAM, ordered_consumer=True)
        letter = DeadLetter.model_validate_json((await sub.next_msg(timeout=10)).data)
    finally:
        await client.close()
    attempts = ledger.webhook_deliveries(spec.job_id)
    assert [a.outcome for a in attempts] == ["retrying"] * (len(attempts) - 1) + ["gave_up"]
    assert (letter.code, letter.job_id, letter.attempts, letter.stage) == (
        "webhook_undelivered",
        spec.job_id,
        len(attempts),
        None,
    )
    assert "msg_job-hook-gone_completed_g0" in letter.error and "ConnectionRefusedError" in letter.error


def job(job_id: str, url: str, *events: str) -> JobSpec:
    webhook = Webhook(url=url, events=parse_webhook_events(list(events))) if events else Webhook(url=url)
    return JobSpec(job_id=job_id, account=ACCOUNT, params=GenerationParams(seed=3), webhook=webhook)


def keep_command(store: S3ObjectStore, spec: JobSpec) -> None:
    """What the ingest stage's runner stores before it publishes StageStarted."""
    upload = ObjectRef(
        bucket=store.bucket, key=upload_key(spec.job_id), size=1, sha256="0" * 64, content_type="image/png"
    )
    body = JobSubmitted(job=spec, upload=upload).model_dump_json().encode()
    store.put(command_key(spec.job_id, Stage.INGEST), body, "application/json")


async def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_failing_receiver_gets_the_signed_webhook_after_retries_through_a_kill(
    service: Service, nc: Client, ledger: SqlLedger
) -> None:
    with receiving(lambda: ledger.webhook_secret(ACCOUNT), fail_first=2) as receiver:
        spec = job("job-hook-retry", receiver.url)
        await publish(nc, completed(spec, 12))
        await until(lambda: len(ledger.webhook_deliveries(spec.job_id)) == 1, "the first attempt")
        # Killed while the webhook waits for its second attempt: the event is not acked, so it comes back.
        service.kill()
        service.start()
        await until(lambda: bool(receiver.delivered()), "the delivery")

    log = ledger.webhook_deliveries(spec.job_id)
    assert [(a.attempt, a.outcome, a.status_code) for a in log] == [
        (1, "retrying", 500),
        (2, "retrying", 500),
        (3, "delivered", 200),
    ]
    assert all(a.event == "completed" and a.webhook_id == "msg_job-hook-retry_completed_g0" for a in log)
    assert [r.status for r in receiver.received] == [500, 500, 200]
    assert all(r.verified for r in receiver.received)
    assert {r.webhook_id for r in receiver.received} == {log[0].webhook_id}
    delivered = receiver.delivered()[0]
    assert delivered.payload["type"] == "job.completed"
    assert delivered.payload["data"]["job"]["status"] == "succeeded"
    timestamp = int(delivered.headers["webhook-timestamp"])
    assert abs(timestamp - datetime.now(UTC).timestamp()) < 300


async def test_only_the_events_asked_for_are_sent(
    service: Service, nc: Client, ledger: SqlLedger, object_store: S3ObjectStore
) -> None:
    with receiving(lambda: ledger.webhook_secret(ACCOUNT)) as receiver:
        starts = job("job-hook-starts", receiver.url, "started", "completed")
        plain = job("job-hook-plain", receiver.url)  # completed, failed, cancelled
        for spec in (starts, plain):
            keep_command(object_store, spec)
        await publish(nc, StageStarted(job_id=plain.job_id, stage=Stage.INGEST))
        await publish(nc, StageStarted(job_id=starts.job_id, stage=Stage.INGEST))
        await publish(nc, StageProgress(job_id=starts.job_id, stage=Stage.INGEST, step=1, total=1))
        await publish(nc, StageStarted(job_id=starts.job_id, stage=Stage.BILLING))  # the same `started`
        await publish(nc, completed(starts, 12))
        failed = JobFailed(job=plain, stage=Stage.LATENT, code="internal", reason="it broke")
        await publish(nc, failed)
        # One consumer takes the events in order: once the last has arrived, every earlier one was decided.
        await until(lambda: len(receiver.delivered()) >= 3, "three webhooks")
        await asyncio.sleep(0.5)

    sent = [(r.payload["data"]["job_id"], r.payload["type"]) for r in receiver.received]
    assert sent == [
        ("job-hook-starts", "job.started"),
        ("job-hook-starts", "job.completed"),
        ("job-hook-plain", "job.failed"),
    ]
    assert all(r.verified for r in receiver.received)
    failed_body = receiver.received[2].payload["data"]
    assert failed_body["event"]["code"] == "internal" and failed_body["job"]["status"] == "failed"
