"""Where a job's objects live in the bucket: the one place that knows the key layout.

```
jobs/<job>/upload                       the raw upload, as the client sent it
jobs/<job>/g<generation>/image.png      the prepared image (ingest)
jobs/<job>/g<generation>/latents.safetensors, frames.safetensors, video.mp4, poster.jpg
jobs/<job>/g<generation>/previews/<n>.webp   the latent stage's live previews, numbered from 0
jobs/<job>/g<generation>/video_frames.safetensors   an extension's whole video, lossless (mux)
jobs/<job>/commands/<stage>.json        the last command each stage received (for replay)
```
Keys are deterministic, so a rerun of a stage writes the same key; a replay is a new generation and
writes new keys, so nothing stale is reused.
"""

from contracts.stages import Stage

JOBS_PREFIX = "jobs/"
"""Every job's objects live under this prefix."""


def job_prefix(job_id: str) -> str:
    """Everything a job stored lives under this prefix (deleting a job deletes it)."""
    return f"{JOBS_PREFIX}{job_id}/"


def upload_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}upload"


def artifact_key(job_id: str, generation: int, name: str) -> str:
    """A stage's output for one generation of the job, e.g. ``latents.safetensors``."""
    return f"{job_prefix(job_id)}g{generation}/{name}"


PREVIEW_CONTENT_TYPE = "image/webp"
"""Live previews are animated WebPs (:mod:`pipeline.previews`)."""


def preview_key(job_id: str, generation: int, index: int) -> str:
    """The ``index``-th live preview of a generation (a retried attempt writes its previews again)."""
    if index < 0:
        raise ValueError(f"a preview index is >= 0, got {index}")
    return artifact_key(job_id, generation, f"previews/{index}.webp")


def command_key(job_id: str, stage: Stage) -> str:
    """Where the runner keeps the last command a stage received, so the stage can be replayed."""
    return f"{job_prefix(job_id)}commands/{stage.value}.json"
