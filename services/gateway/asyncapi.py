"""The AsyncAPI document of the whole bus, from every service's own FastStream app.

Each service's composition root is built without connecting (nothing connects at build time), and
the brokers' subscriptions, with the contracts they carry, are combined into one document, together
with what the gateway itself publishes and follows, the webhooks service's own durable consumer of the
events, and the webhooks it POSTs (``services.webhooks.document``: each event's body and the signature
headers).
"""

import functools
import importlib
from typing import Any

from faststream.nats import JStream, NatsBroker
from faststream.specification import AsyncAPI

from contracts.messages import CancelRequested, Event, JobSubmitted
from contracts.stages import PIPELINE_ORDER, Stage
from contracts.subjects import EVENTS_STREAM, EVENTS_SUBJECTS, WORK_STREAM, work_subject
from services.config import Settings
from services.webhooks.document import add_webhooks

_NOWHERE = "nats://127.0.0.1:4222"


def _gateway_broker() -> NatsBroker:
    broker = NatsBroker(_NOWHERE)

    @broker.subscriber(
        EVENTS_SUBJECTS,
        stream=JStream(EVENTS_STREAM, declare=False),
        description="Every job's events, fanned out to SSE followers and folded into the jobs index",
    )
    async def on_event(event: Event) -> None: ...

    broker.publisher(
        work_subject(Stage.INGEST),
        stream=JStream(WORK_STREAM, declare=False),
        schema=JobSubmitted,
        title="gateway:JobSubmitted",
        description="A job submitted over HTTP; the upload is already in the object store",
    )
    broker.publisher(
        "i2v.events.{job_id}.stage",
        stream=JStream(EVENTS_STREAM, declare=False),
        schema=CancelRequested,
        title="gateway:CancelRequested",
        description="Recorded in the job's history when someone cancels it",
    )
    return broker


@functools.cache
def bus_document() -> dict[str, Any]:
    """The combined AsyncAPI 3.0 document as JSON-ready data (built once per process).

    Building a service's app opens nothing (its ledger and store are opened when it starts), so this
    touches no server whatever the settings in the environment say.
    """
    settings = Settings(nats_url=_NOWHERE, s3_endpoint="http://127.0.0.1:8333", trace_file=None, ready_file=None)
    brokers = [_gateway_broker()]
    for service in (*(stage.value for stage in PIPELINE_ORDER), "webhooks"):
        module = importlib.import_module(f"services.{service}.app")
        brokers.append(module.build_app(settings).broker)
    spec = AsyncAPI(
        *brokers,
        title="i2v bus",
        version="1",
        description="Stage commands on the I2V_WORK stream, each job's history on I2V_EVENTS, and the webhooks"
        " POSTed to the URLs jobs name.",
    )
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    return add_webhooks(document)


if __name__ == "__main__":
    import json

    print(json.dumps(bus_document(), indent=2))
