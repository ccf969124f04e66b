"""Batches: the jobs one submission with ``variations`` made, together."""

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Path

from services.gateway.dependencies import COMMON_ERRORS, CurrentAccount, GatewayDep
from services.gateway.errors import ErrorResponse, not_found
from services.gateway.progress import JobView
from services.gateway.schemas import BatchResource

router = APIRouter(
    prefix="/v1/batches",
    tags=["jobs"],
    responses={**COMMON_ERRORS, 404: {"model": ErrorResponse, "description": "no such batch (or not yours)"}},
)


@router.get("/{batch_id}", response_model=BatchResource)
async def get_batch(
    batch_id: Annotated[str, Path(max_length=64, description="the `batch.id` a submission with `variations` answered")],
    account: CurrentAccount,
    gateway: GatewayDep,
) -> BatchResource:
    """The batch's jobs in seed order, each as `GET /v1/jobs/{id}` shows it (deleted ones too, marked so)."""
    views: list[JobView] = await anyio.to_thread.run_sync(gateway.index.batch, account, batch_id)
    if not views:
        raise not_found("batch")
    return BatchResource.of(batch_id, views)
