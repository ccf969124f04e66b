"""The ingest stage: upload in, prepared image out. No NATS here."""

from collections.abc import Callable

from contracts.failures import FailureCode
from contracts.keys import artifact_key
from contracts.messages import ImagePrepared, JobSubmitted
from infra.objectstore import ObjectStore
from services.bus.faults import PermanentError

ModelSize = Callable[[str], tuple[int, int]]
"""Model name to its native (width, height); raises PermanentError for an unknown model."""


def model_size_from_checkpoint(model: str) -> tuple[int, int]:
    """Native resolution read from the checkpoint's config (no weights loaded)."""
    from pipeline.model_catalog import ModelNotFoundError, model_defaults

    try:
        defaults = model_defaults(model)
    except ModelNotFoundError as exc:
        raise PermanentError(FailureCode.MODEL_NOT_FOUND, str(exc)) from exc
    return defaults.width, defaults.height


class IngestStage:
    def __init__(self, store: ObjectStore, model_size: ModelSize, *, max_bytes: int, max_pixels: int) -> None:
        self._store = store
        self._model_size = model_size
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels

    def model_size(self, model: str) -> tuple[int, int]:
        return self._model_size(model)

    def run(self, cmd: JobSubmitted) -> ImagePrepared:
        """Validate the upload by content and store the image at the model resolution as PNG."""
        from pipeline.image import ImageRejected, prepare_image

        if cmd.job.extends is not None:
            return self._from_parent(cmd)
        params = cmd.job.params
        model_size = self._model_size(params.model)
        requested = (params.resolution.width, params.resolution.height) if params.resolution else None
        if cmd.upload.size > self._max_bytes:
            raise PermanentError(
                FailureCode.TOO_LARGE, f"upload is {cmd.upload.size} bytes; the limit is {self._max_bytes} bytes"
            )
        data = self._store.get(cmd.upload)
        try:
            prepared = prepare_image(
                data,
                model_size=model_size,
                requested=requested,
                max_bytes=self._max_bytes,
                max_pixels=self._max_pixels,
            )
        except ImageRejected as exc:
            raise PermanentError(exc.code, str(exc)) from exc
        ref = self._store.put(artifact_key(cmd.job.job_id, cmd.job.generation, "image.png"), prepared.png, "image/png")
        return ImagePrepared(
            job=cmd.job,
            image=ref,
            width=prepared.width,
            height=prepared.height,
            source_width=prepared.source_width,
            source_height=prepared.source_height,
        )

    def _from_parent(self, cmd: JobSubmitted) -> ImagePrepared:
        """An extension's picture: the last frame of its parent's video, read by reference, stored as it is."""
        from pipeline.image import frame_png
        from pipeline.tensors import frames_from_bytes

        parent = cmd.job.extends
        assert parent is not None
        frames = frames_from_bytes(self._store.get(parent.frames))
        if frames.shape[:3] != (parent.frame_count, parent.height, parent.width):
            raise PermanentError(
                FailureCode.FRAME_COUNT,
                f"job {parent.job_id}'s frames are {tuple(frames.shape[:3])}; the extension expects"
                f" {(parent.frame_count, parent.height, parent.width)} (frames, height, width)",
            )
        key = artifact_key(cmd.job.job_id, cmd.job.generation, "image.png")
        ref = self._store.put(key, frame_png(frames[-1]), "image/png")
        return ImagePrepared(
            job=cmd.job,
            image=ref,
            width=parent.width,
            height=parent.height,
            source_width=parent.width,
            source_height=parent.height,
        )
