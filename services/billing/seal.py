"""Billing's seal on a reservation: the proof, carried by the reserved command, that billing holds the price.

The ledger is the single source of truth, but latent, decode and mux cannot read it. So when billing
reserves it signs the job and the price with HMAC-SHA256 under a secret only billing and those stages
hold, and puts the signature in ``PointsReserved.seal``; latent copies it into ``LatentsReady`` and decode
into ``FramesReady``. Each of the three checks it before any work and fails the job (``not_reserved``,
permanent) when it is missing or does not match, so a command forged on the bus, or changed after billing
(another account, a bigger job, a lower price), never gets GPU time. The seal covers the job id, its
generation, the account, every parameter, the price and the frames an extension continues; the artifacts
are covered by their sha256 refs.

The secret is ``I2V_BILLING_SECRET`` or, for the embedded stack whose services share one state folder, one
generated once into ``<state>/billing.secret`` (mode 0600). Hosts that do not share the folder must be
given the same ``I2V_BILLING_SECRET``: with different secrets every job fails ``not_reserved``, loudly.
"""

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import TypeVar

from contracts.failures import FailureCode
from contracts.messages import FramesReady, JobSpec, LatentsReady, PointsReserved
from services.bus.faults import PermanentError
from services.config import Settings

SECRET_FILE = "billing.secret"
_DOMAIN = "i2v.reservation.v1"  # a MAC for this purpose is never valid for another

Sealed = TypeVar("Sealed", PointsReserved, LatentsReady, FramesReady)


class ReservationSeal:
    """Signs what billing reserved and checks a command carries that signature."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the billing secret must be at least 16 bytes")
        self._secret = secret

    def sign(self, job: JobSpec, price: int) -> str:
        """The seal of ``price`` points reserved for ``job`` (its generation, account and parameters)."""
        return hmac.new(self._secret, _signed_bytes(job, price), hashlib.sha256).hexdigest()

    def checked(self, cmd: Sealed) -> Sealed:
        """``cmd`` itself when billing sealed its job and price; else a permanent ``not_reserved`` failure."""
        job = cmd.job
        if not cmd.seal:
            raise PermanentError(
                FailureCode.NOT_RESERVED,
                f"job {job.job_id} g{job.generation} came without billing's seal: no reservation backs it",
            )
        if not hmac.compare_digest(cmd.seal, self.sign(job, cmd.price)):
            raise PermanentError(
                FailureCode.NOT_RESERVED,
                f"job {job.job_id} g{job.generation}: billing's seal does not match the job and its price of"
                f" {cmd.price} points (changed after billing, or I2V_BILLING_SECRET differs between hosts)",
            )
        return cmd


def _signed_bytes(job: JobSpec, price: int) -> bytes:
    what = {
        "domain": _DOMAIN,
        "job_id": job.job_id,
        "generation": job.generation,
        "account": job.account,
        "params": job.params.model_dump(mode="json"),
        "price": price,
    }
    if job.extends is not None:
        # Which frames an extension continues: a command pointed at other frames after billing is refused.
        what["extends"] = job.extends.model_dump(mode="json")
    return json.dumps(what, sort_keys=True, separators=(",", ":")).encode()


def seal_from(settings: Settings) -> ReservationSeal:
    """The seal under the configured secret, else under the one generated into the state folder."""
    if settings.billing_secret:
        return ReservationSeal(settings.billing_secret.encode())
    return ReservationSeal(load_or_create_secret(settings.state_dir / SECRET_FILE))


def load_or_create_secret(path: Path) -> bytes:
    """The secret in ``path``, created (0600) on first use. Services starting at once agree on one: each
    writes a complete private file and links it into place, and only the first link succeeds."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_hex(32).encode())
        # Fails if another process got there first: then theirs is the secret.
        with contextlib.suppress(FileExistsError):
            os.link(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path.read_bytes().strip()
