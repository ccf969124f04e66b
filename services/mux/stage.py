"""The mux stage: frames in, MP4 and poster out, checked by decoding the result. No NATS here."""

from contracts.failures import FailureCode
from contracts.keys import artifact_key
from contracts.messages import FramesReady, JobCompleted
from infra.objectstore import ObjectStore
from services.bus.faults import PermanentError
from services.bus.ports import Progress


class MuxStage:
    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def run(self, cmd: FramesReady, progress: Progress) -> JobCompleted:
        from pipeline.tensors import frames_from_bytes
        from pipeline.video import encode_mp4, make_poster, probe_video

        job = cmd.job
        fps = job.params.fps
        frames = frames_from_bytes(self._store.get(cmd.frames))
        if frames.shape[0] != cmd.frame_count:
            raise PermanentError(
                FailureCode.FRAME_COUNT,
                f"frames object holds {frames.shape[0]} frames; the command says {cmd.frame_count}",
            )
        video = encode_mp4(frames, fps)
        info = probe_video(video)
        # Deliver exactly what was asked: a video that decodes to another count or rate is a bug, not a result.
        if info.frame_count != cmd.frame_count or info.fps != fps:
            raise PermanentError(
                FailureCode.MUX_MISMATCH,
                f"encoded {info.frame_count} frames at {info.fps} fps; asked {cmd.frame_count} at {fps}",
            )
        progress(1, 2)
        video_ref = self._store.put(artifact_key(job.job_id, job.generation, "video.mp4"), video, "video/mp4")
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
        )
