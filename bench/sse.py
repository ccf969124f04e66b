"""How one gateway process holds up with many live SSE followers.

Starts nats-server and SeaweedFS on loopback, one gateway process (``i2v serve gateway``), submits
``--jobs`` jobs through the API (no pipeline runs: nothing consumes them), opens ``--clients``
SSE connections spread over those jobs, then publishes synthetic ``StageProgress`` events straight to
the events stream, as the latent stage would, and a terminal event to end each job. Prints p50/p99
latency from publish to receipt by a client, and the gateway's memory per connection. Loopback only;
bounded in count and in time (``--timeout``).

    .venv/bin/python bench/sse.py --clients 1000 --jobs 50 --rounds 20
"""

import argparse
import asyncio
import base64
import io
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from bench.gateway_process import ACCOUNT, GatewayDidNotStart, served_gateway, status_kib  # noqa: E402
from contracts.failures import FailureCode  # noqa: E402
from contracts.messages import JobFailed, JobSpec, StageProgress  # noqa: E402
from contracts.params import GenerationParams  # noqa: E402
from contracts.stages import Stage  # noqa: E402
from infra.ports import LOOPBACK  # noqa: E402
from services.bus.publishing import route  # noqa: E402


class Follower:
    """One SSE client on a raw socket (an HTTP client library would cost more than the server)."""

    def __init__(self, port: int, key: str, job_id: str, received: dict[tuple[str, int], list[float]]) -> None:
        self.port, self.key, self.job_id, self.received = port, key, job_id, received
        self.connected = asyncio.Event()
        self.events = 0

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection(LOOPBACK, self.port, limit=2**20)
        writer.write(
            (
                f"GET /v1/jobs/{self.job_id}/events HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
                f"Authorization: Bearer {self.key}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        try:
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(f"SSE answered {status!r}")
            self.connected.set()
            async for line in reader:
                if line.startswith(b"data: "):
                    now = time.perf_counter()
                    # Payloads are small JSON; finding the step is cheaper than parsing all of it.
                    text = line.decode()
                    if '"StageProgress"' in text:
                        step = int(text.split('"step":', 1)[1].split(",", 1)[0])
                        self.received.setdefault((self.job_id, step), []).append(now)
                        self.events += 1
                    elif '"JobFailed"' in text:
                        return
        finally:
            writer.close()


async def bench(args: argparse.Namespace, port: int, key: str, nats_url: str, gateway_pid: int) -> None:
    import httpx
    import nats

    png = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 90, 160)).save(png, format="PNG")
    body = {"image_base64": base64.b64encode(png.getvalue()).decode(), "duration": 1, "fps": 8, "steps": args.rounds}
    async with httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{port}", headers={"Authorization": f"Bearer {key}"}) as c:
        jobs = []
        for _ in range(args.jobs):
            response = await c.post("/v1/jobs", json=body)
            response.raise_for_status()
            jobs.append(response.json())
    idle_rss = status_kib(gateway_pid, "VmRSS")

    received: dict[tuple[str, int], list[float]] = {}
    followers = [Follower(port, key, jobs[i % len(jobs)]["id"], received) for i in range(args.clients)]
    t0 = time.perf_counter()
    tasks = []
    for start in range(0, len(followers), 100):  # connect in waves, as a crowd arrives
        batch = followers[start : start + 100]
        tasks += [asyncio.create_task(f.run()) for f in batch]
        await asyncio.gather(*(f.connected.wait() for f in batch))
    connect_s = time.perf_counter() - t0
    await asyncio.sleep(1.0)
    connected_rss = status_kib(gateway_pid, "VmRSS")

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    published: dict[tuple[str, int], float] = {}
    for step in range(1, args.rounds + 1):
        for job in jobs:
            event = StageProgress(job_id=job["id"], stage=Stage.LATENT, step=step, total=args.rounds)
            where = route(event)
            published[(job["id"], step)] = time.perf_counter()
            await js.publish(where.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": where.msg_id})
        await asyncio.sleep(args.interval)
    for job in jobs:
        spec = JobSpec(job_id=job["id"], account=ACCOUNT, params=GenerationParams(**job["parameters"]))
        end = JobFailed(job=spec, stage=Stage.LATENT, code=FailureCode.INTERNAL, reason="synthetic end of the bench")
        where = route(end)
        await js.publish(where.subject, end.model_dump_json().encode(), headers={"Nats-Msg-Id": where.msg_id})
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    await nc.close()

    latencies = sorted((t - published[k]) * 1000 for k, times in received.items() if k in published for t in times)
    expected = args.clients * args.rounds
    got = sum(f.events for f in followers)
    cuts = statistics.quantiles(latencies, n=100)
    print(f"clients        {args.clients} SSE connections on {len(jobs)} jobs, one gateway process")
    print(f"connect        all connected in {connect_s:.2f}s")
    print(f"delivered      {got} of {expected} progress events ({args.rounds} per client)")
    print(
        f"latency        p50 {cuts[49]:.1f} ms   p99 {cuts[98]:.1f} ms   max {latencies[-1]:.1f} ms"
        "   (publish -> client receipt)"
    )
    per_conn = (connected_rss - idle_rss) / args.clients
    print(
        f"memory         gateway RSS {idle_rss / 1024:.0f} MiB idle -> {connected_rss / 1024:.0f} MiB connected:"
        f" {per_conn:.1f} KiB per connection"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20, help="progress events per job")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between rounds")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    args = parser.parse_args()
    if not 1 <= args.clients <= 5000 or not 1 <= args.jobs <= 1000 or not 1 <= args.rounds <= 50:
        parser.error("keep it bounded: clients 1-5000, jobs 1-1000, rounds 1-50")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.clients * 2 + 256)), hard))

    with tempfile.TemporaryDirectory(prefix="i2v-bench-sse-") as tmp:
        state = Path(tmp)
        try:
            with served_gateway(state, max_active_jobs=args.jobs) as gateway:
                bench_run = bench(args, gateway.port, gateway.key, gateway.nats_url, gateway.pid)
                asyncio.run(asyncio.wait_for(bench_run, args.timeout))
        except GatewayDidNotStart as failure:
            print(failure.log, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
