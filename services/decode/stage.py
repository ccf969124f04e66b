"""The decode stage: latents in, exactly duration x fps frames out. No NATS here."""

import logging

from contracts.failures import FailureCode
from contracts.keys import artifact_key
from contracts.messages import FramesReady, LatentsReady
from infra.objectstore import ObjectStore
from services.bus import failpoints
from services.bus.faults import PermanentError
from services.bus.ports import Progress

log = logging.getLogger("i2v.decode")

FRAMES_CONTENT_TYPE = "application/x-safetensors"


class DecodeStage:
    def __init__(self, store: ObjectStore, device: str | None, chunk_size: int) -> None:
        self._store = store
        self._device = device
        self._chunk_size = chunk_size

    def _vae(self, model: str):  # type: ignore[no-untyped-def]
        from pipeline.models import ModelNotFoundError, load_vae, pick_device

        device, dtype = pick_device(self._device)
        try:
            return load_vae(model, device, dtype)
        except ModelNotFoundError as exc:
            raise PermanentError(FailureCode.MODEL_NOT_FOUND, str(exc)) from exc

    def warm_up(self, model: str) -> None:
        import pipeline.interpolate  # noqa: F401  (OpenCV's import is slow; pay it before the first job)

        self._vae(model)

    def run(self, cmd: LatentsReady, progress: Progress) -> FramesReady:
        from pipeline.decode import decode_latents, frames_to_uint8
        from pipeline.interpolate import interpolate_to_count
        from pipeline.tensors import frames_to_bytes, latents_from_bytes

        job = cmd.job
        failpoints.fault("decode", job.job_id)
        count = job.params.frame_count
        key = artifact_key(job.job_id, job.generation, "frames.safetensors")
        existing = self._store.head(key)
        if existing is None:
            # 1. Latents, verified against their reference.
            latents, _meta = latents_from_bytes(self._store.get(cmd.latents))
            vae = self._vae(job.params.model)
            progress(0, 2)
            # 2. VAE temporal decode, a chunk of frames at a time to bound memory.
            frames = frames_to_uint8(
                decode_latents(vae, latents, num_frames=cmd.native_frames, chunk_size=self._chunk_size)
            )
            progress(1, 2)
            # 3. Interpolate to exactly the frame count the user asked for.
            video = interpolate_to_count(frames, count)  # exactly ``count`` frames, or it raises
            existing = self._store.put(key, frames_to_bytes(video), FRAMES_CONTENT_TYPE)
        else:
            log.info("job %s: frames already stored, reusing %s", job.job_id, key)
        progress(2, 2)
        return FramesReady(
            job=job,
            frames=existing,
            frame_count=count,
            native_frames=cmd.native_frames,
            width=cmd.width,
            height=cmd.height,
            price=cmd.price,
            seal=cmd.seal,
        )
