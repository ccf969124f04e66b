"""The latent stage's live previews: made on a worker thread, stored, and announced as ``StagePreview``.

The denoising thread only keeps a few pooled frames of the latents when the throttle allows
(:class:`pipeline.previews.PreviewTap`); projecting them, encoding the WebP, storing it and publishing
the event happen on one worker thread, off the denoising loop. A preview that comes while the worker
is still busy with the one before is dropped, except the last step's, so a slow store never slows the
denoising. A preview that cannot be stored or announced is logged and forgotten: the job goes on.
"""

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from contracts.keys import PREVIEW_CONTENT_TYPE, preview_key
from contracts.messages import JobSpec, StagePreview
from contracts.stages import Stage
from infra.objectstore import ObjectStore
from services.bus.ports import Publisher
from services.bus.runner import call_in_loop

if TYPE_CHECKING:  # torch is imported when a denoising starts, not when the service's app is built
    import torch

    from pipeline.previews import PreviewTap

log = logging.getLogger("i2v.latent.previews")

Announce = Callable[[StagePreview], None]
"""Publishes a preview's event from a worker thread; returns once the bus has it."""

_PUBLISH_TIMEOUT_S = 30.0


def announce_from_threads(publisher: Publisher) -> Announce:
    """An :data:`Announce` that publishes on the running event loop (call it from the loop's thread, in
    the job's handler: its context, and so the job's trace, goes with every preview event)."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()

    def announce(event: StagePreview) -> None:
        call_in_loop(loop, context, publisher.publish(event)).result(timeout=_PUBLISH_TIMEOUT_S)

    return announce


class PreviewPublisher:
    """Previews of one attempt of one job: numbered from 0, stored under :func:`preview_key`."""

    def __init__(
        self,
        store: ObjectStore,
        job: JobSpec,
        attempt: int,
        announce: Announce,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from pipeline.previews import PreviewTap, Throttle

        self._store = store
        self._job = job
        self._attempt = attempt
        self._announce = announce
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="i2v-preview")
        self._pending: list[concurrent.futures.Future[None]] = []
        self._index = 0
        self.tap = PreviewTap(Throttle(interval_s, clock).due, self._take)

    def _take(self, step: int, total: int, latents: "torch.Tensor") -> None:
        self._pending = [f for f in self._pending if not f.done()]
        if self._pending and step < total:
            return  # the worker is behind: skip this one rather than queue it
        index, self._index = self._index, self._index + 1
        self._pending.append(self._worker.submit(self._publish, index, step, total, latents))

    def _publish(self, index: int, step: int, total: int, latents: "torch.Tensor") -> None:
        from pipeline.previews import encode_preview, project_to_rgb

        job = self._job
        try:
            data = encode_preview(project_to_rgb(latents))
            ref = self._store.put(preview_key(job.job_id, job.generation, index), data, PREVIEW_CONTENT_TYPE)
            self._announce(
                StagePreview(
                    job_id=job.job_id,
                    stage=Stage.LATENT,
                    generation=job.generation,
                    attempt=self._attempt,
                    index=index,
                    step=step,
                    total=total,
                    preview=ref,
                )
            )
        except Exception:
            log.warning(
                "job %s: preview %d (step %d/%d) was not published", job.job_id, index, step, total, exc_info=True
            )

    def close(self) -> None:
        """Wait for the previews in hand (the last step's among them), then stop the worker."""
        self._worker.shutdown(wait=True)


@contextlib.contextmanager
def preview_tap(
    store: ObjectStore, job: JobSpec, attempt: int, announce: Announce | None, interval_s: float | None
) -> "Iterator[PreviewTap | None]":
    """The tap to hand the denoising, or None when previews are off (no ``announce`` or no interval);
    on the way out, the previews in hand are finished first."""
    if announce is None or interval_s is None:
        yield None
        return
    previews = PreviewPublisher(store, job, attempt, announce, interval_s)
    try:
        yield previews.tap
    finally:
        previews.close()
