"""What a stage and the runner see of the bus: progress, publishing, cancellation, the delivery in hand.

Nothing here imports NATS or FastStream: stages depend on these ports only, and the runner's decisions
are tested against recording fakes in milliseconds. The NATS adapters are in :mod:`services.bus.adapters`.
"""

from collections.abc import Callable
from typing import Protocol

from contracts.messages import Command, DeadLetter, StageEvent, Terminal

Outgoing = Command | Terminal | StageEvent | DeadLetter
"""Everything a service publishes."""

Progress = Callable[[int, int], None]
"""Called from the worker thread as ``progress(step, total)``; thread-safe."""

IsCancelled = Callable[[str, int], bool]
"""``is_cancelled(job_id, generation)``: a quick, non-blocking check a stage may call between steps."""


class Publisher(Protocol):
    """Publishes a contract where it belongs, deduplicated by its id; returns once the stream has it."""

    async def publish(self, message: Outgoing) -> None: ...


class CancelCheck(Protocol):
    """Answers whether a job generation was cancelled, authoritatively (may ask the server)."""

    async def check(self, job_id: str, generation: int) -> bool: ...


class Delivery(Protocol):
    """One delivery of a message to a consumer, and the four ways to settle or extend it."""

    @property
    def subject(self) -> str: ...

    @property
    def body(self) -> bytes: ...

    @property
    def attempt(self) -> int:
        """How many times this message has been delivered, this delivery included (1 on the first)."""
        ...

    async def ack(self) -> None:
        """Done: never deliver it again."""

    async def nack(self, delay: float) -> None:
        """Not done: deliver it again after ``delay`` seconds."""

    async def reject(self) -> None:
        """Give up: never deliver it again (it was failed or dead-lettered)."""

    async def in_progress(self) -> None:
        """Still working: restart the redelivery deadline."""
