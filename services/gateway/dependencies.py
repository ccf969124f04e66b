"""What routes declare they need: the gateway's run-time parts, the caller's account, the caller's job.

Credentials, in the order they are looked at: ``Authorization: Bearer`` (an API key only), the session
cookie (a session token only; a change made with it must come from this site), and ``?token=`` (a link
token only, on GET/HEAD of what it was made for). Every one is checked against the ledger's current key.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio.to_thread
from fastapi import Depends, Request

from services.gateway.auth import TOKEN_PREFIX, Token, TokenKind, hash_api_key
from services.gateway.errors import ApiError, ErrorResponse, not_found
from services.gateway.progress import JobView
from services.gateway.runtime import Gateway

SESSION_COOKIE = "i2v_session"
_MAX_JOB_ID = 64

COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "malformed request",
        401: "no valid API key, session or token",
        403: "a change sent with the session cookie from another site",
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


class Credential(StrEnum):
    KEY = "key"
    SESSION = "session"
    LINK = "link"


@dataclass(frozen=True)
class Caller:
    """Who is asking, with what, and the hash of their account's API key (what tokens are bound to)."""

    account: str
    key_hash: str
    credential: Credential


async def current_caller(request: Request, gateway: GatewayDep) -> Caller:
    """The caller, from whichever credential the request carries; each kind is taken only where it belongs:
    an API key as ``Authorization: Bearer``, the session token as the cookie, a link token as ``?token=``
    on a GET or HEAD of the resource it was made for."""
    header = request.headers.get("authorization")
    if header is not None:
        key = bearer_key(header)
        if key is None:
            raise unauthorized("the Authorization header must be `Bearer <API key>`")
        digest = hash_api_key(key)
        account = await account_of(gateway, digest)
        if account is None:
            raise unauthorized("this API key is not valid")
        return Caller(account, digest, Credential.KEY)
    link = request.query_params.get("token") if request.method in SAFE_METHODS else None
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        if request.method not in SAFE_METHODS:
            require_same_origin(request)
        token = gateway.signer.decode(cookie)
        if token is not None and token.kind == TokenKind.SESSION:
            return Caller(await _still_valid(gateway, token), token.key_hash, Credential.SESSION)
        if not link:  # a stale cookie does not spoil a link that carries its own token
            raise unauthorized("the session is not valid or has expired; log in again with your API key")
    if link:
        token = gateway.signer.decode(link)
        if token is None or token.kind != TokenKind.LINK:
            raise unauthorized("the token is not valid or has expired")
        if not token.opens(request.method, request.url.path):
            raise unauthorized(f"this token opens {token.resource} only")
        return Caller(await _still_valid(gateway, token), token.key_hash, Credential.LINK)
    raise unauthorized("send `Authorization: Bearer <API key>`; `i2v accounts create NAME` prints a key")


CurrentCaller = Annotated[Caller, Depends(current_caller)]


async def current_account(caller: CurrentCaller) -> str:
    """The caller's account."""
    return caller.account


CurrentAccount = Annotated[str, Depends(current_account)]


def bearer_key(header: str) -> str | None:
    """The API key an ``Authorization`` header carries as ``Bearer <key>``; None for anything else
    (another scheme, nothing, or a token, which is never taken there)."""
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or key.startswith(TOKEN_PREFIX):
        return None
    return key


async def account_of(gateway: Gateway, key_hash: str) -> str | None:
    """The account whose API key has this hash, asked of the ledger every time: a changed key stops at once."""
    account: str | None = await anyio.to_thread.run_sync(gateway.ledger.account_for_key_hash, key_hash)
    return account


async def _still_valid(gateway: Gateway, token: Token) -> str:
    """The token's account while that account's key is the one the token was made under."""
    if await account_of(gateway, token.key_hash) != token.account:
        raise unauthorized("the account's API key has changed since this was issued; log in again")
    return token.account


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def require_same_origin(request: Request) -> None:
    """Refuse a change sent with the session cookie unless the browser says it comes from this site's page.

    SameSite=Strict alone lets a page on another port of the same host through; ``Sec-Fetch-Site`` (every
    current browser) or else ``Origin`` must name this origin. A client that sends neither uses its API key.
    """
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None:
        allowed = site == "same-origin"
    elif origin is not None and origin != "null":
        allowed = urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()
    else:
        allowed = False
    if not allowed:
        raise ApiError(
            403,
            "cross_site_request",
            "a change made with the session cookie must come from this site's own page;"
            " other clients send `Authorization: Bearer <API key>`",
        )


async def own_job(job_id: str, account: CurrentAccount, gateway: GatewayDep) -> JobView:
    """The job named in the path, if it is the caller's; someone else's is 404 like a missing one."""
    if len(job_id) > _MAX_JOB_ID:
        raise not_found()
    view: JobView | None = await anyio.to_thread.run_sync(gateway.index.get, job_id)
    if view is None or view.account != account:
        raise not_found()
    return view


OwnJob = Annotated[JobView, Depends(own_job)]
