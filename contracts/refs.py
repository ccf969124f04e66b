"""References to large data kept in the object store; messages carry these, never the bytes."""

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ObjectRef(BaseModel):
    """Where an object lives and what it must hash to; readers verify size and sha256."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(min_length=1, max_length=1024)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=_SHA256.pattern)
    content_type: str = Field(min_length=1)

    @field_validator("key")
    @classmethod
    def _relative_and_plain(cls, key: str) -> str:
        # A key that climbs out of its prefix or hides in odd characters is a forged or broken message,
        # not an object to fetch: refuse it as a schema error so it is never retried.
        if key.startswith("/") or "\\" in key or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError("object key must be a relative path with no empty, '.' or '..' segments")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
            raise ValueError("object key must not contain control characters")
        return key
