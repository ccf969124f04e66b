"""The decode stage: latents in, exactly duration x fps frames out. No NATS here.

Order of work (see :mod:`pipeline.render`): VAE decode of the native frames, then ``stabilize`` of
the generated motion if asked, then the loop / interpolation to duration x fps with the job's
interpolator, then the camera move parsed from the motion prompt. The parsed move's English words and
the words not understood ride on :class:`FramesReady` (and so on ``JobCompleted``).
"""

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from contracts.failures import FailureCode
from contracts.keys import artifact_key
from contracts.messages import FramesReady, LatentsReady
from infra.objectstore import ObjectStore
from services.bus import failpoints
from services.bus.faults import PermanentError
from services.bus.ports import Progress

if TYPE_CHECKING:
    from pipeline.accel import FastOptions
    from pipeline.render import Resample
    from pipeline.rife import RifeModel

log = logging.getLogger("i2v.decode")

FRAMES_CONTENT_TYPE = "application/x-safetensors"


class DecodeStage:
    def __init__(
        self,
        store: ObjectStore,
        device: str | None,
        chunk_size: int,
        *,
        rife_weights: Path | None = None,
        fast: "FastOptions | None" = None,
    ) -> None:
        """``fast``: the opt-in speed options (pipeline/accel.py) applied to the VAE when it is loaded; with
        ``auto_chunk`` the chunk is the largest the GPU's free memory holds, ``chunk_size`` off CUDA."""
        self._store = store
        self._device = device
        self._chunk_size = chunk_size
        self._rife_weights = rife_weights
        self._rife: RifeModel | None = None
        self._fast = fast
        self._accelerated: set[int] = set()

    def _vae(self, model: str):  # type: ignore[no-untyped-def]
        from pipeline.accel import DEFAULT, apply_to_vae, check_device
        from pipeline.models import ModelNotFoundError, load_vae, pick_device

        fast = self._fast or DEFAULT
        device, dtype = pick_device(self._device)
        check_device(fast, device)
        try:
            vae = load_vae(model, device, fast.torch_dtype(dtype))
        except ModelNotFoundError as exc:
            raise PermanentError(FailureCode.MODEL_NOT_FOUND, str(exc)) from exc
        if id(vae) not in self._accelerated:
            apply_to_vae(vae, fast)
            self._accelerated.add(id(vae))
        return vae

    def _resampler(self, interpolator: str) -> "Resample":
        from pipeline.render import resampler

        if interpolator != "rife":
            return resampler(interpolator)
        if self._rife is None:
            from pipeline.models import pick_device
            from pipeline.rife import RifeWeightsError, load_rife

            if self._rife_weights is None:
                raise PermanentError(
                    FailureCode.RIFE_UNAVAILABLE,
                    "interpolator 'rife' is not offered here: the deployment sets no I2V_RIFE_WEIGHTS; use 'dis'",
                )
            device, _dtype = pick_device(self._device)
            try:
                self._rife = load_rife(self._rife_weights, device)
            except RifeWeightsError as exc:
                raise PermanentError(FailureCode.RIFE_UNAVAILABLE, f"interpolator 'rife': {exc}") from exc
        return resampler("rife", self._rife)

    def warm_up(self, model: str) -> None:
        import pipeline.interpolate  # noqa: F401  (OpenCV's import is slow; pay it before the first job)
        from pipeline.model_catalog import is_still

        if not is_still(model):
            vae = self._vae(model)
            if self._fast is not None and self._fast.compile:
                # Compile now, at the default size and chunk, not in the first job.
                import torch

                from pipeline.decode import decode_latents
                from pipeline.model_catalog import model_defaults

                defaults = model_defaults(model)
                frames = min(self._chunk_size, defaults.native_frames)
                latents = torch.zeros(
                    1, frames, vae.config["latent_channels"], defaults.height // 8, defaults.width // 8
                )
                decode_latents(vae, latents, num_frames=frames, chunk_size=frames)

    def native_frames(self, cmd: LatentsReady):  # type: ignore[no-untyped-def]
        """The generated frames as uint8 (n, H, W, 3): the VAE's decode, or the ``still`` model's image."""
        from pipeline.model_catalog import is_still
        from pipeline.tensors import frames_from_bytes

        data = self._store.get(cmd.latents)
        if is_still(cmd.job.params.model):
            # The still model's "latents" are the prepared image's frames themselves: no VAE.
            return frames_from_bytes(data)
        from pipeline.decode import decode_latents, frames_to_uint8
        from pipeline.tensors import latents_from_bytes

        latents, _meta = latents_from_bytes(data)
        vae = self._vae(cmd.job.params.model)
        chunk = self._chunk_size
        if self._fast is not None and self._fast.auto_chunk:
            from pipeline.decode import pick_chunk_size

            chunk = pick_chunk_size(vae, cmd.width, cmd.height, cmd.native_frames, default=chunk)
        return frames_to_uint8(decode_latents(vae, latents, num_frames=cmd.native_frames, chunk_size=chunk))

    def run(self, cmd: LatentsReady, progress: Progress) -> FramesReady:
        from pipeline.camera import parse_motion_prompt
        from pipeline.render import render
        from pipeline.tensors import frames_to_bytes

        job = cmd.job
        params = job.params
        failpoints.fault("decode", job.job_id)
        count = job.segment_frame_count  # an extension's one more: its first frame stands on the parent's last
        camera = parse_motion_prompt(params.motion_prompt)
        key = artifact_key(job.job_id, job.generation, "frames.safetensors")
        existing = self._store.head(key)
        if existing is None:
            # 0. The interpolator first: a job asking for what is not offered fails before any work.
            resample = self._resampler(params.interpolator)
            progress(0, 2)
            # 1. Native frames: latents verified against their reference, decoded a chunk at a time.
            frames = self.native_frames(cmd)
            progress(1, 2)
            # 2. Stabilise, loop/interpolate to exactly ``count`` frames, move the camera (pipeline.render).
            video = render(
                frames,
                count,
                resample=resample,
                loop_mode=params.loop,
                motion_prompt=params.motion_prompt,
                stabilize=params.stabilize,
            ).frames
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
            camera_words=camera.words,
            camera_unknown=camera.unknown,
        )
