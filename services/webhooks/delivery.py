"""Which events become webhooks, what is sent, and one attempt at sending it. No NATS here.

Each webhook has a ``webhook-id`` fixed by the job, the event and the generation, so every attempt at it,
whichever process makes it, carries the same id and body: receivers drop repeats by that id. The delivery
log (the ledger's ``webhook_deliveries``) records each attempt and decides what the next delivery of the
same event does: nothing once delivered or given up, another attempt otherwise.
"""

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from standardwebhooks.webhooks import Webhook as Signer

from contracts.messages import (
    Event,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobSpec,
    StagePreview,
    StageStarted,
)
from contracts.webhooks import WebhookEvent
from services.billing.ledger import UnknownAccountError, WebhookAttempt, WebhookOutcome
from services.gateway.progress import JobView
from services.gateway.public_events import public_event
from services.gateway.schemas import JobResource
from services.webhooks.destination import Answer, Destination, resolve
from services.webhooks.destination import post as http_post
from services.webhooks.document import JOB_ESSENTIALS

log = logging.getLogger("i2v.webhooks")

_ERROR_CHARS = 300


def webhook_event_of(event: Event) -> WebhookEvent | None:
    """The webhook event an event of the bus is, if any. ``started`` is every stage's start: the first of a
    generation is sent, the others share its id and are dropped (see :meth:`Sender.deliver`)."""
    if isinstance(event, StageStarted):
        return "started"
    if isinstance(event, StagePreview):
        return "preview"
    if isinstance(event, JobCompleted):
        return "completed"
    if isinstance(event, JobFailed | JobRejected):
        return "failed"
    if isinstance(event, JobCancelled):
        return "cancelled"
    return None


def webhook_id(event: Event, kind: WebhookEvent, job_id: str, generation: int) -> str:
    """The same for every delivery of one webhook; a preview's counts its attempt and index."""
    if isinstance(event, StagePreview):
        return f"msg_{job_id}_preview_g{generation}_a{event.attempt}_{event.index}"
    return f"msg_{job_id}_{kind}_g{generation}"


@dataclass(frozen=True)
class Outgoing:
    """One webhook to send: to ``url``, signed with ``account``'s secret."""

    job_id: str
    account: str
    url: str
    event: WebhookEvent
    webhook_id: str
    sequence: int
    """The event's sequence on the events stream: the event that owns this webhook id."""
    payload: bytes


def outgoing(event: Event, spec: JobSpec, sequence: int, published_at: datetime) -> Outgoing | None:
    """The webhook ``event`` makes for the job ``spec``, or None when the job asked for none of this kind.

    The body is ``{"type": "job.<event>", "timestamp", "data": {"job_id", "event", "job"}}``: the event as
    the API's event stream shows it, and the job resource's essentials after that event.
    """
    kind = webhook_event_of(event)
    if kind is None or spec.webhook is None or not spec.webhook.wants(kind):
        return None
    view = JobView.submitted(spec)
    view.apply(sequence, event)
    resource = JobResource.of(view).model_dump(mode="json", include=set(JOB_ESSENTIALS))
    body = {
        "type": f"job.{kind}",
        "timestamp": published_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": {"job_id": spec.job_id, "event": public_event(event), "job": resource},
    }
    return Outgoing(
        job_id=spec.job_id,
        account=spec.account,
        url=spec.webhook.url,
        event=kind,
        webhook_id=webhook_id(event, kind, spec.job_id, view.generation),
        sequence=sequence,
        payload=json.dumps(body, separators=(",", ":"), sort_keys=True).encode(),
    )


class DeliveryLog(Protocol):
    """What the sender needs of the ledger."""

    def webhook_secret(self, name: str, *, rotate: bool = False) -> str: ...
    def record_webhook_attempt(self, attempt: WebhookAttempt) -> None: ...
    def webhook_attempts(self, webhook_id: str) -> list[WebhookAttempt]: ...


@dataclass(frozen=True)
class Retry:
    """How deliveries are retried: ``backoff_s`` doubling per attempt up to ``backoff_max_s``, for up
    to ``give_up_after_s`` after the first attempt; each attempt waits ``timeout_s`` for an answer."""

    backoff_s: float
    backoff_max_s: float
    give_up_after_s: float
    timeout_s: float

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failed attempt."""
        return min(self.backoff_max_s, self.backoff_s * math.pow(2, min(attempt - 1, 60)))


Verdict = Literal["delivered", "retry", "gave_up", "skip"]


@dataclass(frozen=True)
class Result:
    """What to do with the event's delivery: ack (delivered, skip), nack after ``delay`` (retry), or
    dead-letter and ack (gave_up)."""

    verdict: Verdict
    delay: float = 0.0
    attempt: int = 0
    error: str = ""


Post = Callable[[Destination, bytes, dict[str, str], float], Answer]
Resolve = Callable[..., Destination]


class Sender:
    """Attempts one webhook per call and logs the attempt; blocking (DNS, HTTP, SQL), run in a thread."""

    def __init__(
        self,
        log_: DeliveryLog,
        retry: Retry,
        *,
        allow_private: bool,
        post: Post = http_post,
        resolve_url: Resolve = resolve,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._log = log_
        self._retry = retry
        self._allow_private = allow_private
        self._post = post
        self._resolve = resolve_url
        self._clock = clock

    def deliver(self, item: Outgoing) -> Result:
        """1. read the log: an id another event owns, or one already delivered or given up, is skipped;
        an attempt not yet due (an early redelivery) waits; 2. sign and POST; 3. log the attempt."""
        attempts = self._log.webhook_attempts(item.webhook_id)
        now = self._clock()
        if attempts:
            if any(a.event_sequence != item.sequence for a in attempts):
                return Result("skip")  # e.g. a later stage's start: the generation's first one has this id
            last = attempts[-1]
            if last.outcome != "retrying":
                return Result("skip")
            if last.next_retry_at is not None and last.next_retry_at > now + 0.05:
                return Result("retry", delay=last.next_retry_at - now, attempt=last.attempt)
        number = len(attempts) + 1
        first_at = attempts[0].attempted_at if attempts else now
        ends_at = first_at + self._retry.give_up_after_s
        try:
            secret = self._log.webhook_secret(item.account)
        except UnknownAccountError:
            status, error = None, f"no account {item.account!r} to sign with"
            ends_at = now  # nothing to sign with, now or later
        else:
            status, error = self._post_signed(item, secret, now)
        next_at: float | None = None
        if not error:
            outcome: WebhookOutcome = "delivered"
        elif now >= ends_at:
            outcome = "gave_up"
        else:
            # The last attempt falls at the window's end, not past it.
            outcome, next_at = "retrying", min(now + self._retry.delay(number), ends_at)
        self._log.record_webhook_attempt(
            WebhookAttempt(
                job_id=item.job_id,
                webhook_id=item.webhook_id,
                event=item.event,
                event_sequence=item.sequence,
                attempt=number,
                outcome=outcome,
                status_code=status,
                error=error,
                attempted_at=now,
                next_retry_at=next_at,
            )
        )
        log.info("webhook %s of job %s, attempt %d: %s", item.webhook_id, item.job_id, number, error or status)
        if outcome == "delivered":
            return Result("delivered", attempt=number)
        if outcome == "gave_up":
            return Result("gave_up", attempt=number, error=error)
        assert next_at is not None
        return Result("retry", delay=next_at - now, attempt=number, error=error)

    def _post_signed(self, item: Outgoing, secret: str, now: float) -> tuple[int | None, str]:
        """The receiver's status (None without an answer) and the error; no error means delivered."""
        try:
            destination = self._resolve(item.url, allow_private=self._allow_private)
            headers = signed_headers(secret, item.webhook_id, item.payload, datetime.fromtimestamp(now, UTC))
            answer = self._post(destination, item.payload, headers, self._retry.timeout_s)
        except (OSError, ValueError) as exc:  # refused, reset, timed out, TLS, a URL now refused
            return None, _one_line(f"{type(exc).__name__}: {exc}")
        if answer.ok:
            return answer.status, ""
        return answer.status, f"HTTP {answer.status}: {_one_line(answer.body.decode('utf-8', 'replace'))}"


def signed_headers(secret: str, message_id: str, payload: bytes, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``."""
    signature = Signer(secret).sign(msg_id=message_id, timestamp=at, data=payload.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": signature,
        "User-Agent": "i2v-webhooks/1",
    }


def _one_line(text: str) -> str:
    return " ".join(text.split())[:_ERROR_CHARS]
