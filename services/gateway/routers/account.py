"""The caller's account, and what a job would cost."""

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.params import GenerationParams, Resolution
from contracts.pricing import price_points, quoted_size
from services.billing.ledger import UnknownAccountError
from services.gateway.dependencies import COMMON_ERRORS, CurrentAccount, GatewayDep, unauthorized
from services.gateway.errors import ApiError, validation_error
from services.gateway.schemas import Account, LedgerEntry, Quote
from services.gateway.submission import RESOLUTION_PATTERN, param_bounds

router = APIRouter(prefix="/v1", tags=["account"], responses=COMMON_ERRORS)


@router.get("/account", response_model=Account)
async def get_account(account: CurrentAccount, gateway: GatewayDep) -> Account:
    """Balance, unfinished jobs and the most recent ledger entries."""

    def read() -> Account:
        try:
            balance = gateway.ledger.balance(account)
            entries = gateway.ledger.entries(account, limit=20)
        except UnknownAccountError:
            raise unauthorized("this account no longer exists") from None
        return Account(
            name=account,
            balance=balance,
            active_jobs=gateway.index.active_count(account),
            max_active_jobs=gateway.settings.gateway_max_active_jobs,
            entries=[
                LedgerEntry(kind=e.kind, points=e.points, job_id=e.job_id, note=e.note, created_at=e.created_at)
                for e in entries
            ],
        )

    result: Account = await anyio.to_thread.run_sync(read)
    return result


class WebhookSecret(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"secret": "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}]}
    )

    secret: str = Field(
        description="`whsec_` + base64: the key of the `webhook-signature` on every webhook of this account's"
        " jobs (Standard Webhooks); verify with any Standard Webhooks library"
    )


def _webhook_secret(gateway: GatewayDep, account: str, rotate: bool) -> WebhookSecret:
    try:
        return WebhookSecret(secret=gateway.ledger.webhook_secret(account, rotate=rotate))
    except UnknownAccountError:
        raise unauthorized("this account no longer exists") from None


@router.get("/account/webhook-secret", response_model=WebhookSecret)
async def get_webhook_secret(account: CurrentAccount, gateway: GatewayDep) -> WebhookSecret:
    """The account's webhook signing secret (made on first ask)."""
    result: WebhookSecret = await anyio.to_thread.run_sync(_webhook_secret, gateway, account, False)
    return result


@router.post("/account/webhook-secret", response_model=WebhookSecret)
async def rotate_webhook_secret(account: CurrentAccount, gateway: GatewayDep) -> WebhookSecret:
    """A new webhook signing secret; webhooks signed from now on (retries of earlier ones too) use it."""
    result: WebhookSecret = await anyio.to_thread.run_sync(_webhook_secret, gateway, account, True)
    return result


@router.get("/quote", response_model=Quote)
async def quote(
    gateway: GatewayDep,
    duration: Annotated[int, Query(**param_bounds("duration"), description="seconds")] = 4,
    fps: Annotated[int, Query(**param_bounds("fps"), description="frames per second")] = 8,
    steps: Annotated[int, Query(**param_bounds("steps"), description="denoising steps")] = 25,
    resolution: Annotated[
        str | None, Query(pattern=RESOLUTION_PATTERN, description="WxH; default: the model's size")
    ] = None,
) -> Quote:
    """The price of a job: 8 + ceil(width · height · duration · fps · steps / 2,457,600) points, at
    ``resolution`` (WxH) or else the server's model's size. A picture of another aspect is made at about
    the model's area, so its charge can differ a little from this quote."""
    try:
        size = Resolution.parse(resolution) if resolution else None
        params = GenerationParams(
            duration=duration, fps=fps, steps=steps, resolution=size, model=gateway.settings.model
        )
    except ValidationError as exc:
        raise validation_error(exc) from None
    except ValueError as exc:
        message = f"resolution: {str(exc).splitlines()[0]}"
        raise ApiError(422, "invalid_resolution", message, field="resolution") from None
    model_size = await anyio.to_thread.run_sync(gateway.model_size, params.model)
    width, height = quoted_size(params, model_size)
    return Quote(
        duration=duration,
        fps=fps,
        frames=params.frame_count,
        steps=steps,
        width=width,
        height=height,
        price=price_points(params, width, height),
    )
