"""The latent stage: prepared image in, denoised latents out. No NATS here."""

import io
import logging

from contracts.failures import FailureCode
from contracts.keys import artifact_key
from contracts.messages import LatentsReady, PointsReserved
from contracts.refs import ObjectRef
from infra.objectstore import ObjectStore
from services.bus import failpoints
from services.bus.faults import PermanentError
from services.bus.ports import IsCancelled, Progress
from services.latent.previews import Announce, preview_tap

log = logging.getLogger("i2v.latent")

LATENTS_CONTENT_TYPE = "application/x-safetensors"


class LatentStage:
    def __init__(
        self,
        store: ObjectStore,
        device: str | None,
        is_cancelled: IsCancelled,
        *,
        preview_interval_s: float | None = None,
    ) -> None:
        """``preview_interval_s``: least time between two live previews of a denoising; None makes none."""
        self._store = store
        self._device = device
        self._is_cancelled = is_cancelled
        self._preview_interval_s = preview_interval_s

    def warm_up(self, model: str) -> None:
        """Load the model before consuming, so the first job does not pay for it."""
        from pipeline.model_catalog import is_still

        if not is_still(model):
            self._pipeline(model)

    def _pipeline(self, model: str):  # type: ignore[no-untyped-def]
        from pipeline.models import ModelNotFoundError, load_pipeline, pick_device

        device, dtype = pick_device(self._device)
        try:
            return load_pipeline(model, device, dtype)
        except ModelNotFoundError as exc:
            raise PermanentError(FailureCode.MODEL_NOT_FOUND, str(exc)) from exc

    def run(
        self, cmd: PointsReserved, progress: Progress, announce: Announce | None = None, attempt: int = 1
    ) -> LatentsReady:
        """``announce`` publishes the live previews of this delivery's ``attempt``; None makes none."""
        import numpy as np
        from PIL import Image

        from pipeline.model_catalog import is_still, model_defaults
        from pipeline.tensors import frames_to_bytes, latents_to_bytes
        from services.bus.faults import JobCancelledError

        job = cmd.job
        params = job.params
        native_frames = model_defaults(params.model).native_frames
        key = artifact_key(job.job_id, job.generation, "latents.safetensors")

        def ready(latents: ObjectRef) -> LatentsReady:
            return LatentsReady(
                job=job,
                latents=latents,
                native_frames=native_frames,
                width=cmd.width,
                height=cmd.height,
                price=cmd.price,
                seal=cmd.seal,
            )

        # 1. Reuse: a redelivered command whose latents are already stored skips the denoise.
        existing = self._store.head(key)
        if existing is not None:
            log.info("job %s: latents already stored, reusing %s", job.job_id, key)
            progress(params.steps, params.steps)
            return ready(existing)
        # 2. Inputs, verified against the reference.
        image = Image.open(io.BytesIO(self._store.get(cmd.image))).convert("RGB")
        if is_still(params.model):
            # The still model: no diffusion. Its "latents" are the prepared picture's native frames,
            # which the decode stage reads instead of running the VAE.
            pixels = np.asarray(image, dtype=np.uint8)
            frames = np.repeat(pixels[None], native_frames, axis=0)
            progress(params.steps, params.steps)
            ref = self._store.put(key, frames_to_bytes(frames), LATENTS_CONTENT_TYPE)
            return ready(ref)
        from pipeline.latents import generate_latents_for

        pipe = self._pipeline(params.model)

        def on_step(step: int, total: int) -> None:
            if self._is_cancelled(job.job_id, job.generation):
                raise JobCancelledError(job.job_id)
            progress(step, total)
            if step == 2:
                failpoints.hit("latent.mid_denoise")

        # 3. Denoise with the job's seed; the CPU generator makes the noise the same on any device.
        with preview_tap(self._store, job, attempt, announce, self._preview_interval_s) as previews:
            latents = generate_latents_for(
                pipe,
                image,
                params,
                width=cmd.width,
                height=cmd.height,
                num_frames=native_frames,
                on_step=on_step,
                previews=previews,
            )
        data = latents_to_bytes(latents, {"job_id": job.job_id, "seed": str(params.seed), "model": params.model})
        ref = self._store.put(key, data, LATENTS_CONTENT_TYPE)
        return ready(ref)
