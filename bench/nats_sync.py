"""What ``sync_interval: always`` costs a JetStream publish: N acknowledged publishes, one after the other,
on one node and on a 3-node cluster (stream with 1 and 3 replicas), with nats-server's default fsync
(every 2 minutes) and with an fsync before every acknowledgement. Prints the median ack time of each
and the ratio.

    .venv/bin/python bench/nats_sync.py [-n 500]
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig

from infra.nats_cluster import NatsCluster
from infra.nats_server import NatsServer


async def _ack_times(urls: list[str], replicas: int, count: int) -> list[float]:
    nc = await nats.connect(urls)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name="SYNC", subjects=["sync.>"], storage=StorageType.FILE, num_replicas=replicas)
        )
        body = b"x" * 1024  # about one work command
        times = []
        for i in range(count):
            t0 = time.perf_counter()
            await js.publish("sync.a", body, headers={"Nats-Msg-Id": str(i)})
            times.append(time.perf_counter() - t0)
        return times
    finally:
        await nc.close()


def _measure(nodes: int, sync_interval: str | None, count: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        if nodes == 1:
            with NatsServer(Path(folder), sync_interval=sync_interval) as server:
                times = asyncio.run(_ack_times([server.url], 1, count))
        else:
            with NatsCluster(Path(folder), nodes, sync_interval=sync_interval or "2m") as cluster:
                times = asyncio.run(_ack_times(cluster.urls, nodes, count))
    return statistics.median(times[count // 10 :])  # the first ones warm the connection up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="publishes per run")
    args = parser.parse_args()
    for nodes in (1, 3):
        default = _measure(nodes, None, args.n)
        always = _measure(nodes, "always", args.n)
        print(
            f"{nodes} node(s), {nodes} replica(s), {args.n} publishes: median ack {default * 1e3:.2f} ms with the "
            f"default fsync, {always * 1e3:.2f} ms with sync_interval: always (x{always / default:.1f})"
        )


if __name__ == "__main__":
    main()
