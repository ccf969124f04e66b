"""Billing decisions: reserve before GPU work, capture on success, refund on failure or cancel."""

import logging

from contracts.failures import FailureCode
from contracts.messages import (
    FramesReady,
    ImagePrepared,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobRejected,
    LatentsReady,
    PointsReserved,
)
from contracts.params import check_video_size
from contracts.pricing import price_points
from contracts.stages import Stage
from infra.objectstore import ObjectStore
from services.billing.ledger import Ledger, UnknownAccountError
from services.bus import failpoints
from services.bus.faults import PermanentError

log = logging.getLogger("i2v.billing")


ResumeCommand = PointsReserved | LatentsReady | FramesReady
_RESUMABLE: dict[Stage, type[ResumeCommand]] = {
    Stage.LATENT: PointsReserved,
    Stage.DECODE: LatentsReady,
    Stage.MUX: FramesReady,
}


class BillingStage:
    def __init__(self, ledger: Ledger, store: ObjectStore) -> None:
        self._ledger = ledger
        self._store = store

    def reserve(self, cmd: ImagePrepared) -> ResumeCommand | JobRejected | None:
        """Reserve the job's price; idempotent per (job, generation), so a redelivery never charges twice.

        None: the generation already ended and was settled (captured or refunded); its terminal event
        is on the bus, so nothing is forwarded. Only a replay, a new generation, runs the job again.
        """
        job = cmd.job
        try:
            # The size ingest prepared, not only the one asked for: the model's size fitted to the picture.
            check_video_size(cmd.width, cmd.height, job.params.frame_count)
        except ValueError as exc:
            return JobRejected(job=job, code=FailureCode.VIDEO_TOO_LARGE, reason=str(exc), price=0, balance=0)
        price = price_points(job.params, cmd.width, cmd.height)
        try:
            result = self._ledger.reserve(job.job_id, job.generation, job.account, price)
        except UnknownAccountError:
            return JobRejected(
                job=job,
                code=FailureCode.UNKNOWN_ACCOUNT,
                reason=f"account {job.account!r} does not exist",
                price=price,
                balance=0,
            )
        failpoints.hit("billing.after_reserve")  # crash tests: debited, nothing published yet
        if result.settled:
            # Settling follows the terminal event, so that event exists: republishing anything would
            # run a refunded generation for free or end it twice.
            log.info("job %s g%d already ended (%s); not forwarded", job.job_id, job.generation, result.state)
            return None
        if not result.ok:
            return JobRejected(
                job=job,
                code=FailureCode.INSUFFICIENT_POINTS,
                reason=(
                    f"this job costs {price} points but account {job.account!r} has {result.balance}; "
                    f"top up with `i2v accounts credit {job.account} N`"
                ),
                price=price,
                balance=result.balance,
            )
        if cmd.resume is not None:
            return self._resumed(cmd, result.price)
        # On a redelivery the ledger answers with what the first call reserved.
        return PointsReserved(job=job, image=cmd.image, width=cmd.width, height=cmd.height, price=result.price)

    def _resumed(self, cmd: ImagePrepared, price: int) -> ResumeCommand:
        """A replay from a later stage: the stored command of that stage, under the new generation."""
        assert cmd.resume is not None
        kind = _RESUMABLE.get(cmd.resume)
        if kind is None or cmd.resume_command is None:
            raise PermanentError(FailureCode.BAD_REPLAY, f"cannot resume at stage {cmd.resume}")
        stored = kind.model_validate_json(self._store.get(cmd.resume_command))
        return stored.model_copy(update={"job": cmd.job, "price": price})

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
