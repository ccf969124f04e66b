"""The ports of :mod:`services.bus.ports` on FastStream's NATS broker."""

from faststream.nats import NatsBroker
from faststream.nats.message import NatsMessage
from nats.errors import NotJSMessageError

from services.bus.ports import Outgoing
from services.bus.publishing import route


class BrokerPublisher:
    """Publishes contracts where :func:`route` says, with their Nats-Msg-Id, awaiting the stream's ack."""

    def __init__(self, broker: NatsBroker) -> None:
        self._broker = broker

    async def publish(self, message: Outgoing) -> None:
        where = route(message)
        await self._broker.publish(
            message,
            where.subject,
            headers={"Nats-Msg-Id": where.msg_id},
            stream=where.stream,
            timeout=10.0,
        )


class NatsDelivery:
    """A JetStream message as FastStream hands it to a handler or a middleware."""

    def __init__(self, msg: NatsMessage) -> None:
        self._msg = msg

    @property
    def subject(self) -> str:
        return self._msg.raw_message.subject

    @property
    def body(self) -> bytes:
        body = self._msg.body
        return body if isinstance(body, bytes) else str(body).encode()

    @property
    def attempt(self) -> int:
        try:
            metadata = self._msg.raw_message.metadata
        except NotJSMessageError:  # core NATS (FastStream's in-memory test broker): delivered once
            return 1
        return int(metadata.num_delivered) if metadata and metadata.num_delivered else 1

    async def ack(self) -> None:
        await self._msg.ack()

    async def nack(self, delay: float) -> None:
        await self._msg.nack(delay=delay)

    async def reject(self) -> None:
        await self._msg.reject()

    async def in_progress(self) -> None:
        await self._msg.in_progress()
