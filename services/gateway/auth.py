"""API keys and the signed short-lived tokens browsers use where they cannot send a header.

An API key is shown once and stored only as its sha256. ``EventSource`` and ``<video>`` cannot set
``Authorization``, so the page trades the key for a session cookie holding a signed token; API
clients can also mint a link token for one job or resource (``?token=``, GET only). The raw key never
appears in a URL. Every token carries the key's generation (its hash): a new key voids them all.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

API_KEY_PREFIX = "i2v_"
TOKEN_PREFIX = "i2vt."


def new_api_key() -> str:
    """A fresh random API key; store :func:`hash_api_key` of it, show it once."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """What the ledger stores for a key: hex sha256 (keys are random, so no salt or stretching is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def load_or_create_secret(configured: str, state_dir: Path) -> bytes:
    """The HMAC key: the configured one, else one generated once into ``state_dir/gateway.secret``."""
    if configured:
        return configured.encode()
    path = state_dir / "gateway.secret"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    try:
        # O_EXCL: two gateways starting at once agree on whichever secret was written first.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(secret)
    return secret


class TokenKind(StrEnum):
    SESSION = "session"
    """The session cookie: the account's whole API, from the cookie only."""
    LINK = "link"
    """A ``?token=`` link: GET and HEAD of one resource or one job only."""


JOB_PATH = re.compile(r"/v1/jobs/([A-Za-z0-9_-]{1,64})")
"""A job's own path; a link token made for it also opens what lies under it (events, video, poster)."""
LINK_RESOURCE = r"^/v1/(account|jobs|quote|jobs/[A-Za-z0-9_-]{1,64}(/(events|video|poster))?)$"
"""What a link token may be made for: the API's GET resources."""


def job_in(resource: str) -> str | None:
    """The job a resource path belongs to, if any."""
    found = JOB_PATH.match(resource)
    return found.group(1) if found else None


@dataclass(frozen=True)
class Token:
    account: str
    expires_at: int
    kind: TokenKind
    key_hash: str
    """The hash of the account's API key when the token was made: once the key changes, the token is void."""
    resource: str = ""
    """What a link token opens: a path, or with a job's path the job and everything under it."""

    def opens(self, method: str, path: str) -> bool:
        """Whether this token, as a link, lets ``method`` read ``path``."""
        if self.kind != TokenKind.LINK or method not in {"GET", "HEAD"}:
            return False
        return path == self.resource or (
            JOB_PATH.fullmatch(self.resource) is not None and path.startswith(self.resource + "/")
        )


class TokenSigner:
    """Signs tokens with HMAC-SHA256: ``i2vt.<payload>.<signature>``, the payload base64url JSON.

    The account's key hash travels masked (XOR with an HMAC of a random nonce): the gateway reads it
    back to check that the key has not changed since, and a token's holder learns nothing of it.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the gateway secret must be at least 16 bytes")
        self._secret = secret

    def issue(
        self,
        account: str,
        ttl_s: int,
        *,
        kind: TokenKind,
        key_hash: str,
        resource: str = "",
        now: float | None = None,
    ) -> Token:
        expires_at = int((now if now is not None else time.time()) + ttl_s)
        return Token(account, expires_at, kind, key_hash, resource)

    def encode(self, token: Token) -> str:
        nonce = secrets.token_bytes(12)
        masked = bytes(a ^ b for a, b in zip(bytes.fromhex(token.key_hash), self._mask(nonce), strict=True))
        fields = {
            "a": token.account,
            "e": token.expires_at,
            "k": token.kind.value,
            "r": token.resource,
            "n": _b64(nonce),
            "g": _b64(masked),
        }
        body = _b64(json.dumps(fields, separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}{body}.{self._sign(body)}"

    def decode(self, text: str, now: float | None = None) -> Token | None:
        """The token's content if it is ours, untampered and unexpired; otherwise None."""
        if not text.startswith(TOKEN_PREFIX) or len(text) > _MAX_TOKEN:
            return None
        body, _, signature = text[len(TOKEN_PREFIX) :].partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return None
        try:
            fields = json.loads(_unb64(body))
            nonce, masked = _unb64(fields["n"]), _unb64(fields["g"])
            key_hash = bytes(a ^ b for a, b in zip(masked, self._mask(nonce), strict=True)).hex()
            token = Token(
                account=str(fields["a"]),
                expires_at=int(fields["e"]),
                kind=TokenKind(fields["k"]),
                key_hash=key_hash,
                resource=str(fields["r"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if token.expires_at < (now if now is not None else time.time()):
            return None
        return token

    def _mask(self, nonce: bytes) -> bytes:
        return hmac.new(self._secret, b"i2v-key-mask:" + nonce, hashlib.sha256).digest()

    def _sign(self, body: str) -> str:
        digest = hmac.new(self._secret, f"i2v-token:v2:{body}".encode(), hashlib.sha256).digest()
        return _b64(digest)


_MAX_TOKEN = 2048


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
