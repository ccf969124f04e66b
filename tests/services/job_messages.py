"""Contract messages for a job, built as the stages would build them, for tests that skip those stages."""

from contracts.keys import artifact_key
from contracts.messages import JobCompleted, JobSpec
from contracts.refs import ObjectRef


def completed(
    job: JobSpec,
    price: int,
    *,
    width: int = 128,
    height: int = 64,
    video: ObjectRef | None = None,
    poster: ObjectRef | None = None,
) -> JobCompleted:
    """The job's JobCompleted at ``price``: a video as long and as fast as its params ask; ``video`` and
    ``poster`` default to one stand-in ref for both files."""
    ref = ObjectRef(
        bucket="i2v", key=artifact_key(job.job_id, 0, "video.mp4"), size=1, sha256="0" * 64, content_type="video/mp4"
    )
    return JobCompleted(
        job=job,
        video=ref if video is None else video,
        poster=ref if poster is None else poster,
        frame_count=job.params.frame_count,
        fps=job.params.fps,
        duration_s=job.params.duration,
        width=width,
        height=height,
        price=price,
    )
