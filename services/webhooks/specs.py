"""A job's spec for the events that do not carry it (a stage's start, a preview): read from the command the
stage kept for replay, which the runner stores before it publishes the stage's first event."""

from collections import OrderedDict
from typing import Annotated

from pydantic import Field, TypeAdapter

from contracts.keys import command_key
from contracts.messages import Command, JobSpec
from contracts.stages import Stage
from infra.objectstore import ObjectStore

_COMMAND: TypeAdapter[Command] = TypeAdapter(Annotated[Command, Field(discriminator="type")])


class StoredSpecs:
    """Job specs read from the object store, the latest ``size`` kept in memory (a job's stages ask in turn)."""

    def __init__(self, store: ObjectStore, size: int = 4096) -> None:
        self._store = store
        self._size = size
        self._cache: OrderedDict[tuple[str, int], JobSpec | None] = OrderedDict()

    def spec(self, job_id: str, stage: Stage, generation: int) -> JobSpec | None:
        """The job's spec at ``generation``; None when the stage kept no command for it. Blocking."""
        key = (job_id, generation)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        ref = self._store.head(command_key(job_id, stage))
        spec = None if ref is None else _COMMAND.validate_json(self._store.get(ref)).job
        if spec is not None and spec.generation != generation:
            # A replay keeps the job's webhook; the payload names the event's generation.
            spec = spec.model_copy(update={"generation": generation})
        self._cache[key] = spec
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return spec
