"""The embedded stack's NATS passwords: generated on first start into the state folder, readable by the
owner only, and kept, so a restarted stack (and its clients) use the same ones.

``<state>/credentials/nats.json`` maps each user to its password and the bcrypt hash nats-server checks.
Deleting the file (or one user's entry) and restarting the stack rotates them (docs/SECURITY.md).
"""

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from infra.process import write_private

NATS_FILE = Path("credentials") / "nats.json"
# The passwords are 256-bit random strings: a costly hash adds nothing to their strength, and
# nats-server checks the hash on every connect.
_BCRYPT_ROUNDS = 4


@dataclass(frozen=True)
class NatsLogin:
    user: str
    password: str
    hashed: str
    """bcrypt hash of the password: what the server's configuration holds."""

    def __repr__(self) -> str:
        return f"NatsLogin(user={self.user!r})"


def nats_logins(state_dir: Path, users: Iterable[str], rotate: Iterable[str] = ()) -> dict[str, NatsLogin]:
    """The password of each of ``users``, created for those the state folder has none for yet and
    replaced for those in ``rotate``."""
    path = state_dir / NATS_FILE
    stored: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}
    renew = set(rotate)
    changed = False
    for user in users:
        if user not in stored or user in renew:
            password = secrets.token_urlsafe(32)
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(_BCRYPT_ROUNDS)).decode()
            stored[user] = {"password": password, "bcrypt": hashed}
            changed = True
    if changed:
        write_private(path, json.dumps(stored, indent=2))
    return {user: NatsLogin(user, entry["password"], entry["bcrypt"]) for user, entry in stored.items()}
