"""The latent stage: prepared image in, denoised latents out. No NATS here.

While one command denoises, the next one's inputs are made ready (:meth:`LatentStage.prefetch`): the
prepared image read from the store and verified, decoded, and, on CUDA, its CLIP and VAE encoding, so the
GPU goes from one job's last step to the next one's first without waiting on the store or the encoders.
"""

import concurrent.futures
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contracts.failures import FailureCode
from contracts.keys import artifact_key
from contracts.messages import LatentsReady, PointsReserved
from contracts.refs import ObjectRef
from infra.objectstore import ObjectStore
from services.bus import failpoints
from services.bus.faults import PermanentError
from services.bus.ports import IsCancelled, Progress
from services.latent.previews import Announce, preview_tap

if TYPE_CHECKING:  # torch is imported when the model is loaded, not when the service's app is built
    from PIL.Image import Image

    from pipeline.accel import FastOptions
    from pipeline.latents import Conditioning

log = logging.getLogger("i2v.latent")

LATENTS_CONTENT_TYPE = "application/x-safetensors"
_PREFETCHED = 2
"""Commands whose inputs are kept ready at most: the one a prefetching runner holds, and one spare."""


@dataclass(frozen=True)
class _Inputs:
    """A command's inputs, ready for the denoising: the image, and its encoding when made ahead."""

    image: "Image"
    conditioning: "Conditioning | None"


class LatentStage:
    def __init__(
        self,
        store: ObjectStore,
        device: str | None,
        is_cancelled: IsCancelled,
        *,
        preview_interval_s: float | None = None,
        fast: "FastOptions | None" = None,
        gpu_memory_gb: float | None = None,
        encode_ahead: bool | None = None,
    ) -> None:
        """``preview_interval_s``: least time between two live previews of a denoising; None makes none.
        ``fast``: the opt-in speed options (pipeline/accel.py), applied to the UNet when it is loaded.
        ``gpu_memory_gb``: memory this service may use; a size whose estimate exceeds it is refused (default:
        the GPU's own; on the CPU nothing is checked unless it is given). ``encode_ahead``: whether
        :meth:`prefetch` also runs the CLIP and VAE encoders (default: on CUDA only, where they queue
        behind the UNet on the GPU; on the CPU a second thread of torch work competes for the same cores)."""
        self._store = store
        self._device = device
        self._is_cancelled = is_cancelled
        self._preview_interval_s = preview_interval_s
        self._fast = fast
        self._gpu_memory_gb = gpu_memory_gb
        self._encode_ahead = encode_ahead
        self._accelerated: set[int] = set()
        self._lock = threading.Lock()
        self._prefetched: OrderedDict[tuple[str, int], concurrent.futures.Future[_Inputs | None]] = OrderedDict()
        self._prefetcher = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="i2v-prefetch")

    def warm_up(self, model: str) -> None:
        """Load the model before consuming, so the first job does not pay for it; with ``compile`` on, run a
        two-step denoising at the model's default size so the compilation happens here, not in a job."""
        from pipeline.model_catalog import is_still, model_defaults

        if is_still(model):
            return
        pipe = self._pipeline(model)
        if self._fast is not None and self._fast.compile:
            from PIL import Image

            from contracts.params import GenerationParams
            from pipeline.latents import generate_latents_for

            defaults = model_defaults(model)
            size = (defaults.width, defaults.height)
            params = GenerationParams(model=model, steps=2, seed=0)
            image = Image.new("RGB", size, (127, 127, 127))
            generate_latents_for(
                pipe, image, params, width=size[0], height=size[1], num_frames=defaults.native_frames, fast=self._fast
            )

    def _pipeline(self, model: str):  # type: ignore[no-untyped-def]
        from pipeline.accel import DEFAULT, apply_to_unet, check_device
        from pipeline.models import ModelNotFoundError, load_pipeline, pick_device

        fast = self._fast or DEFAULT
        device, dtype = pick_device(self._device)
        check_device(fast, device)
        try:
            pipe = load_pipeline(model, device, fast.torch_dtype(dtype))
        except ModelNotFoundError as exc:
            raise PermanentError(FailureCode.MODEL_NOT_FOUND, str(exc)) from exc
        with self._lock:
            if id(pipe) not in self._accelerated:
                apply_to_unet(pipe.unet, fast)
                self._accelerated.add(id(pipe))
        return pipe

    def _check_fits(self, pipe: Any, width: int, height: int, frames: int, guided: bool) -> None:
        from pipeline.memory import MemoryTooSmallError, activation_budget, check_latent_fits

        limit = None if self._gpu_memory_gb is None else int(self._gpu_memory_gb * 2**30)
        try:
            check_latent_fits(pipe, width, height, frames, activation_budget(pipe, limit), guided=guided)
        except MemoryTooSmallError as exc:
            raise PermanentError(FailureCode.OUT_OF_MEMORY, str(exc)) from exc

    def prefetch(self, cmd: PointsReserved, check: Callable[[PointsReserved], PointsReserved] | None = None) -> None:
        """Start making ``cmd``'s inputs ready on a worker thread, to be picked up by :meth:`run`; returns at
        once. ``check`` (billing's seal) runs first there: an unsealed command gets nothing ready. What fails
        here is not reported: :meth:`run` does the same work again and meets it there."""
        key = (cmd.job.job_id, cmd.job.generation)
        with self._lock:
            if key in self._prefetched:
                return
            self._prefetched[key] = self._prefetcher.submit(self._inputs_quietly, cmd, check)
            while len(self._prefetched) > _PREFETCHED:
                # A command that never came to run (cancelled, or taken by another replica): let it go.
                self._prefetched.popitem(last=False)[1].cancel()

    def _inputs_quietly(
        self, cmd: PointsReserved, check: Callable[[PointsReserved], PointsReserved] | None
    ) -> _Inputs | None:
        try:
            return self._inputs(check(cmd) if check is not None else cmd, ahead=True)
        except Exception:
            log.info("job %s: inputs not made ahead; the run will try again", cmd.job.job_id, exc_info=True)
            return None

    def _taken_inputs(self, cmd: PointsReserved) -> _Inputs | None:
        with self._lock:
            future = self._prefetched.pop((cmd.job.job_id, cmd.job.generation), None)
        return None if future is None or future.cancelled() else future.result()

    def _inputs(self, cmd: PointsReserved, *, ahead: bool) -> _Inputs | None:
        """The image (verified against its reference) and, for a diffusion model, its encoding when made
        ahead on CUDA or at run time; None when the latents are already stored."""
        from PIL import Image

        from pipeline.model_catalog import is_still, model_defaults

        job = cmd.job
        params = job.params
        if self._store.head(artifact_key(job.job_id, job.generation, "latents.safetensors")) is not None:
            return None
        image = Image.open(io.BytesIO(self._store.get(cmd.image))).convert("RGB")
        if is_still(params.model):
            return _Inputs(image, None)
        pipe = self._pipeline(params.model)
        if ahead and not self._encodes_ahead(pipe):
            return _Inputs(image, None)
        from pipeline.latents import conditioning_for

        frames = model_defaults(params.model).native_frames
        self._check_fits(pipe, cmd.width, cmd.height, frames, params.cfg_scale > 1.0)
        conditioning = conditioning_for(pipe, image, params, width=cmd.width, height=cmd.height, num_frames=frames)
        return _Inputs(image, conditioning)

    def _encodes_ahead(self, pipe: Any) -> bool:
        if self._encode_ahead is not None:
            return self._encode_ahead
        return bool(pipe.unet.device.type == "cuda")

    def run(
        self, cmd: PointsReserved, progress: Progress, announce: Announce | None = None, attempt: int = 1
    ) -> LatentsReady:
        """``announce`` publishes the live previews of this delivery's ``attempt``; None makes none."""
        import numpy as np

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
        # 2. Inputs, verified against the reference: made ahead while the previous command denoised, or now.
        inputs = self._taken_inputs(cmd) or self._inputs(cmd, ahead=False)
        if inputs is None:  # stored meanwhile (another replica finished it)
            stored = self._store.head(key)
            assert stored is not None
            progress(params.steps, params.steps)
            return ready(stored)
        image = inputs.image
        if is_still(params.model):
            # The still model: no diffusion. Its "latents" are the prepared picture's native frames,
            # which the decode stage reads instead of running the VAE.
            pixels = np.asarray(image, dtype=np.uint8)
            frames = np.repeat(pixels[None], native_frames, axis=0)
            progress(params.steps, params.steps)
            ref = self._store.put(key, frames_to_bytes(frames), LATENTS_CONTENT_TYPE)
            return ready(ref)
        from pipeline.accel import DEFAULT
        from pipeline.latents import conditioning_for, denoise_for

        pipe = self._pipeline(params.model)
        conditioning = inputs.conditioning
        if conditioning is None:
            self._check_fits(pipe, cmd.width, cmd.height, native_frames, params.cfg_scale > 1.0)
            conditioning = conditioning_for(
                pipe, image, params, width=cmd.width, height=cmd.height, num_frames=native_frames
            )

        def on_step(step: int, total: int) -> None:
            if self._is_cancelled(job.job_id, job.generation):
                raise JobCancelledError(job.job_id)
            progress(step, total)
            if step == 2:
                failpoints.hit("latent.mid_denoise")

        # 3. Denoise with the job's seed; the CPU generator makes the noise the same on any device.
        with preview_tap(self._store, job, attempt, announce, self._preview_interval_s) as previews:
            latents = denoise_for(
                pipe, conditioning, params, on_step=on_step, previews=previews, fast=self._fast or DEFAULT
            )
        data = latents_to_bytes(latents, {"job_id": job.job_id, "seed": str(params.seed), "model": params.model})
        ref = self._store.put(key, data, LATENTS_CONTENT_TYPE)
        return ready(ref)
