"""Billing decisions: reserve before GPU work, capture on success, refund on failure or cancel."""

import logging

from contracts.messages import (
    ImagePrepared,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobRejected,
    PointsReserved,
)
from contracts.pricing import price_points
from services.billing.ledger import Ledger, UnknownAccountError

log = logging.getLogger("i2v.billing")


class BillingStage:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def reserve(self, cmd: ImagePrepared) -> PointsReserved | JobRejected:
        """Reserve the job's price; idempotent per (job, generation), so a redelivery never charges twice."""
        job = cmd.job
        price = price_points(job.params.duration, job.params.fps)
        try:
            result = self._ledger.reserve(job.job_id, job.generation, job.account, price)
        except UnknownAccountError:
            return JobRejected(
                job=job,
                code="unknown_account",
                reason=f"account {job.account!r} does not exist",
                price=price,
                balance=0,
            )
        if not result.ok:
            return JobRejected(
                job=job,
                code="insufficient_points",
                reason=(
                    f"this job costs {price} points but account {job.account!r} has {result.balance}; "
                    f"top up with `i2v accounts credit {job.account} N`"
                ),
                price=price,
                balance=result.balance,
            )
        # On a redelivery the ledger answers with what the first call reserved.
        return PointsReserved(job=job, image=cmd.image, width=cmd.width, height=cmd.height, price=result.price)

    def settle(self, event: JobCompleted | JobFailed | JobCancelled | JobRejected) -> None:
        """Capture the reservation of a completed job, refund one that failed or was cancelled."""
        job = event.job
        if isinstance(event, JobCompleted):
            if not self._ledger.capture(job.job_id, job.generation):
                log.warning("job %s g%d completed without a reservation", job.job_id, job.generation)
        elif isinstance(event, JobFailed | JobCancelled):
            refunded = self._ledger.refund(job.job_id, job.generation)
            if refunded:
                log.info("refunded %d points for job %s g%d", refunded, job.job_id, job.generation)
