"""Run the whole pipeline on one machine: servers on free loopback ports, one process per service.

Children are supervised: one that dies is restarted with backoff and the restart is logged; its
in-flight command is redelivered by JetStream once the ack deadline passes.

One source of settings: :meth:`EmbeddedStack.env` is the shell's ``I2V_*`` variables with the stack's
own (its servers and keys, state folder, demo account, gateway address) on top. Children get exactly
these ``I2V_*`` variables, :meth:`EmbeddedStack.settings` parses the same mapping, and the state
folder's ``stack.env`` records it for ``i2v`` commands. So ``I2V_S3_BUCKET`` or ``I2V_LEDGER_DSN`` in
the shell apply to the services and the CLI alike.

NATS refuses anonymous clients: each service connects as its own user with its own permissions
(services/stack/nats_auth.py), ``i2v`` commands and :meth:`EmbeddedStack.settings` as ``client``, and
the stack itself declares the streams as ``admin`` before any service starts. The passwords are made on
first start into the state folder (services/stack/credentials.py); the file of ``i2v`` commands holds
the client's only.

``replicas`` runs more than one process of a service (``latent-2``, ``latent-3``...; the gateway's count is
``gateways``): each its own log, ready file and metrics port, restarted on its own, all of them pulling from
the service's durable consumers, so that JetStream hands each command to one of them. They split the
service's thread budget (services/threads.py).

``nats_nodes`` above one runs a nats-server cluster instead (infra/nats_cluster.py): every stream and the
cancel bucket on three of its nodes (``I2V_STREAM_REPLICAS``), every client given all the nodes' URLs in
``I2V_NATS_URL``, and a node that dies restarted by :meth:`EmbeddedStack.supervise` like a service.
"""

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats

from infra.nats_cluster import NatsCluster, RouteAuth
from infra.nats_server import NatsServer, NatsServerError
from infra.ports import LOOPBACK, free_ports, is_port_free
from infra.process import log_tail, private_dir
from infra.seaweed import SeaweedS3
from services.bus.connection import nats_options, nats_servers
from services.bus.streams import ensure_streams_patiently
from services.config import Settings, settings_from
from services.objectstore import object_store_from
from services.stack.credentials import NatsLogin, nats_logins
from services.stack.nats_auth import ADMIN, CLIENT, ROUTE, USERS, authorization_block
from services.stack.state_file import remove_stack_file, write_stack_file
from services.threads import shared_host_env, split_among

log = logging.getLogger("i2v.stack")

SERVICES = ("ingest", "billing", "latent", "decode", "mux")
WITH_WEBHOOKS = (*SERVICES, "webhooks")
"""The pipeline and the webhooks service, which POSTs jobs' events to the URLs their submitters gave."""
WITH_GATEWAY = (*WITH_WEBHOOKS, "gateway")
"""What ``i2v stack up`` runs: the pipeline and the HTTP gateway in front of it."""
REPLICABLE = WITH_WEBHOOKS
"""Services that may run several processes (``replicas``): they only pull from durable consumers."""
LOCAL_ACCOUNT = "local"
LOCAL_ACCOUNT_POINTS = 1000
_RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
_START_TRIES = 3  # a service that exits before it is ready is started this many times in all
_DECLARE_TIMEOUT_S = 120.0  # a 3-node cluster on a busy machine can take tens of seconds to elect its leaders
_SYNC_INTERVAL = "always"
"""JetStream fsyncs before it acknowledges a write: an acked reservation or charge survives a crash of the
machine, not only of the process (docs/ARCHITECTURE.md, "Clustered NATS", has the cost)."""
_MAX_REPLICAS = 3
_PER_PROCESS = frozenset(
    {
        "I2V_READY_FILE",
        "I2V_LOG_FILE",
        "I2V_NATS_USER",
        "I2V_NATS_PASSWORD",
        "I2V_NATS_INBOX_PREFIX",
        "I2V_METRICS_PORT",
    }
)
"""Set per child by the stack; never taken from the shell nor shared."""


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    started: float
    restarts: int = 0
    next_restart: float | None = None


@dataclass
class EmbeddedStack:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    state_dir: Path
    services: tuple[str, ...] = WITH_WEBHOOKS
    extra_env: Mapping[str, str] = field(default_factory=dict)
    say: Callable[[str], None] = lambda _line: None
    nats_nodes: int = 1
    """nats-server nodes: 1, or a cluster (3 keeps every stream through the loss of one node)."""
    nats: NatsServer | NatsCluster | None = None
    s3: SeaweedS3 | None = None
    gateway_port: int | None = None
    gateways: int = 1
    """Gateway processes when ``services`` has the gateway; more than one needs a PostgreSQL jobs index."""
    gateway_ports: list[int] = field(default_factory=list)
    """Every gateway's port, :attr:`gateway_port` first."""
    replicas: Mapping[str, int] = field(default_factory=dict)
    """Processes of each service named (``{"latent": 2}``: latent and latent-2); 1 for the others."""
    metrics_ports: dict[str, int] = field(default_factory=dict)
    """Each child's /healthz, /readyz and /metrics port, chosen at start and kept across its restarts."""
    _children: dict[str, _Child] = field(default_factory=dict)
    _shell: dict[str, str] = field(default_factory=dict)
    _logins: dict[str, NatsLogin] = field(default_factory=dict)
    _wrote_stack_file: bool = False
    _gateway_port_given: bool = False
    _nats_retry_at: float = 0.0

    def __enter__(self) -> "EmbeddedStack":
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        self._check_gateways()
        check_replicas(self.replicas, self.services)
        self.state_dir = self.state_dir.resolve()
        # Data, logs, ledger and credentials: the owner's only.
        private_dir(self.state_dir)
        # Taken once: a child restarted later gets the settings its siblings got.
        self._shell = {k: v for k, v in os.environ.items() if k.startswith("I2V_") and k not in _PER_PROCESS}
        t0 = time.perf_counter()
        self._logins = nats_logins(self.state_dir, (*USERS, ROUTE))
        self.nats = self._nats_server()
        self.s3 = SeaweedS3(self.state_dir / "seaweedfs")
        try:
            self.nats.start()
            self.s3.start()
            servers = f"{self.nats_nodes} nodes" if self.nats_nodes > 1 else "nats-server"
            self.say(f"{servers} {self.nats.url}, S3 {self.s3.endpoint} ({time.perf_counter() - t0:.1f}s)")
            # Chosen together so that no two are the same.
            children = self._child_names()
            ports = free_ports(len(children) + self.gateways)
            if "gateway" in self.services:
                http = ports[len(children) :]
                self._gateway_port_given = self.gateway_port is not None
                self.gateway_port = http[0] if self.gateway_port is None else self.gateway_port
                self.gateway_ports = [self.gateway_port, *http[1:]]
            self.metrics_ports = dict(zip(children, ports, strict=False))
            _in_own_loop(self._declare_streams)
            object_store_from(self.settings()).ensure_bucket()
            for name in children:
                self._spawn(name)
            self._wait_ready(time.monotonic() + timeout)
            write_stack_file(self.state_dir, self.env())
            self._wrote_stack_file = True
        except BaseException:
            self.stop()
            raise
        self.say(f"stack ready in {time.perf_counter() - t0:.1f}s: {', '.join(self._child_names())}")

    def stop(self) -> None:
        if self._wrote_stack_file:
            remove_stack_file(self.state_dir)
            self._wrote_stack_file = False
        children = list(self._children.values())
        for child in children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self._children.clear()
        if self.s3 is not None:
            self.s3.stop()
        if self.nats is not None:
            self.nats.stop()

    # -- what the outside needs ----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Every I2V_* setting of this stack: the shell's, then the stack's own, then ``extra_env``.

        NATS as the ``client`` user: what ``i2v`` commands need (a service gets its own user instead).
        """
        return {**self._env(), **self._nats_login(CLIENT)}

    def _env(self) -> dict[str, str]:
        assert self.nats is not None and self.s3 is not None, "stack not started"
        env = {
            "I2V_WEBHOOK_ALLOW_PRIVATE": "1",  # one box: a receiver on this host is the usual case; the shell may say 0
            **self._shell,
            "I2V_NATS_URL": self.nats.url,
            "I2V_STREAM_REPLICAS": str(self.stream_replicas),
            "I2V_S3_ENDPOINT": self.s3.endpoint,
            "I2V_S3_ACCESS_KEY": self.s3.access_key,
            "I2V_S3_SECRET_KEY": self.s3.secret_key,
            "I2V_STATE_DIR": str(self.state_dir),
            "I2V_DEFAULT_ACCOUNT": LOCAL_ACCOUNT,
            "I2V_DEFAULT_ACCOUNT_POINTS": str(LOCAL_ACCOUNT_POINTS),
        }
        if self.gateway_port is not None:
            env["I2V_GATEWAY_HOST"] = LOOPBACK
            env["I2V_GATEWAY_PORT"] = str(self.gateway_port)
        env.update(self.extra_env)
        # The services share this host's cores (services/threads.py); a share set in the shell stays.
        return {**shared_host_env(env, self.services), **env}

    @property
    def gateway_url(self) -> str:
        """Where the gateway's web page and API answer (the stack must run the gateway)."""
        assert self.gateway_port is not None, "the stack runs no gateway"
        return f"http://{LOOPBACK}:{self.gateway_port}"

    @property
    def gateway_urls(self) -> list[str]:
        """Every gateway's web page and API, :attr:`gateway_url` first."""
        return [f"http://{LOOPBACK}:{port}" for port in self.gateway_ports]

    def _child_names(self) -> list[str]:
        """Each service's processes in turn: the service's name, then its second and later ones as
        latent-2, latent-3... (the gateway's too: gateway-2)."""
        return [name for service in self.services for name in _replica_names(service, self._processes(service))]

    def _processes(self, service: str) -> int:
        return self.gateways if service == "gateway" else self.replicas.get(service, 1)

    def _check_gateways(self) -> None:
        """Refuse in one line gateways that could not share their jobs index (a SQLite file serves one)."""
        if self.gateways < 1:
            raise ValueError(f"gateways must be at least 1, got {self.gateways}")
        if self.gateways == 1:
            return
        if "gateway" not in self.services:
            raise ValueError(f"{self.gateways} gateways asked of a stack that runs none")
        shell = {k: v for k, v in os.environ.items() if k.startswith("I2V_")}
        given = settings_from({**shell, **self.extra_env, "I2V_STATE_DIR": str(self.state_dir)})
        index = given.resolved_index_dsn()
        if not index.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                f"{self.gateways} gateways need one jobs index to share: set I2V_LEDGER_DSN (or I2V_INDEX_DSN) to a"
                f" postgresql:// DSN; a SQLite index ({index}) serves one gateway"
            )

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Each service's Prometheus /metrics (its /healthz and /readyz beside it), by service name."""
        host = self._env().get("I2V_METRICS_HOST", LOOPBACK)
        return {name: f"http://{host}:{port}/metrics" for name, port in self.metrics_ports.items()}

    def settings(self) -> Settings:
        """What ``i2v`` commands of this stack read: :meth:`env`, parsed (NATS as the client user)."""
        return settings_from(self.env())

    def settings_as(self, user: str) -> Settings:
        """:meth:`settings` connecting to NATS as ``user`` (a service, ``gateway``, ``admin``)."""
        return settings_from({**self._env(), **self._nats_login(user)})

    def _nats_login(self, user: str) -> dict[str, str]:
        login = self._logins[user]
        return {"I2V_NATS_USER": login.user, "I2V_NATS_PASSWORD": login.password}

    @property
    def stream_replicas(self) -> int:
        """Nodes that keep each stream: every node, up to three."""
        return min(self.nats_nodes, _MAX_REPLICAS)

    def _nats_server(self) -> NatsServer | NatsCluster:
        """One nats-server, or a cluster whose routes log in as their own user; the clients' users on each."""
        if self.nats_nodes < 1:
            raise ValueError(f"nats_nodes must be at least 1, got {self.nats_nodes}")
        hashes = {user: self._logins[user].hashed for user in USERS}
        config = authorization_block(hashes)
        if self.nats_nodes == 1:
            return NatsServer(self.state_dir / "nats", config=config, sync_interval=_SYNC_INTERVAL)
        route = self._logins[ROUTE]
        return NatsCluster(
            self.state_dir / "nats-cluster",
            self.nats_nodes,
            config=config,
            route_auth=RouteAuth(route.user, route.password, route.hashed),
            sync_interval=_SYNC_INTERVAL,
        )

    async def _declare_streams(self) -> None:
        """As the admin, the only user allowed to: the services and clients then find them."""
        settings = self.settings_as(ADMIN)
        nc = await nats.connect(nats_servers(settings.nats_url), **nats_options(settings))
        try:
            await ensure_streams_patiently(
                nc.jetstream(timeout=10), settings.stream_replicas, patience_s=_DECLARE_TIMEOUT_S, may_change=True
            )
        except TimeoutError as exc:
            raise NatsServerError(
                f"nats-server did not answer the streams' declaration within {_DECLARE_TIMEOUT_S:.0f}s ({exc}); "
                f"the servers' logs end: {self._nats_log_tails()}"
            ) from None
        finally:
            await nc.close()

    def _nats_log_tails(self) -> str:
        """Each nats-server's last log lines, by log file, for an error that outlives the state folder."""
        assert self.nats is not None
        nodes = self.nats.nodes if isinstance(self.nats, NatsCluster) else [self.nats]
        return " || ".join(f"{node.log_path}: {log_tail(node.log_path, 8)}" for node in nodes)

    def pid(self, name: str) -> int:
        return self._children[name].process.pid

    def log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    # -- children ------------------------------------------------------------------------------------

    def _ready_file(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.ready"

    def _spawn(self, name: str) -> None:
        ready = self._ready_file(name)
        ready.unlink(missing_ok=True)
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        # Exactly the stack's I2V_* settings: none inherited past env(), which already took the shell's.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("I2V_")}
        service, replica = _service_of(name), _replica_of(name)
        env = {
            **inherited,
            **self._env(),
            **self._nats_login(service),
            "I2V_READY_FILE": str(ready),
            "I2V_LOG_FILE": str(self.log_path(name)),
            "I2V_METRICS_PORT": str(self.metrics_ports[name]),
        }
        if service == "gateway":
            env["I2V_GATEWAY_PORT"] = str(self.gateway_ports[replica])
        budget = f"I2V_THREADS_{service.upper()}"
        if budget in env and self._processes(service) > 1:
            # The replicas share the service's threads: on one host more processes bring no more cores.
            env[budget] = str(split_among(int(env[budget]), self._processes(service))[replica])
        with (logs / f"{name}.log").open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "serve", service],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        previous = self._children.get(name)
        self._children[name] = _Child(name, process, time.monotonic(), restarts=previous.restarts if previous else 0)

    def _wait_ready(self, deadline: float) -> None:
        pending = set(self._child_names())
        tries: dict[str, int] = {}
        while pending:
            for name in sorted(pending):
                child = self._children[name]
                if self._ready_file(name).exists():
                    pending.discard(name)
                elif child.process.poll() is not None:
                    tail = _tail(self.log_path(name))
                    tries[name] = tries.get(name, 1) + 1
                    if tries[name] > _START_TRIES:
                        raise RuntimeError(f"service {name} exited with {child.process.returncode} at start:\n{tail}")
                    # A cluster just formed can leave a request unanswered (nats: timeout); a setting that is
                    # wrong fails every try, and the last one's log is what the error shows.
                    log.warning("service %s exited with %s at start; starting it again", name, child.process.returncode)
                    self.say(f"service {name} exited with {child.process.returncode} at start; starting it again")
                    self._repick_taken_ports(name)
                    self._spawn(name)
            if time.monotonic() > deadline:
                raise TimeoutError(f"services not ready in time: {', '.join(sorted(pending))}")
            time.sleep(0.1)

    def _repick_taken_ports(self, name: str) -> None:
        """Before a child that exited at start runs again, pick afresh each port the stack chose for it that
        another process has taken since it was chosen (a gateway port the caller gave stays as given)."""
        chosen = {*self.metrics_ports.values(), *self.gateway_ports}

        def fresh() -> int:
            while (port := free_ports(1)[0]) in chosen:
                continue
            chosen.add(port)
            return port

        if not is_port_free(self.metrics_ports[name]):
            self.metrics_ports[name] = fresh()
        replica = _replica_of(name)
        ours = _service_of(name) == "gateway" and not (replica == 0 and self._gateway_port_given)
        if ours and not is_port_free(self.gateway_ports[replica]):
            self.gateway_ports[replica] = fresh()
            self.gateway_port = self.gateway_ports[0]

    def supervise(self) -> None:
        """Restart children and nats-server nodes that died, with backoff; call this periodically."""
        now = time.monotonic()
        self._supervise_nats(now)
        for name, child in list(self._children.items()):
            code = child.process.poll()
            if code is None:
                # A child that stayed up a minute has earned a fresh backoff.
                if child.restarts and now - child.started > 60:
                    child.restarts = 0
                continue
            if child.next_restart is None:
                delay = _RESTART_BACKOFF_S[min(child.restarts, len(_RESTART_BACKOFF_S) - 1)]
                child.next_restart = now + delay
                self.say(f"service {name} exited with {code}; restarting in {delay:.0f}s")
                log.warning("service %s exited with %s; restarting in %.0fs", name, code, delay)
            elif now >= child.next_restart:
                child.restarts += 1
                self._spawn(name)
                self._children[name].restarts = child.restarts
                self.say(f"service {name} restarted (restart #{child.restarts})")

    def _supervise_nats(self, now: float) -> None:
        """Start again a nats-server node that died; it comes back on its ports and catches up from its peers.
        One stopped or restarted on purpose (``stack.nats.restart()``) is left to whoever did it."""
        if self.nats is None or now < self._nats_retry_at:
            return
        nodes = self.nats.nodes if isinstance(self.nats, NatsCluster) else [self.nats]
        for node in nodes:
            if not node.crashed:
                continue
            name = f"nats-server {node.state_dir.name}" if isinstance(self.nats, NatsCluster) else "nats-server"
            self.say(f"{name} exited; restarting it")
            log.warning("%s exited; restarting it", name)
            try:
                node.restart()  # reaps the dead process first
            except NatsServerError as exc:
                self._nats_retry_at = now + _RESTART_BACKOFF_S[-1]
                self.say(f"{name} did not restart ({exc}); trying again in {_RESTART_BACKOFF_S[-1]:.0f}s")
                return
            self.say(f"{name} restarted at {node.url}")


def _in_own_loop(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``work`` to the end on an event loop of its own: the stack may be started from inside one."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(work())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="i2v-stack-streams")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def parse_replicas(text: str) -> dict[str, int]:
    """``latent=2,decode=2`` as ``{"latent": 2, "decode": 2}``; a ValueError of one line names what is wrong."""
    replicas: dict[str, int] = {}
    for item in text.split(","):
        name, equals, count = (part.strip() for part in item.partition("="))
        if not name or not equals:
            raise ValueError(f"{item.strip()!r}: give SERVICE=N, e.g. latent=2")
        if name in replicas:
            raise ValueError(f"{name} given twice")
        try:
            replicas[name] = int(count)
        except ValueError:
            raise ValueError(f"{item.strip()!r}: N must be a whole number, e.g. {name}=2") from None
    check_replicas(replicas, REPLICABLE)
    return replicas


def check_replicas(replicas: Mapping[str, int], services: tuple[str, ...]) -> None:
    """Refuse in one line a service that cannot have replicas, or is not run, or fewer than one process."""
    for name, count in replicas.items():
        if name == "gateway":
            raise ValueError("the gateway's processes are counted by --gateways, not replicas")
        if name not in REPLICABLE:
            raise ValueError(f"no service {name!r} to replicate (services: {', '.join(REPLICABLE)})")
        if count < 1:
            raise ValueError(f"{name} needs at least 1 process, got {count}")
        if name not in services and count > 1:
            raise ValueError(f"{count} replicas of {name} asked of a stack that runs no {name}")


def _replica_names(service: str, processes: int) -> list[str]:
    return [service, *(f"{service}-{n}" for n in range(2, processes + 1))]


def _service_of(child: str) -> str:
    """The service a child runs: latent-2 is a latent."""
    return child.partition("-")[0]


def _replica_of(child: str) -> int:
    """The child's place among its service's processes, from 0: latent is 0, latent-2 is 1."""
    number = child.partition("-")[2]
    return int(number) - 1 if number else 0


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
