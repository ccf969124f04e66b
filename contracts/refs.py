"""References to large data kept in the object store; messages carry these, never the bytes."""

import re

from pydantic import BaseModel, ConfigDict, Field

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ObjectRef(BaseModel):
    """Where an object lives and what it must hash to; readers verify size and sha256."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(min_length=1, max_length=1024)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=_SHA256.pattern)
    content_type: str = Field(min_length=1)


def artifact_key(job_id: str, name: str) -> str:
    """Deterministic key of a job artifact: a rerun of a stage writes the same key."""
    return f"jobs/{job_id}/{name}"
