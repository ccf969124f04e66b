"""How gateway processes hold up with many live SSE followers: one gateway, then two.

Starts nats-server and SeaweedFS on loopback and a PostgreSQL jobs index (a schema of its own on
``I2V_BENCH_PG_URL``, dropped after), then runs two cases in one go:

1. one gateway process (``i2v serve gateway``) with ``--clients`` SSE connections;
2. two gateway processes with ``--clients`` connections each, followers of the same jobs on both.

Each case submits ``--jobs`` jobs through the API (no pipeline runs: nothing consumes them), opens the
connections from ``--workers`` client processes per gateway (the load generator must not be what is
measured), then publishes synthetic ``StageProgress`` events straight to the events stream, as the
latent stage would, and a terminal event to end each job. A client notes the time each progress
event reaches it (the monotonic clock every process on the machine shares); the publisher notes the
time just before publishing it. Prints p50/p99 latency from publish to receipt, and each gateway's
memory per connection. Loopback only; bounded in count and in time (``--timeout``).

    .venv/bin/python bench/sse.py --clients 5000 --jobs 100
"""

import argparse
import asyncio
import base64
import io
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway_process import ACCOUNT, BenchStack, Gateway, GatewayDidNotStart, bench_stack, status_kib  # noqa: E402
from infra.ports import LOOPBACK  # noqa: E402

GOAL_P99_MS = 250.0
"""The issue's goal: p99 publish → receipt at 5,000 clients on one gateway, and at 10,000 over two."""

PG_URL = os.environ.get("I2V_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

Receipt = tuple[int, int, float]
"""(job's index, progress step, monotonic receipt time)"""


class Follower(asyncio.Protocol):
    """One SSE client on a raw socket: an HTTP client library would cost more than the server. The time of
    an event is that of the read that completed its frame."""

    def __init__(self, request: bytes, job: int, receipts: list[Receipt], done: asyncio.Future[None]) -> None:
        self.request, self.job, self.receipts, self.done = request, job, receipts, done
        self.connected = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.connected.done():
            status = data.split(b"\r\n", 1)[0]
            if b" 200 " not in status:
                self._finish(RuntimeError(f"SSE answered {status!r}"))
                return
            self.connected.set_result(None)
        data = self.buffer + data
        end = data.rfind(b"\n\n")
        if end < 0:
            self.buffer = data
            return
        self.buffer = data[end + 2 :]
        # Chunk-size lines fall between frames; only the data lines matter. Finding the step is cheaper
        # than parsing the JSON.
        for line in data[:end].split(b"\n"):
            if not line.startswith(b"data: "):
                continue
            if b'"StageProgress"' in line:
                self.receipts.append((self.job, int(line.split(b'"step":', 1)[1].split(b",", 1)[0]), now))
            elif b'"JobFailed"' in line:
                self._finish(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc or RuntimeError("the gateway closed the stream before the job ended"))

    def _finish(self, error: BaseException | None) -> None:
        for future in (self.connected, self.done):
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        if self.transport is not None:
            self.transport.close()


async def _follow_all(
    port: int, key: str, jobs: list[tuple[int, str]], pipe: Connection
) -> tuple[list[Receipt], float]:
    loop = asyncio.get_running_loop()
    receipts: list[Receipt] = []
    followers: list[Follower] = []
    t0 = time.monotonic()
    for start in range(0, len(jobs), 100):  # connect in waves, as a crowd arrives
        wave = []
        for index, job_id in jobs[start : start + 100]:
            request = (
                f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
                f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
            follower = Follower(request, index, receipts, loop.create_future())
            await loop.create_connection(lambda f=follower: f, LOOPBACK, port)  # type: ignore[misc]
            wave.append(follower)
        await asyncio.gather(*(f.connected for f in wave))
        followers += wave
    pipe.send(("connected", time.monotonic() - t0))
    cpu = time.process_time()
    await asyncio.gather(*(f.done for f in followers))
    return receipts, time.process_time() - cpu


def _worker(port: int, key: str, jobs: list[tuple[int, str]], pipe: Connection) -> None:
    """A client process: follows ``jobs`` (one connection each), says when all are connected, and sends its
    receipts back once every job has ended, with the CPU time it took from then."""
    try:
        pipe.send(asyncio.run(_follow_all(port, key, jobs, pipe)))
    except BaseException as exc:
        pipe.send(f"error: {exc!r}")
        raise


@dataclass
class Case:
    """What one case saw."""

    gateways: int
    clients: int
    jobs: int
    rounds: int
    connect_s: float
    delivered: int
    latencies_ms: list[float]
    memory_kib: list[tuple[int, int]]
    """(idle, connected) RSS of each gateway"""
    cpu_s: list[float]
    """CPU time of each gateway from the first publish until every client saw its job end"""
    client_cpu_s: float
    """CPU time of the client processes over the same span, all together"""
    load: tuple[float, float]
    """The machine's 1-minute load average before the case and after it (its other work shows here)"""

    def report(self) -> str:
        cuts = statistics.quantiles(self.latencies_ms, n=100)
        p99 = cuts[98]
        per_conn = [(busy - idle) / (self.clients / self.gateways) for idle, busy in self.memory_kib]
        rss = ", ".join(f"{idle / 1024:.0f} -> {busy / 1024:.0f} MiB" for idle, busy in self.memory_kib)
        per_event = sum(self.cpu_s) / self.delivered * 1e6
        where = "one gateway process" if self.gateways == 1 else f"{self.gateways} gateway processes"
        return "\n".join(
            [
                f"clients        {self.clients} SSE connections on {self.jobs} jobs, {where}",
                f"connect        all connected in {self.connect_s:.2f}s (the client processes connecting at once)",
                f"delivered      {self.delivered} of {self.clients * self.rounds} progress events"
                f" ({self.rounds} per client)",
                f"latency        p50 {cuts[49]:.1f} ms   p99 {p99:.1f} ms   max {max(self.latencies_ms):.1f} ms"
                "   (publish -> client receipt)",
                f"goal           p99 {p99:.1f} / {GOAL_P99_MS:.0f} ms = {p99 / GOAL_P99_MS:.2f}"
                f" ({'met' if p99 <= GOAL_P99_MS else 'NOT met'})",
                f"gateway CPU    {' + '.join(f'{s:.2f}' for s in self.cpu_s)} s while publishing:"
                f" {per_event:.0f} us per event delivered; the client processes {self.client_cpu_s:.2f} s",
                f"machine        {os.cpu_count()} cores; load average"
                f" {self.load[0]:.1f} before, {self.load[1]:.1f} after",
                f"memory         gateway RSS idle -> connected: {rss};"
                f" {' / '.join(f'{k:.1f}' for k in per_conn)} KiB per connection",
            ]
        )


async def _submit(gateway: Gateway, count: int, rounds: int) -> list[dict[str, object]]:
    import httpx
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 90, 160)).save(png, format="PNG")
    body = {"image_base64": base64.b64encode(png.getvalue()).decode(), "duration": 1, "fps": 8, "steps": rounds}
    base = f"http://{LOOPBACK}:{gateway.port}"
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {gateway.key}"}) as client:
        jobs = []
        for _ in range(count):
            response = await client.post("/v1/jobs", json=body)
            response.raise_for_status()
            jobs.append(response.json())
    return jobs


async def _publish(
    nats_url: str, jobs: list[dict[str, object]], rounds: int, interval: float
) -> dict[tuple[int, int], float]:
    import nats

    from contracts.failures import FailureCode
    from contracts.messages import JobFailed, JobSpec, StageProgress
    from contracts.params import GenerationParams
    from contracts.stages import Stage
    from services.bus.publishing import route

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    published: dict[tuple[int, int], float] = {}
    for step in range(1, rounds + 1):
        for index, job in enumerate(jobs):
            event = StageProgress(job_id=str(job["id"]), stage=Stage.LATENT, step=step, total=rounds)
            where = route(event)
            data = event.model_dump_json().encode()
            published[(index, step)] = time.monotonic()
            await js.publish(where.subject, data, headers={"Nats-Msg-Id": where.msg_id})
        await asyncio.sleep(interval)
    for job in jobs:
        params = GenerationParams(**job["parameters"])  # type: ignore[arg-type]
        spec = JobSpec(job_id=str(job["id"]), account=ACCOUNT, params=params)
        end = JobFailed(job=spec, stage=Stage.LATENT, code=FailureCode.INTERNAL, reason="synthetic end of the bench")
        where = route(end)
        await js.publish(where.subject, end.model_dump_json().encode(), headers={"Nats-Msg-Id": where.msg_id})
    await nc.close()
    return published


def run_case(gateways: list[Gateway], idle_rss: dict[int, int], args: argparse.Namespace) -> Case:
    """``args.clients`` followers on each gateway, over the same ``args.jobs`` jobs; ``idle_rss``: each
    gateway's RSS when it had just started."""
    jobs = asyncio.run(_submit(gateways[0], args.jobs, args.rounds))
    load_before = os.getloadavg()[0]
    spawn = multiprocessing.get_context("spawn")
    workers = []
    for gateway in gateways:
        mine = [(i % len(jobs), str(jobs[i % len(jobs)]["id"])) for i in range(args.clients)]
        for w in range(args.workers):
            parent, child = spawn.Pipe()
            process = spawn.Process(target=_worker, args=(gateway.port, gateway.key, mine[w :: args.workers], child))
            process.start()
            workers.append((process, parent))
    deadline = time.monotonic() + args.timeout
    connect_s = 0.0
    for _, pipe in workers:
        if not pipe.poll(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("the clients did not connect in time")
        said = pipe.recv()
        if not isinstance(said, tuple):
            raise RuntimeError(f"a client process failed: {said}")
        connect_s = max(connect_s, said[1])
    time.sleep(1.0)
    memory = [(idle_rss[g.pid], status_kib(g.pid, "VmRSS")) for g in gateways]
    print(f"... {len(gateways)} gateway(s): connected in {connect_s:.1f}s, publishing", file=sys.stderr, flush=True)
    cpu_before = [cpu_seconds(g.pid) for g in gateways]
    published = asyncio.run(_publish(gateways[0].nats_url, jobs, args.rounds, args.interval))
    latencies: list[float] = []
    client_cpu = 0.0
    for _, pipe in workers:
        if not pipe.poll(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("the clients did not see every job end in time")
        said = pipe.recv()
        if isinstance(said, str):
            raise RuntimeError(f"a client process failed: {said}")
        receipts, seconds = said
        client_cpu += seconds
        latencies += [(t - published[(job, step)]) * 1000 for job, step, t in receipts]
    cpu = [cpu_seconds(g.pid) - before for before, g in zip(cpu_before, gateways, strict=True)]
    for process, _ in workers:
        process.join()
    return Case(
        len(gateways),
        args.clients * len(gateways),
        len(jobs),
        args.rounds,
        connect_s,
        len(latencies),
        latencies,
        memory,
        cpu,
        client_cpu,
        (load_before, os.getloadavg()[0]),
    )


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def pg_index() -> Iterator[str]:
    """A DSN whose search_path is a fresh schema on :data:`PG_URL`, dropped after."""
    import psycopg

    schema = f"bench_sse_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def run(stack: BenchStack, dsn: str, args: argparse.Namespace) -> list[Case]:
    cases = []
    with ExitStack() as gateways:
        running: list[Gateway] = []
        idle_rss: dict[int, int] = {}
        for count in args.gateways:
            while len(running) < count:
                gateway = gateways.enter_context(stack.gateway(f"gateway-{len(running)}", I2V_INDEX_DSN=dsn))
                time.sleep(1.0)
                idle_rss[gateway.pid] = status_kib(gateway.pid, "VmRSS")
                running.append(gateway)
            case = run_case(running, idle_rss, args)
            print(case.report() + "\n", flush=True)
            cases.append(case)
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000, help="SSE connections on each gateway")
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20, help="progress events per job")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between rounds")
    parser.add_argument("--gateways", default="1,2", help="the cases, as numbers of gateway processes (default: 1,2)")
    parser.add_argument("--workers", type=int, default=2, help="client processes per gateway")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up a case after this many seconds")
    args = parser.parse_args()
    try:
        args.gateways = sorted({int(n) for n in args.gateways.split(",")})
    except ValueError:
        parser.error(f"--gateways: numbers separated by commas, not {args.gateways!r}")
    if not 1 <= args.clients <= 5000 or not 1 <= args.jobs <= 1000 or not 1 <= args.rounds <= 50:
        parser.error("keep it bounded: clients 1-5000, jobs 1-1000, rounds 1-50")
    if not all(1 <= n <= 4 for n in args.gateways) or not 1 <= args.workers <= 8:
        parser.error("keep it bounded: 1-4 gateways, 1-8 client processes per gateway")
    total = args.clients * max(args.gateways)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, total * 2 + 256)), hard))

    with tempfile.TemporaryDirectory(prefix="i2v-bench-sse-") as tmp:
        try:
            with bench_stack(Path(tmp), max_active_jobs=args.jobs * 2) as stack, pg_index() as dsn:
                cases = run(stack, dsn, args)
        except GatewayDidNotStart as failure:
            print(failure.log, file=sys.stderr)
            return 1
    worst = max(statistics.quantiles(c.latencies_ms, n=100)[98] for c in cases)
    print(
        f"worst p99 {worst:.1f} ms: {'goal met' if worst <= GOAL_P99_MS else 'goal NOT met'} (<= {GOAL_P99_MS:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
