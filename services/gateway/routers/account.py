"""The caller's account, and what a job would cost."""

import anyio.to_thread
from fastapi import APIRouter
from pydantic import ValidationError

from contracts.params import GenerationParams
from contracts.pricing import price_points
from services.billing.ledger import UnknownAccountError
from services.gateway.dependencies import COMMON_ERRORS, CurrentAccount, GatewayDep, unauthorized
from services.gateway.errors import validation_error
from services.gateway.schemas import Account, LedgerEntry, Quote

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


@router.get("/quote", response_model=Quote)
async def quote(duration: int = 4, fps: int = 8) -> Quote:
    """The price of a job of ``duration`` seconds at ``fps``: 8 + 4·duration + max(0, (fps - 8) // 4)."""
    try:
        GenerationParams(duration=duration, fps=fps)
    except ValidationError as exc:
        raise validation_error(exc) from None
    return Quote(duration=duration, fps=fps, frames=duration * fps, price=price_points(duration, fps))
