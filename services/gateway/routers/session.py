"""Logging in: trade an API key for a session cookie (browsers), or for a short-lived link token."""

from fastapi import APIRouter, Request, Response

from services.gateway.auth import TOKEN_PREFIX
from services.gateway.dependencies import (
    COMMON_ERRORS,
    SESSION_COOKIE,
    CurrentAccount,
    GatewayDep,
    key_account,
    unauthorized,
)
from services.gateway.schemas import Session

SESSION_TTL_S = 8 * 3600
LINK_TOKEN_TTL_S = 600

router = APIRouter(prefix="/v1", tags=["auth"], responses=COMMON_ERRORS)


@router.post("/session", response_model=Session)
async def create_session(request: Request, response: Response, gateway: GatewayDep) -> Session:
    """Trade an API key (Bearer) for a session cookie, so the page's `<video>` and EventSource work."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or key.startswith(TOKEN_PREFIX):
        raise unauthorized("log in with `Authorization: Bearer <API key>`")
    account = await key_account(gateway, key)
    if account is None:
        raise unauthorized("this API key is not valid")
    token = gateway.signer.issue(account, SESSION_TTL_S)
    response.set_cookie(
        SESSION_COOKIE,
        gateway.signer.encode(token),
        max_age=SESSION_TTL_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return Session(account=account, expires_at=token.expires_at)


@router.delete("/session", status_code=204)
async def end_session() -> Response:
    """Log out: forget the session cookie."""
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.post("/tokens", response_model=Session)
async def create_token(account: CurrentAccount, gateway: GatewayDep) -> Session:
    """A token valid for 10 minutes, for `?token=` on GET links where a header cannot be sent."""
    token = gateway.signer.issue(account, LINK_TOKEN_TTL_S)
    return Session(account=account, expires_at=token.expires_at, token=gateway.signer.encode(token))
