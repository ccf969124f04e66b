"""A job's webhook: where to POST which of its events. A delivery instruction that rides on the JobSpec,
not a generation parameter: it changes nothing a stage makes, nor the price."""

from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

WebhookEvent = Literal["started", "preview", "completed", "failed", "cancelled"]
"""``started``: the job (or a replay's new generation) began its first stage; ``preview``: a live preview
of the denoising is stored (``StagePreview``); ``completed``, ``failed`` (also refused before any GPU work:
not enough points, a video too large) and ``cancelled``: the generation's end."""
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = get_args(WebhookEvent)
DEFAULT_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("completed", "failed", "cancelled")
MAX_WEBHOOK_URL_CHARS = 2048


def check_webhook_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host and no credentials; a one-line ValueError if not."""
    if len(url) > MAX_WEBHOOK_URL_CHARS:
        raise ValueError(f"webhook: at most {MAX_WEBHOOK_URL_CHARS} characters, got {len(url)}")
    if url != url.strip() or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValueError("webhook: no spaces or control characters in the URL")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it checks it: a port outside 0-65535 raises
    except ValueError as exc:
        raise ValueError(f"webhook: not a URL ({exc})") from None
    if parts.scheme not in ("https", "http"):
        raise ValueError(f"webhook: must be an https:// or http:// URL, got {parts.scheme or 'no'} scheme")
    if not parts.hostname:
        raise ValueError("webhook: the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("webhook: no user or password in the URL; the signature authenticates the sender")
    if parts.fragment:
        raise ValueError("webhook: no #fragment in the URL")
    return url


def parse_webhook_events(value: str | list[str] | tuple[str, ...]) -> tuple[WebhookEvent, ...]:
    """Event names from a comma-separated text or a list, in their canonical order without repeats; a
    one-line ValueError naming the first unknown one, or for none at all."""
    names = value.split(",") if isinstance(value, str) else list(value)
    chosen: set[str] = set()
    for raw in names:
        if not isinstance(raw, str):
            raise ValueError(f"webhook_events: event names are strings, got {raw!r}")
        name = raw.strip()
        if name not in WEBHOOK_EVENTS:
            raise ValueError(f"webhook_events: unknown event {name!r} (events: {', '.join(WEBHOOK_EVENTS)})")
        chosen.add(name)
    if not chosen:
        raise ValueError(f"webhook_events: name at least one of {', '.join(WEBHOOK_EVENTS)}")
    return tuple(event for event in WEBHOOK_EVENTS if event in chosen)


class Webhook(BaseModel):
    """Where the webhooks service POSTs the job's ``events``, signed with the account's secret."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: Annotated[str, Field(max_length=MAX_WEBHOOK_URL_CHARS, description="an https:// (or http://) URL")]
    events: tuple[WebhookEvent, ...] = Field(DEFAULT_WEBHOOK_EVENTS, description="which of the job's events to send")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return check_webhook_url(url)

    @field_validator("events")
    @classmethod
    def _events(cls, events: tuple[WebhookEvent, ...]) -> tuple[WebhookEvent, ...]:
        return parse_webhook_events(events)

    def wants(self, event: WebhookEvent) -> bool:
        return event in self.events
