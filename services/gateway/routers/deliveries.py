"""A job's webhook deliveries: every attempt the webhooks service made, as its delivery log holds them."""

from datetime import UTC, datetime
from typing import Literal, cast

import anyio.to_thread
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from contracts.webhooks import WebhookEvent
from services.gateway.dependencies import COMMON_ERRORS, GatewayDep, OwnJob
from services.gateway.errors import ErrorResponse

router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    responses={**COMMON_ERRORS, 404: {"model": ErrorResponse, "description": "no such job (or not yours)"}},
)


class WebhookDelivery(BaseModel):
    event: WebhookEvent
    webhook_id: str = Field(description="the `webhook-id` header: the same on every attempt at one webhook")
    attempt: int = Field(ge=1)
    outcome: Literal["delivered", "retrying", "gave_up"] = Field(
        description="`gave_up`: out of time (I2V_WEBHOOK_RETRY_HOURS), dead-lettered"
    )
    status_code: int | None = Field(None, description="the receiver's HTTP status; none when it gave no answer")
    error: str | None = Field(None, description="why the attempt failed: a non-2xx status, a timeout, a refusal")
    attempted_at: datetime
    next_retry_at: datetime | None = Field(None, description="when the next attempt is due")


class WebhookDeliveryPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "j0192a6f0c2e1a8b3c4d5",
                    "deliveries": [
                        {
                            "event": "completed",
                            "webhook_id": "msg_j0192a6f0c2e1a8b3c4d5_completed_g0",
                            "attempt": 1,
                            "outcome": "retrying",
                            "status_code": 503,
                            "error": "HTTP 503: busy",
                            "attempted_at": "2026-01-02T03:04:05Z",
                            "next_retry_at": "2026-01-02T03:04:10Z",
                        },
                        {
                            "event": "completed",
                            "webhook_id": "msg_j0192a6f0c2e1a8b3c4d5_completed_g0",
                            "attempt": 2,
                            "outcome": "delivered",
                            "status_code": 200,
                            "error": None,
                            "attempted_at": "2026-01-02T03:04:10Z",
                            "next_retry_at": None,
                        },
                    ],
                }
            ]
        }
    )

    job_id: str
    deliveries: list[WebhookDelivery]


def _at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@router.get("/{job_id}/deliveries", response_model=WebhookDeliveryPage)
async def job_deliveries(job: OwnJob, gateway: GatewayDep) -> WebhookDeliveryPage:
    """Each attempt to deliver the job's webhooks, oldest first: the event, its `webhook-id` (what a
    receiver dedupes on), the attempt's number, the receiver's status or the error, when, and when the
    next attempt is due (none once delivered or given up). Empty for a job without a webhook."""
    attempts = await anyio.to_thread.run_sync(gateway.ledger.webhook_deliveries, job.job_id)
    return WebhookDeliveryPage(
        job_id=job.job_id,
        deliveries=[
            WebhookDelivery(
                event=cast(WebhookEvent, a.event),
                webhook_id=a.webhook_id,
                attempt=a.attempt,
                outcome=a.outcome,
                status_code=a.status_code,
                error=a.error or None,
                attempted_at=datetime.fromtimestamp(a.attempted_at, UTC),
                next_retry_at=_at(a.next_retry_at),
            )
            for a in attempts
        ],
    )
