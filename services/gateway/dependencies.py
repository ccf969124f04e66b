"""What routes declare they need: the gateway's run-time parts, the caller's account, the caller's job.

Credentials, in the order they are looked at: ``Authorization: Bearer`` (an API key or a token), the
session cookie, and on GET/HEAD only ``?token=``.
"""

import time
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, Request

from services.gateway.auth import TOKEN_PREFIX, hash_api_key
from services.gateway.errors import ApiError, ErrorResponse, not_found
from services.gateway.progress import JobView
from services.gateway.runtime import Gateway

SESSION_COOKIE = "i2v_session"
_KEY_CACHE_S = 30.0
_MAX_JOB_ID = 64

COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "malformed request",
        401: "no valid API key, session or token",
        422: "a parameter is out of range; `field` names it",
    }.items()
}
"""Answers any authenticated route may give; routers list them in ``responses``."""


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(gateway_of)]


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="i2v"'})


async def current_account(request: Request, gateway: GatewayDep) -> str:
    """The caller's account, from whichever credential the request carries."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise unauthorized("the Authorization header must be `Bearer <API key>`")
        if credential.startswith(TOKEN_PREFIX):
            return token_account(gateway, credential)
        account = await key_account(gateway, credential)
        if account is None:
            raise unauthorized("this API key is not valid")
        return account
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return token_account(gateway, cookie, what="session")
    token = request.query_params.get("token")
    if token and request.method in {"GET", "HEAD"}:
        return token_account(gateway, token)
    raise unauthorized("send `Authorization: Bearer <API key>`; `i2v accounts create NAME` prints a key")


CurrentAccount = Annotated[str, Depends(current_account)]


def token_account(gateway: Gateway, text: str, what: str = "token") -> str:
    token = gateway.signer.decode(text)
    if token is None:
        raise unauthorized(f"the {what} is not valid or has expired; log in again with your API key")
    return token.account


async def key_account(gateway: Gateway, key: str) -> str | None:
    """The account an API key belongs to; looked up in the ledger, remembered for a few seconds."""
    digest = hash_api_key(key)
    cached = gateway.key_cache.get(digest)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    account: str | None = await anyio.to_thread.run_sync(gateway.ledger.account_for_key_hash, digest)
    if account is not None:
        gateway.key_cache[digest] = (account, time.monotonic() + _KEY_CACHE_S)
    return account


async def own_job(job_id: str, account: CurrentAccount, gateway: GatewayDep) -> JobView:
    """The job named in the path, if it is the caller's; someone else's is 404 like a missing one."""
    if len(job_id) > _MAX_JOB_ID:
        raise not_found()
    view: JobView | None = await anyio.to_thread.run_sync(gateway.index.get, job_id)
    if view is None or view.account != account:
        raise not_found()
    return view


OwnJob = Annotated[JobView, Depends(own_job)]
