"""What an SSE client sees of a job's events: public fields, and the API's own URLs for the results.

Events on the bus carry object references (bucket, key, sha256) and the whole job spec, account
included; those stay inside. Every event the gateway sends over SSE is projected here first: its type,
its job and generation (so a client can tell a replay's events from the ones before), and only the
fields :data:`SHOWN` lists for its type. A live preview shows the URL the page loads it from, not its object.
"""

from pydantic import BaseModel

from contracts import messages
from services.gateway.progress import JobOutput, generation_of, job_id_of
from services.gateway.schemas import JobLinks

SHOWN: dict[type[BaseModel], tuple[str, ...]] = {
    messages.StageStarted: ("stage", "attempt"),
    messages.StageProgress: ("stage", "step", "total"),
    messages.StagePreview: ("stage", "index", "step", "total"),
    messages.StageFinished: ("stage", "seconds"),
    messages.CancelRequested: ("requested_at",),
    messages.ReplayRequested: ("stage",),
    messages.JobCompleted: ("price",),
    messages.JobFailed: ("stage", "code", "reason"),
    messages.JobRejected: ("code", "reason", "price"),
    messages.JobCancelled: ("stage",),
}
"""The fields each event type shows besides its type, job and generation, in this order; an allowlist."""


def preview_url(job_id: str, generation: int, index: int) -> str:
    """Where a client loads a generation's ``index``-th live preview (``GET /v1/jobs/{id}/previews/{n}``)."""
    return f"/v1/jobs/{job_id}/previews/{index}?generation={generation}"


_PUBLIC_NAME = {"reason": "message"}  # the word the API's own errors use


def public_event(event: messages.Event) -> dict[str, object]:
    """The client's view of one event of its job, ready for JSON; a completed job adds its output and URLs."""
    job_id = job_id_of(event)
    names = SHOWN[type(event)]
    values = event.model_dump(mode="json", include=set(names))
    shown: dict[str, object] = {"job_id": job_id, "generation": generation_of(event), "type": event.type}
    shown |= {_PUBLIC_NAME.get(name, name): values[name] for name in names}
    if isinstance(event, messages.StagePreview):
        shown["url"] = preview_url(job_id, event.generation, event.index)
    if isinstance(event, messages.JobCompleted):
        links = JobLinks.of(job_id)
        shown |= {"output": JobOutput.of(event).model_dump(mode="json"), "video": links.video, "poster": links.poster}
    return shown
