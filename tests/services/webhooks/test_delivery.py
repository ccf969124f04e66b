"""One attempt at a time, without NATS: what becomes a webhook, how it is signed, retried, logged and
given up, and which destinations are refused. The receiver is a real HTTP server on loopback that checks
signatures with the standardwebhooks package."""

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from contracts.keys import preview_key
from contracts.messages import (
    Event,
    JobCancelled,
    JobFailed,
    JobRejected,
    JobSpec,
    StagePreview,
    StageProgress,
    StageStarted,
)
from contracts.params import GenerationParams
from contracts.refs import ObjectRef
from contracts.webhooks import WEBHOOK_EVENTS, Webhook, check_webhook_url, parse_webhook_events
from services.billing.ledger import SqlLedger, open_ledger
from services.gateway.asyncapi import bus_document
from services.webhooks.delivery import Outgoing, Retry, Sender, outgoing
from services.webhooks.destination import WebhookRefusedError, resolve
from tests.services.job_messages import completed
from tests.services.webhooks.receiver import receiving

ACCOUNT = "acme"
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()  # the receiver checks the signed timestamp is within 5 minutes of its clock

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ledger(tmp_path: Path) -> SqlLedger:
    ledger = open_ledger(str(tmp_path / "ledger.sqlite3"))
    ledger.create_account(ACCOUNT, 100)
    return ledger


def _spec(url: str, *events: str) -> JobSpec:
    webhook = Webhook(url=url, events=parse_webhook_events(list(events))) if events else Webhook(url=url)
    return JobSpec(job_id="job-webhook-1", account=ACCOUNT, params=GenerationParams(seed=7), webhook=webhook)


def _sender(ledger: SqlLedger, clock: Clock, give_up_after_s: float = 3600.0) -> Sender:
    retry = Retry(backoff_s=2.0, backoff_max_s=60.0, give_up_after_s=give_up_after_s, timeout_s=5.0)
    return Sender(ledger, retry, allow_private=True, clock=clock)


def _completed(url: str) -> Outgoing:
    item = outgoing(completed(_spec(url), 12), _spec(url), sequence=41, published_at=AT)
    assert item is not None
    return item


def test_only_the_events_a_job_asked_for_make_webhooks() -> None:
    spec = _spec("https://example.com/h", "started")
    started = StageStarted(job_id=spec.job_id, stage="ingest")
    assert outgoing(started, spec, 1, AT) is not None
    assert outgoing(completed(spec, 12), spec, 2, AT) is None  # not asked for
    assert outgoing(StageProgress(job_id=spec.job_id, stage="latent", step=1, total=2), spec, 3, AT) is None
    default = _spec("https://example.com/h")
    assert default.webhook is not None and default.webhook.events == ("completed", "failed", "cancelled")
    assert outgoing(started, default, 1, AT) is None
    no_webhook = spec.model_copy(update={"webhook": None})
    assert outgoing(completed(no_webhook, 12), no_webhook, 2, AT) is None


def test_each_preview_is_a_webhook_of_its_own() -> None:
    spec = _spec("https://example.com/h", "preview")
    ref = ObjectRef(
        bucket="i2v", key=preview_key(spec.job_id, 0, 0), size=1, sha256="0" * 64, content_type="image/webp"
    )
    previews = [
        outgoing(
            StagePreview(job_id=spec.job_id, stage="latent", index=i, step=i + 1, total=2, preview=ref), spec, i, AT
        )
        for i in range(2)
    ]
    assert [p.webhook_id if p else None for p in previews] == [
        "msg_job-webhook-1_preview_g0_a1_0",
        "msg_job-webhook-1_preview_g0_a1_1",
    ]
    body = json.loads(previews[1].payload if previews[1] else b"")
    assert body["type"] == "job.preview"
    assert body["data"]["event"]["url"] == "/v1/jobs/job-webhook-1/previews/1?generation=0"
    assert "key" not in body["data"]["event"]


def test_the_body_is_the_event_and_the_jobs_essentials() -> None:
    item = _completed("https://example.com/h")
    payload = json.loads(item.payload)
    assert payload["type"] == "job.completed"
    assert payload["timestamp"] == "2026-01-02T03:04:05Z"
    data = payload["data"]
    assert data["job_id"] == "job-webhook-1"
    assert data["event"]["type"] == "JobCompleted"
    assert data["job"]["status"] == "succeeded"
    assert data["job"]["links"]["video"] == "/v1/jobs/job-webhook-1/video"
    assert "account" not in item.payload.decode() and "sha256" not in item.payload.decode()
    assert item.webhook_id == "msg_job-webhook-1_completed_g0"


def test_a_failing_receiver_gets_the_same_signed_webhook_until_it_accepts(ledger: SqlLedger) -> None:
    clock = Clock()
    sender = _sender(ledger, clock)
    with receiving(lambda: ledger.webhook_secret(ACCOUNT), fail_first=2) as receiver:
        item = _completed(receiver.url)
        first = sender.deliver(item)
        assert (first.verdict, first.delay) == ("retry", 2.0)
        # Redelivered early (a restart): it waits for its time, nothing is sent.
        early = sender.deliver(item)
        assert early.verdict == "retry" and early.delay == pytest.approx(2.0)
        assert len(receiver.received) == 1
        clock.now += 2
        assert (sender.deliver(item).verdict, sender.deliver(item).verdict) == ("retry", "retry")
        clock.now += 4
        assert sender.deliver(item).verdict == "delivered"
        clock.now += 100
        assert sender.deliver(item).verdict == "skip"  # delivered once is enough

    assert [r.status for r in receiver.received] == [500, 500, 200]
    assert all(r.verified for r in receiver.received)
    assert {r.webhook_id for r in receiver.received} == {item.webhook_id}
    assert {r.body for r in receiver.received} == {item.payload}
    log = ledger.webhook_deliveries(item.job_id)
    assert [(a.attempt, a.outcome, a.status_code) for a in log] == [
        (1, "retrying", 500),
        (2, "retrying", 500),
        (3, "delivered", 200),
    ]
    assert log[0].next_retry_at == log[0].attempted_at + 2 and log[1].next_retry_at == log[1].attempted_at + 4
    assert log[2].next_retry_at is None and "HTTP 500" in log[0].error


def test_another_event_with_the_same_webhook_id_is_not_sent_again(ledger: SqlLedger) -> None:
    """Each stage's start maps to the generation's one ``started``: the first owns it."""
    clock = Clock()
    with receiving(lambda: ledger.webhook_secret(ACCOUNT)) as receiver:
        spec = _spec(receiver.url, "started")
        sender = _sender(ledger, clock)
        ingest = outgoing(StageStarted(job_id=spec.job_id, stage="ingest"), spec, 5, AT)
        billing = outgoing(StageStarted(job_id=spec.job_id, stage="billing"), spec, 9, AT)
        assert ingest is not None and billing is not None and ingest.webhook_id == billing.webhook_id
        assert sender.deliver(ingest).verdict == "delivered"
        assert sender.deliver(billing).verdict == "skip"
    assert len(receiver.received) == 1


def test_a_webhook_is_given_up_once_its_time_is_out(ledger: SqlLedger) -> None:
    clock = Clock()
    sender = _sender(ledger, clock, give_up_after_s=5.0)
    item = _completed("http://127.0.0.1:9/nobody-listens")
    assert sender.deliver(item).delay == 2.0
    clock.now += 2
    assert sender.deliver(item).delay == 3.0  # not 4: the last attempt is at the window's end
    clock.now += 3
    result = sender.deliver(item)
    assert result.verdict == "gave_up" and result.attempt == 3
    assert "ConnectionRefusedError" in result.error
    assert [a.outcome for a in ledger.webhook_deliveries(item.job_id)] == ["retrying", "retrying", "gave_up"]
    assert sender.deliver(item).verdict == "skip"


def test_a_job_of_an_account_gone_is_given_up_at_once(ledger: SqlLedger) -> None:
    spec = _spec("http://127.0.0.1:9/h").model_copy(update={"account": "gone"})
    item = outgoing(completed(spec, 12), spec, 4, AT)
    assert item is not None
    result = _sender(ledger, Clock()).deliver(item)
    assert (result.verdict, result.attempt, result.error) == ("gave_up", 1, "no account 'gone' to sign with")


def test_rotating_the_secret_changes_the_signature_key(ledger: SqlLedger) -> None:
    old = ledger.webhook_secret(ACCOUNT)
    assert old.startswith("whsec_") and ledger.webhook_secret(ACCOUNT) == old
    clock = Clock()
    with receiving(lambda: old) as receiver:
        first = outgoing(StageStarted(job_id="job-rot-1", stage="ingest"), _spec(receiver.url, "started"), 1, AT)
        assert first is not None
        _sender(ledger, clock).deliver(first)
        new = ledger.webhook_secret(ACCOUNT, rotate=True)
        assert new != old and new.startswith("whsec_")
        spec = _spec(receiver.url, "started").model_copy(update={"job_id": "job-rot-2"})
        second = outgoing(StageStarted(job_id="job-rot-2", stage="ingest"), spec, 2, AT)
        assert second is not None
        _sender(ledger, clock).deliver(second)
        receiver.secret = lambda: new
        third = outgoing(
            StageStarted(job_id="job-rot-3", stage="ingest"), spec.model_copy(update={"job_id": "job-rot-3"}), 3, AT
        )
        assert third is not None
        _sender(ledger, clock).deliver(third)
    assert [r.verified for r in receiver.received] == [True, False, True]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/h",
        "http://localhost/h",
        "https://10.1.2.3/h",
        "http://[::1]/h",
        "http://169.254.169.254/",
    ],
)
def test_loopback_and_private_destinations_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(WebhookRefusedError, match="loopback or private address") as refused:
        resolve(url, allow_private=False)
    assert "\n" not in str(refused.value)
    if "localhost" not in url:
        assert resolve(url, allow_private=True).address in url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/h", "must be an https:// or http:// URL"),
        ("https:///h", "no host"),
        ("https://user:pw@example.com/h", "no user or password"),
        ("https://example.com/" + "a" * 2100, "at most 2048 characters"),
        ("https://exa mple.com/h", "no spaces"),
        ("https://example.com:99999/h", "not a URL"),
    ],
)
def test_bad_webhook_urls_get_one_line(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as bad:
        check_webhook_url(url)
    assert "\n" not in str(bad.value)


def test_event_names_are_checked() -> None:
    assert parse_webhook_events("failed, started,failed") == ("started", "failed")
    with pytest.raises(ValueError, match="unknown event 'done'"):
        parse_webhook_events("completed,done")
    with pytest.raises(ValueError, match="at least one"):
        parse_webhook_events([])
    with pytest.raises(ValidationError):
        Webhook(url="https://example.com/h", events=("finished",))


def test_every_body_fits_the_asyncapi_documents_schema_of_its_event() -> None:
    document = bus_document()
    spec = _spec("https://example.com/h", *WEBHOOK_EVENTS)
    ref = ObjectRef(
        bucket="i2v", key=preview_key(spec.job_id, 0, 0), size=1, sha256="0" * 64, content_type="image/webp"
    )
    events: dict[str, Event] = {
        "started": StageStarted(job_id=spec.job_id, stage="ingest"),
        "preview": StagePreview(job_id=spec.job_id, stage="latent", index=0, step=1, total=2, preview=ref),
        "completed": completed(spec, 12),
        "failed": JobFailed(job=spec, stage="latent", code="out_of_memory", reason="CUDA out of memory"),
        "cancelled": JobCancelled(job=spec, stage="latent"),
    }
    rejected = JobRejected(job=spec, code="insufficient_points", reason="short", price=24, balance=3)
    bodies = [(kind, outgoing(event, spec, 5, AT)) for kind, event in [*events.items(), ("failed", rejected)]]

    for kind, item in bodies:
        assert item is not None and item.event == kind
        message = document["components"]["messages"][f"webhook:{kind}"]
        assert message["payload"] == {"$ref": f"#/components/schemas/Webhook:{kind}"}
        schema = {**document["components"]["schemas"][f"Webhook:{kind}"], "components": document["components"]}
        body = json.loads(item.payload)
        assert list(Draft202012Validator(schema).iter_errors(body)) == [], (kind, body)
        del body["data"]["job"]["status"]  # and a body without what the document requires does not fit
        assert list(Draft202012Validator(schema).iter_errors(body)), kind
    send = document["operations"]["webhooks:send"]
    assert send["action"] == "send" and send["bindings"] == {"http": {"method": "POST"}}
    assert document["channels"]["webhooks"]["messages"].keys() == set(WEBHOOK_EVENTS)
