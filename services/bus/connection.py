"""How a process reaches NATS: the servers it connects to and the options every connection of it passes to
``nats.connect``, and the same for FastStream's ``NatsBroker``, built from its settings.

``I2V_NATS_URL`` names one server or, for a cluster, every node separated by commas; clients are given all
of them, so a connection moves to another node when its own goes down.

Each user gets replies on subjects of its own, ``_INBOX_<user>.>``: its permissions allow it to
subscribe there and nowhere else, so no user can read another's replies (JetStream acks, consumer
deliveries).
"""

from typing import Any

from faststream.nats.security import NatsUserPassword

from services.config import Settings


def nats_servers(url: str) -> list[str]:
    """The server URLs in ``url`` (one, or several separated by commas), for ``nats.connect`` and
    ``NatsBroker``; ValueError for an empty entry."""
    servers = [part.strip() for part in url.split(",")]
    if not all(servers):
        raise ValueError(f"I2V_NATS_URL {url!r} has an empty entry: give server URLs separated by commas")
    return servers


def inbox_prefix(user: str) -> str:
    """The reply-subject prefix of ``user``; the server lets ``user`` subscribe to ``<prefix>.>`` only."""
    return f"_INBOX_{user}"


def _prefix(settings: Settings) -> str:
    return settings.nats_inbox_prefix or (inbox_prefix(settings.nats_user) if settings.nats_user else "")


def _inbox(settings: Settings) -> dict[str, Any]:
    prefix = _prefix(settings)
    return {"inbox_prefix": prefix} if prefix else {}


def subscriber_inbox(settings: Settings) -> bytes:
    """For ``NatsBroker.subscriber``: FastStream's pull consumers take their inbox from here, not from
    the connection."""
    return f"{_prefix(settings) or '_INBOX'}.".encode()


def nats_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect``: user, password and the inbox prefix that goes with them.
    Empty for an anonymous connection (a server without users)."""
    if not settings.nats_user:
        return _inbox(settings)
    return {"user": settings.nats_user, "password": settings.nats_password, **_inbox(settings)}


def broker_options(settings: Settings) -> dict[str, Any]:
    """The same for FastStream's ``NatsBroker``, which takes the user and password as a security object."""
    if not settings.nats_user:
        return _inbox(settings)
    return {"security": NatsUserPassword(settings.nats_user, settings.nats_password), **_inbox(settings)}
