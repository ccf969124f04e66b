"""The mux stage: frames in, the video (the job's format and quality) and poster out, checked by decoding
the result. An extension's video is its parent's frames, then the new ones after the shared frame
(contracts/extension.py). No NATS here."""

import json
from typing import TYPE_CHECKING

from contracts.failures import FailureCode
from contracts.keys import artifact_key
from contracts.messages import FramesReady, JobCompleted
from infra.objectstore import ObjectStore
from services.bus.faults import PermanentError
from services.bus.ports import Progress

if TYPE_CHECKING:
    import numpy as np


def video_metadata(cmd: FramesReady) -> dict[str, str]:
    """What the file records about its making: the job, the parameters (seed included) and the camera."""
    job = cmd.job
    return {
        "job_id": job.job_id,
        "seed": str(job.params.seed),
        "params": json.dumps(job.params.model_dump(mode="json"), sort_keys=True, separators=(",", ":")),
        "camera": " ".join(cmd.camera_words),
        "software": "i2v",
    } | ({"extends": job.extends.job_id} if job.extends is not None else {})


class MuxStage:
    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def run(self, cmd: FramesReady, progress: Progress) -> JobCompleted:
        from pipeline.tensors import frames_from_bytes, frames_to_bytes
        from pipeline.video import (
            FormatUnavailable,
            content_type_of_format,
            encode_video,
            extension_of_format,
            make_poster,
            probe_video,
            video_mismatch,
        )

        job = cmd.job
        params = job.params
        fps = params.fps
        frames = frames_from_bytes(self._store.get(cmd.frames))
        if frames.shape[0] != cmd.frame_count:
            raise PermanentError(
                FailureCode.FRAME_COUNT,
                f"frames object holds {frames.shape[0]} frames; the command says {cmd.frame_count}",
            )
        frames_ref = cmd.frames
        if job.extends is not None:
            frames = self._after_parent(cmd, frames)
            # The whole video's frames, lossless, for the next extension of this one (a chain never re-encodes).
            key = artifact_key(job.job_id, job.generation, "video_frames.safetensors")
            frames_ref = self._store.put(key, frames_to_bytes(frames), cmd.frames.content_type)
        count = job.video_frame_count  # an extension: the parent's frames and the new ones, the shared one once
        try:
            video = encode_video(
                frames, fps, format=params.format, quality=params.quality, metadata=video_metadata(cmd)
            )
        except FormatUnavailable as exc:
            raise PermanentError(FailureCode.FORMAT_UNAVAILABLE, str(exc)) from exc
        info = probe_video(video)
        # Deliver exactly what was asked: a video that decodes to another count or rate is a bug, not a result.
        mismatch = video_mismatch(info, frame_count=count, fps=fps)
        if mismatch is not None:
            raise PermanentError(FailureCode.MUX_MISMATCH, f"{params.format}: {mismatch}")
        progress(1, 2)
        content_type = content_type_of_format(params.format)
        name = "video" + extension_of_format(params.format)
        video_ref = self._store.put(artifact_key(job.job_id, job.generation, name), video, content_type)
        poster_ref = self._store.put(
            artifact_key(job.job_id, job.generation, "poster.jpg"), make_poster(frames[0]), "image/jpeg"
        )
        progress(2, 2)
        return JobCompleted(
            job=job,
            video=video_ref,
            poster=poster_ref,
            frame_count=info.frame_count,
            fps=fps,
            duration_s=round(info.frame_count / fps, 6),
            width=info.width,
            height=info.height,
            price=cmd.price,
            camera_words=cmd.camera_words,
            camera_unknown=cmd.camera_unknown,
            format=params.format,
            content_type=content_type,
            frames=frames_ref,
        )

    def _after_parent(self, cmd: FramesReady, frames: "np.ndarray") -> "np.ndarray":
        """The parent's frames, then the new segment's after its first (which stands on the parent's last)."""
        import numpy as np

        from pipeline.tensors import frames_from_bytes

        parent = cmd.job.extends
        assert parent is not None
        before = frames_from_bytes(self._store.get(parent.frames))
        if before.shape[0] != parent.frame_count or before.shape[1:] != frames.shape[1:]:
            raise PermanentError(
                FailureCode.FRAME_COUNT,
                f"job {parent.job_id}'s frames are {tuple(before.shape)}; the extension's are"
                f" {tuple(frames.shape[1:])} after {parent.frame_count} frames",
            )
        return np.concatenate([before, frames[1:]])
