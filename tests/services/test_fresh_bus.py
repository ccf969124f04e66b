"""The fresh bus each service test starts on: emptied even while nats-server still removes a stream deleted
just before (it renames a deleted stream's folder to ``.<name>`` and removes that in the background; deleting
the name again meanwhile leaves the stream's folder, messages and all, to come back when it is declared)."""

import asyncio
import shutil

from contracts.subjects import EVENTS_STREAM
from infra.nats_server import NatsServer
from tests.services.bus_helpers import fresh_bus


async def test_a_fresh_bus_waits_for_an_earlier_deletion_and_holds_no_earlier_message(
    nats_server: NatsServer,
) -> None:
    async with fresh_bus(nats_server) as js:
        for n in range(3):
            await js.publish(f"i2v.events.job{n}.progress", b"{}")
    # An earlier deletion of the stream, its folder not yet removed.
    (streams,) = nats_server.state_dir.glob("jetstream/*/streams")
    removing = streams / f".{EVENTS_STREAM}"
    (removing / "msgs").mkdir(parents=True)
    (removing / "msgs" / "1.blk").write_bytes(b"\0" * 64)

    async def removal_ends() -> None:
        await asyncio.sleep(0.5)
        shutil.rmtree(removing)

    ending = asyncio.create_task(removal_ends())
    async with fresh_bus(nats_server) as js:
        assert ending.done()
        assert (await js.stream_info(EVENTS_STREAM)).state.messages == 0
