"""The webhooks as the AsyncAPI document describes them: one HTTP POST per event a job asked for, its body's
schema per event built from the same models and allowlists the body is made from (``delivery.outgoing``:
the public event of ``services.gateway.public_events``, the job resource's essentials), so the document
cannot drift from what is sent."""

from datetime import datetime
from typing import Any, Literal, cast, get_args

from pydantic import BaseModel, Field, create_model

from contracts import messages
from contracts.webhooks import WEBHOOK_EVENTS, WebhookEvent
from services.gateway.progress import JobOutput
from services.gateway.public_events import SHOWN
from services.gateway.schemas import JobResource

JOB_ESSENTIALS = frozenset(
    {"id", "status", "generation", "stage", "price", "seed", "error", "output", "created_at", "links"}
)
"""The fields of the job resource a webhook's ``data.job`` carries."""

EVENTS_OF: dict[WebhookEvent, tuple[type[BaseModel], ...]] = {
    "started": (messages.StageStarted,),
    "preview": (messages.StagePreview,),
    "completed": (messages.JobCompleted,),
    "failed": (messages.JobFailed, messages.JobRejected),
    "cancelled": (messages.JobCancelled,),
}
"""The bus events each webhook event is sent for (``delivery.webhook_event_of``)."""

_REF = "#/components/schemas/{model}"
_PUBLIC_NAME = {"reason": "message"}

SIGNATURE_HEADERS: dict[str, Any] = {
    "type": "object",
    "required": ["webhook-id", "webhook-timestamp", "webhook-signature"],
    "properties": {
        "webhook-id": {
            "type": "string",
            "description": "the same on every attempt at this webhook: msg_<job>_<event>_g<generation> (a preview's"
            " adds _a<attempt>_<index>); drop repeats by it",
        },
        "webhook-timestamp": {"type": "string", "description": "seconds since the epoch when this attempt was signed"},
        "webhook-signature": {
            "type": "string",
            "description": "v1,<base64 HMAC-SHA256 of id.timestamp.body> under the account's whsec_ secret"
            " (Standard Webhooks)",
        },
    },
}


def _literal(value: str) -> Any:
    """``Literal[value]`` for a value known only at run time."""
    return cast(Any, Literal)[value]


def _public_event_model(event_type: type[BaseModel]) -> type[BaseModel]:
    """The event as ``public_event`` shows it: its type, job and generation, then its allowlisted fields."""
    name = event_type.__name__
    fields: dict[str, Any] = {
        "job_id": (str, ...),
        "generation": (int, ...),
        "type": (_literal(name), ...),
    }
    for shown in SHOWN[event_type]:
        info = event_type.model_fields[shown]
        fields[_PUBLIC_NAME.get(shown, shown)] = (info.annotation, Field(..., description=info.description))
    if event_type is messages.StagePreview:
        fields["url"] = (str, Field(..., description="where to GET the preview (the video's credentials)"))
    if event_type is messages.JobCompleted:
        fields["output"] = (JobOutput, ...)
        fields["video"] = (str, Field(..., description="the video's URL under this API"))
        fields["poster"] = (str, Field(..., description="the poster's URL under this API"))
    model: type[BaseModel] = create_model(f"Public{name}", **fields)
    return model


def body_model(kind: WebhookEvent) -> type[BaseModel]:
    """The model of the body POSTed for ``kind``: ``{"type": "job.<kind>", "timestamp", "data": {"job_id",
    "event", "job"}}``."""
    events = tuple(_public_event_model(e) for e in EVENTS_OF[kind])
    event: Any = events[0] if len(events) == 1 else events[0] | events[1]
    job = create_model(
        "WebhookJob",
        **{name: (info.annotation, info) for name, info in JobResource.model_fields.items() if name in JOB_ESSENTIALS},
    )  # type: ignore[call-overload]
    data = create_model(
        f"Webhook{kind.title()}Data",
        job_id=(str, ...),
        event=(event, Field(..., description="the event as the job's SSE stream shows it")),
        job=(job, Field(..., description="the job resource's essentials after this event")),
    )
    model: type[BaseModel] = create_model(
        f"Webhook{kind.title()}",
        type=(_literal(f"job.{kind}"), ...),
        timestamp=(datetime, Field(..., description="when the event was published, UTC")),
        data=(data, ...),
    )
    return model


def add_webhooks(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (AsyncAPI 3.0) with the webhooks: a channel for the job's URL, a send operation over HTTP
    POST, and a message per event with its body's schema and the signature headers; changed in place."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    components = document["components"].setdefault("messages", {})
    refs = {}
    for kind in get_args(WebhookEvent):
        schema = body_model(kind).model_json_schema(ref_template=_REF)
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas[f"Webhook:{kind}"] = schema
        components[f"webhook:{kind}"] = {
            "name": f"job.{kind}",
            "title": f"job.{kind}",
            "summary": f"POSTed for the job's {kind} event when its webhook_events include {kind!r}",
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/Webhook:{kind}"},
            "headers": SIGNATURE_HEADERS,
            "bindings": {"http": {"headers": SIGNATURE_HEADERS}},
        }
        refs[kind] = {"$ref": f"#/components/messages/webhook:{kind}"}
    document.setdefault("channels", {})["webhooks"] = {
        "address": "{webhook}",
        "title": "A job's webhook",
        "description": "The URL a job was submitted with (`webhook`); the webhooks service POSTs each event the job"
        " asked for (`webhook_events`, default completed, failed, cancelled), retrying a non-2xx answer with a"
        " doubling delay for up to 24 hours with the same webhook-id and body.",
        "parameters": {"webhook": {"description": "the job's webhook URL (http or https)"}},
        "messages": refs,
    }
    document.setdefault("operations", {})["webhooks:send"] = {
        "action": "send",
        "title": "webhooks: POST a job's events",
        "channel": {"$ref": "#/channels/webhooks"},
        "bindings": {"http": {"method": "POST"}},
        "messages": [{"$ref": f"#/channels/webhooks/messages/{kind}"} for kind in WEBHOOK_EVENTS],
    }
    return document
