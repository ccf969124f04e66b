"""Recording fakes of the bus ports (:mod:`services.bus.ports`): what was published, what was asked, and
how each delivery was settled. For tests of decisions; delivery itself is tested on a real nats-server."""

from dataclasses import dataclass, field

from services.bus.ports import Outgoing


class RecordingPublisher:
    """Keeps every message it was given, in order; :meth:`refuse` makes chosen publishes fail first."""

    def __init__(self) -> None:
        self.published: list[Outgoing] = []
        self._refusals: list[tuple[type, Exception]] = []

    def refuse(self, kind: type, error: Exception, times: int = 1) -> None:
        """The next ``times`` publishes of a ``kind`` raise ``error`` (and are not recorded)."""
        self._refusals += [(kind, error)] * times

    async def publish(self, message: Outgoing) -> None:
        for index, (kind, error) in enumerate(self._refusals):
            if isinstance(message, kind):
                del self._refusals[index]
                raise error
        self.published.append(message)

    def kinds(self) -> list[str]:
        return [type(m).__name__ for m in self.published]

    def of(self, kind: type) -> list[Outgoing]:
        return [m for m in self.published if isinstance(m, kind)]


@dataclass
class FakeCancelCheck:
    """Job id -> the generation cancelled (and every one before it); ``error`` makes every check raise it."""

    cancelled: dict[str, int] = field(default_factory=dict)
    error: Exception | None = None
    asked: list[tuple[str, int]] = field(default_factory=list)

    async def check(self, job_id: str, generation: int) -> bool:
        self.asked.append((job_id, generation))
        if self.error is not None:
            raise self.error
        return self.cancelled.get(job_id, -1) >= generation


@dataclass
class FakeDelivery:
    """One delivery of a message; records how it was settled (``ack``, ``nack``, ``reject``) and heartbeats."""

    body: bytes
    subject: str = "i2v.work.ingest"
    attempt: int = 1
    settled: list[tuple[str, float | None]] = field(default_factory=list)
    heartbeats: int = 0

    async def ack(self) -> None:
        self.settled.append(("ack", None))

    async def nack(self, delay: float) -> None:
        self.settled.append(("nack", delay))

    async def reject(self) -> None:
        self.settled.append(("reject", None))

    async def in_progress(self) -> None:
        self.heartbeats += 1

    def again(self) -> "FakeDelivery":
        """The next delivery of the same message, as JetStream makes it after a nack."""
        return FakeDelivery(self.body, self.subject, self.attempt + 1)
