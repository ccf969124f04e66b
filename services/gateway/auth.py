"""API keys and the signed short-lived tokens browsers use where they cannot send a header.

An API key is shown once and stored only as its sha256. ``EventSource`` and ``<video>`` cannot set
``Authorization``, so the page trades the key for a session cookie holding a signed token; API
clients can also mint a token for a URL (``?token=``). The raw key never appears in a URL.
"""

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Token:
    account: str
    expires_at: int


class TokenSigner:
    """Signs ``account`` + expiry with HMAC-SHA256; tokens look like ``i2vt.<account>.<exp>.<sig>``."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the gateway secret must be at least 16 bytes")
        self._secret = secret

    def issue(self, account: str, ttl_s: int, now: float | None = None) -> Token:
        return Token(account, int((now if now is not None else time.time()) + ttl_s))

    def encode(self, token: Token) -> str:
        name = base64.urlsafe_b64encode(token.account.encode()).decode().rstrip("=")
        body = f"{name}.{token.expires_at}"
        return f"{TOKEN_PREFIX}{body}.{self._sign(body)}"

    def decode(self, text: str, now: float | None = None) -> Token | None:
        """The token's content if it is ours, untampered and unexpired; otherwise None."""
        if not text.startswith(TOKEN_PREFIX):
            return None
        parts = text[len(TOKEN_PREFIX) :].split(".")
        if len(parts) != 3:
            return None
        name, expires, signature = parts
        if not hmac.compare_digest(signature, self._sign(f"{name}.{expires}")):
            return None
        try:
            account = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
            expires_at = int(expires)
        except ValueError:
            return None
        if expires_at < (now if now is not None else time.time()):
            return None
        return Token(account, expires_at)

    def _sign(self, body: str) -> str:
        digest = hmac.new(self._secret, f"i2v-token:{body}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
