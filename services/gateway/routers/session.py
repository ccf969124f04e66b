"""Logging in: trade an API key for a session cookie (browsers), or mint a link token for one job or resource."""

import anyio.to_thread
from fastapi import APIRouter, Request, Response

from services.gateway.auth import TokenKind, hash_api_key, job_in
from services.gateway.dependencies import (
    COMMON_ERRORS,
    SESSION_COOKIE,
    Credential,
    CurrentCaller,
    GatewayDep,
    account_of,
    bearer_key,
    require_same_origin,
    unauthorized,
)
from services.gateway.errors import ErrorResponse, not_found
from services.gateway.schemas import Session, TokenRequest

SESSION_TTL_S = 8 * 3600
LINK_TOKEN_TTL_S = 600

router = APIRouter(prefix="/v1", tags=["auth"], responses=COMMON_ERRORS)


@router.post("/session", response_model=Session)
async def create_session(request: Request, response: Response, gateway: GatewayDep) -> Session:
    """Trade an API key (Bearer) for a session cookie, so the page's `<video>` and EventSource work.
    The cookie works only as a cookie, and only until the account's key changes."""
    key = bearer_key(request.headers.get("authorization", ""))
    if key is None:
        raise unauthorized("log in with `Authorization: Bearer <API key>`")
    digest = hash_api_key(key)
    account = await account_of(gateway, digest)
    if account is None:
        raise unauthorized("this API key is not valid")
    token = gateway.signer.issue(account, SESSION_TTL_S, kind=TokenKind.SESSION, key_hash=digest)
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
async def end_session(request: Request) -> Response:
    """Log out: forget the session cookie."""
    if request.cookies.get(SESSION_COOKIE):
        require_same_origin(request)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.post(
    "/tokens",
    response_model=Session,
    responses={404: {"model": ErrorResponse, "description": "no such job (or not yours)"}},
)
async def create_token(body: TokenRequest, caller: CurrentCaller, gateway: GatewayDep) -> Session:
    """A token valid for 10 minutes as `?token=` on GET and HEAD of `resource` only: a job's path opens
    the job and what lies under it (events, video, poster), any other path just that path. Made with
    an API key or the session; void once the account's key changes."""
    if caller.credential == Credential.LINK:  # GET-only, so never here; stated for the reader
        raise unauthorized("a link token cannot make tokens")
    job_id = job_in(body.resource)
    if job_id is not None:
        view = await anyio.to_thread.run_sync(gateway.index.get, job_id)
        if view is None or view.account != caller.account:
            raise not_found()
    token = gateway.signer.issue(
        caller.account, LINK_TOKEN_TTL_S, kind=TokenKind.LINK, key_hash=caller.key_hash, resource=body.resource
    )
    return Session(account=caller.account, expires_at=token.expires_at, token=gateway.signer.encode(token))
