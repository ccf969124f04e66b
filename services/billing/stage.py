"""Billing decisions: reserve before GPU work, capture on success, refund on failure or cancel."""

import logging

from contracts.failures import FailureCode
from contracts.keys import artifact_key
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
from services.billing.seal import ReservationSeal
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
    def __init__(self, ledger: Ledger, store: ObjectStore, seal: ReservationSeal) -> None:
        self._ledger = ledger
        self._store = store
        self._seal = seal

    def reserve(self, cmd: ImagePrepared) -> ResumeCommand | JobRejected | None:
        """Reserve the job's price; idempotent per (job, generation), so a redelivery never charges twice.

        None: the generation already ended and was settled (captured or refunded); its terminal event
        is on the bus, so nothing is forwarded. Only a replay, a new generation, runs the job again.
        """
        job = cmd.job
        try:
            # The size ingest prepared, not only the one asked for: the model's size fitted to the picture.
            # An extension's video holds its parent's frames too; its price is the new segment's alone.
            check_video_size(cmd.width, cmd.height, job.video_frame_count)
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
        # On a redelivery the ledger answers with what the first call reserved; the seal says so downstream.
        seal = self._seal.sign(job, result.price)
        if cmd.resume is not None:
            return self._resumed(cmd, result.price, seal)
        return PointsReserved(
            job=job, image=cmd.image, width=cmd.width, height=cmd.height, price=result.price, seal=seal
        )

    def _resumed(self, cmd: ImagePrepared, price: int, seal: str) -> ResumeCommand:
        """A replay from a later stage: the stored command of that stage, under the new generation."""
        assert cmd.resume is not None
        kind = _RESUMABLE.get(cmd.resume)
        if kind is None or cmd.resume_command is None:
            raise PermanentError(FailureCode.BAD_REPLAY, f"cannot resume at stage {cmd.resume}")
        stored = kind.model_validate_json(self._store.get(cmd.resume_command))
        return stored.model_copy(update={"job": cmd.job, "price": price, "seal": seal})

    def settle(self, event: JobCompleted | JobFailed | JobCancelled | JobRejected) -> JobFailed | None:
        """Capture the reservation of a completed job, refund one that failed or was cancelled.

        A completion with no reservation to capture (none made, or already refunded) never stays a free
        video: it is voided, and the JobFailed returned is for the caller to publish after the completion.
        """
        job = event.job
        if isinstance(event, JobCompleted):
            if not self._ledger.capture(job.job_id, job.generation):
                return self._void(event)
        elif isinstance(event, JobFailed | JobCancelled):
            refunded = self._ledger.refund(job.job_id, job.generation)
            if refunded:
                log.info("refunded %d points for job %s g%d", refunded, job.job_id, job.generation)
        return None

    def _void(self, event: JobCompleted) -> JobFailed:
        """Record the unpaid completion, withdraw its video and poster, and say why the job failed."""
        job = event.job
        held = self._ledger.reservation(job.job_id, job.generation)
        why = "no reservation was made" if held is None else f"its reservation was {held.state}"
        reason = f"completed without a reservation ({why}); the video was withdrawn and nothing was charged"
        self._ledger.record_unreserved_completion(job.job_id, job.generation, job.account, why)
        # Only this generation's own files: a forged event may name another job's objects.
        generation_prefix = artifact_key(job.job_id, job.generation, "")
        own = ("video.mp4", "video.webm", "video.gif", "video.webp", "poster.jpg")  # every format mux may write
        names = {artifact_key(job.job_id, job.generation, name) for name in own}
        names |= {ref.key for ref in (event.video, event.poster) if ref.key.startswith(generation_prefix)}
        for key in sorted(names):
            self._store.delete_prefix(key)
        log.error("job %s g%d (account %r): %s", job.job_id, job.generation, job.account, reason)
        return JobFailed(job=job, stage=Stage.BILLING, code=FailureCode.NOT_RESERVED, reason=reason)
