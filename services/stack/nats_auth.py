"""Who may publish and subscribe what on NATS: one user per service, a client user for the CLI, the
gateway's own, and an admin that declares the streams; rendered as nats-server's ``authorization`` block.

Everyone subscribes to its own inbox only (``_INBOX_<user>.>``): messages reach a service through
JetStream consumers it is allowed to pull from or create, never through a core subscription, so no user
can listen to ``i2v.>``. Publishing a command is allowed to the stage that produces it: only billing may
publish ``i2v.work.latent`` (and forwards a replay's stored command to decode or mux); clients may
publish ``i2v.work.ingest``, ``i2v.work.billing`` (a replay goes through billing, which charges again)
and the ``stage`` events of a cancel or replay, never a terminal event. docs/SECURITY.md explains the
table and what it does not stop.
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from contracts.stages import PIPELINE_ORDER, Stage
from contracts.subjects import (
    CANCEL_BUCKET,
    DLQ_STREAM,
    EVENTS_STREAM,
    TERMINAL_EVENTS_FILTER,
    WORK_STREAM,
    dlq_subject,
    durable_name,
    work_subject,
)
from services.bus.connection import inbox_prefix

ADMIN = "admin"
"""Declares streams and the cancel bucket and sweeps the work stream; the stack itself, or an operator."""
CLIENT = "client"
"""The ``i2v`` commands: submit, follow, cancel, replay, dead letters."""
GATEWAY = "gateway"
WEBHOOKS = "webhooks"
"""The webhooks service: reads every event through its own durable, dead-letters what it gives up on."""
SERVICE_USERS: tuple[str, ...] = tuple(stage.value for stage in PIPELINE_ORDER)
USERS: tuple[str, ...] = (*SERVICE_USERS, GATEWAY, WEBHOOKS, CLIENT, ADMIN)
ROUTE = "route"
"""The login a cluster's nodes give one another on their routes (``cluster { authorization }``); no
client can use it: it is not among the clients' users."""

SETTLE_DURABLE = "i2v-billing-settle"
"""Billing's durable on the terminal events (services/billing/app.py); no one else may create or change it."""
WEBHOOKS_DURABLE = "i2v-webhooks"
"""The webhooks service's durable on every event (services/webhooks/app.py); likewise its own."""
WEBHOOKS_DLQ = "i2v.dlq.webhooks"
"""Where the webhooks service dead-letters a webhook it gave up on."""

_API = "$JS.API"
_CANCEL_STREAM = f"KV_{CANCEL_BUCKET}"

# Commands a stage sends on: the flow, plus billing forwarding a replay's stored command to the stage
# it resumes at (after reserving again).
_SENDS: Mapping[Stage, tuple[Stage, ...]] = {
    Stage.INGEST: (Stage.BILLING,),
    Stage.BILLING: (Stage.LATENT, Stage.DECODE, Stage.MUX),
    Stage.LATENT: (Stage.DECODE,),
    Stage.DECODE: (Stage.MUX,),
    Stage.MUX: (),
}


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()


def _stream_info() -> list[str]:
    """Looking streams up: every process checks they exist at start (``ensure_streams``)."""
    streams = (WORK_STREAM, EVENTS_STREAM, DLQ_STREAM, _CANCEL_STREAM)
    return [f"{_API}.INFO", *(f"{_API}.STREAM.INFO.{name}" for name in streams)]


def _durable(stream: str, durable: str, filter_subject: str) -> list[str]:
    """Pull from (and create, with exactly this filter) one durable consumer, and ack its messages."""
    return [
        f"{_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{_API}.CONSUMER.CREATE.{stream}.{durable}.{filter_subject}",
        f"{_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def _ordered(stream: str) -> list[str]:
    """Read a stream through ephemeral ordered consumers (their flow-control replies included)."""
    return [
        f"{_API}.CONSUMER.CREATE.{stream}",
        f"{_API}.CONSUMER.CREATE.{stream}.>",
        f"{_API}.CONSUMER.INFO.{stream}.*",
        f"$JS.FC.{stream}.>",
    ]


def _watch_cancels() -> list[str]:
    return [
        *_ordered(_CANCEL_STREAM),
        f"{_API}.DIRECT.GET.{_CANCEL_STREAM}",
        f"{_API}.DIRECT.GET.{_CANCEL_STREAM}.>",
        f"{_API}.STREAM.MSG.GET.{_CANCEL_STREAM}",
    ]


def _read_work_lines() -> list[str]:
    """Read each stage's line of commands without taking any (queue positions, services/gateway/eta.py):
    the stage durables' counters and single messages of the work stream; no consumer, no fetch."""
    return [
        *(f"{_API}.CONSUMER.INFO.{WORK_STREAM}.{durable_name(stage)}" for stage in PIPELINE_ORDER),
        f"{_API}.STREAM.MSG.GET.{WORK_STREAM}",
    ]


_STAGE_EVENTS = "i2v.events.*.stage"
_TERMINAL_EVENTS = "i2v.events.*.terminal"


def _service(stage: Stage) -> Permissions:
    publish = [
        *_stream_info(),
        *_durable(WORK_STREAM, durable_name(stage), work_subject(stage)),
        *_watch_cancels(),
        *(work_subject(next_stage) for next_stage in _SENDS[stage]),
        _STAGE_EVENTS,
        _TERMINAL_EVENTS,
        dlq_subject(stage),
        dlq_subject(None),  # an unreadable message on a subject no stage consumes
    ]
    if stage == Stage.BILLING:
        publish += _durable(EVENTS_STREAM, SETTLE_DURABLE, TERMINAL_EVENTS_FILTER)
    return Permissions(tuple(publish), (f"{inbox_prefix(stage.value)}.>",))


def _webhooks() -> Permissions:
    publish = [
        *_stream_info(),
        *_durable(EVENTS_STREAM, WEBHOOKS_DURABLE, "i2v.events.>"),
        *_watch_cancels(),  # every service's kit watches the cancel bucket
        WEBHOOKS_DLQ,
    ]
    return Permissions(tuple(publish), (f"{inbox_prefix(WEBHOOKS)}.>",))


def _front_door(user: str, *, dead_letters: bool) -> Permissions:
    """Submit, follow, cancel and replay jobs; the CLI also reads the dead letters."""
    publish = [
        *_stream_info(),
        *_watch_cancels(),
        *_ordered(EVENTS_STREAM),
        f"{_API}.STREAM.MSG.GET.{EVENTS_STREAM}",
        f"{_API}.DIRECT.GET.{EVENTS_STREAM}.>",
        *_read_work_lines(),
        work_subject(Stage.INGEST),
        work_subject(Stage.BILLING),  # a replay: billing reserves again before anything runs
        _STAGE_EVENTS,  # CancelRequested, ReplayRequested
        f"$KV.{CANCEL_BUCKET}.*",
    ]
    if dead_letters:
        publish += _ordered(DLQ_STREAM)
    # Creating a consumer of that name would change billing's settlement consumer.
    deny = tuple(f"{_API}.CONSUMER.CREATE.{EVENTS_STREAM}.{d}.>" for d in (SETTLE_DURABLE, WEBHOOKS_DURABLE))
    return Permissions(tuple(publish), (f"{inbox_prefix(user)}.>",), deny)


def _admin() -> Permissions:
    publish = (f"{_API}.>", dlq_subject(None), "$JS.FC.>")
    return Permissions(publish, (f"{inbox_prefix(ADMIN)}.>",))


def permissions(user: str) -> Permissions:
    """What ``user`` may publish and subscribe to; KeyError for a user the table does not know."""
    if user in SERVICE_USERS:
        return _service(Stage(user))
    if user == GATEWAY:
        return _front_door(user, dead_letters=False)
    if user == WEBHOOKS:
        return _webhooks()
    if user == CLIENT:
        return _front_door(user, dead_letters=True)
    if user == ADMIN:
        return _admin()
    raise KeyError(user)


def authorization_block(hashes: Mapping[str, str], users: Iterable[str] = USERS) -> str:
    """nats-server's ``authorization`` block: each user with the bcrypt hash of its password (the
    configuration holds no password) and its permissions. It sets no ``no_auth_user``: a client
    without a user is refused."""
    entries = []
    for user in users:
        allowed = permissions(user)
        publish: dict[str, list[str]] = {"allow": list(allowed.publish)}
        if allowed.publish_deny:
            publish["deny"] = list(allowed.publish_deny)
        entry = {
            "user": user,
            "password": hashes[user],
            "permissions": {"publish": publish, "subscribe": {"allow": list(allowed.subscribe)}},
        }
        entries.append("    " + json.dumps(entry))
    return "authorization {\n  users: [\n" + ",\n".join(entries) + "\n  ]\n}\n"


def write_nats_auth(folder: Path, rotate: Iterable[str] = ()) -> Path:
    """For a nats-server of one's own: ``folder/nats-auth.conf`` (hashes and permissions, to ``include``
    in the server's configuration) and ``folder/<user>.env`` per user, all owner-only. For a cluster,
    ``folder/nats-route-auth.conf`` is the routes' ``authorization`` (to ``include`` in each node's
    ``cluster`` block) and ``folder/route.env`` the password its route URLs carry. Passwords are kept in
    ``folder`` (services/stack/credentials.py) across runs; those of ``rotate`` are replaced."""
    from infra.nats_cluster import RouteAuth, route_authorization
    from infra.process import write_private
    from services.stack.credentials import nats_logins

    logins = nats_logins(folder, (*USERS, ROUTE), rotate=rotate)
    for user in USERS:
        login = logins[user]
        write_private(folder / f"{user}.env", f"I2V_NATS_USER={login.user}\nI2V_NATS_PASSWORD={login.password}\n")
    route = logins[ROUTE]
    write_private(folder / f"{ROUTE}.env", f"NATS_ROUTE_USER={route.user}\nNATS_ROUTE_PASSWORD={route.password}\n")
    write_private(folder / "nats-route-auth.conf", route_authorization(RouteAuth(route.user, "", route.hashed)) + "\n")
    conf = folder / "nats-auth.conf"
    write_private(conf, authorization_block({user: logins[user].hashed for user in USERS}))
    return conf
