"""Several JetStream nats-servers from the wheel, clustered over loopback routes.

Each node is a :class:`~infra.nats_server.NatsServer` with its own client, cluster and monitoring
ports, its own store folder and ``server_name``; every port is picked free and written into the
node's configuration. Routes log in with a user and password of their own (the nodes accept no
anonymous route), and every node fsyncs JetStream writes as ``sync_interval`` says.
"""

import json
import secrets
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from infra.nats_server import NatsServer, NatsServerError
from infra.ports import LOOPBACK, free_ports
from infra.process import StartedInWith, log_tail

CLUSTER_NAME = "i2v"
_POLL_S = 0.1
_CONSTRUCTIONS = 3
"""Fresh sets of ports a first start tries before it gives up."""


@dataclass(frozen=True)
class RouteAuth:
    """How the nodes log in to one another: ``password`` goes into the route URLs, ``hashed`` (its bcrypt
    hash, when there is one) into the ``cluster { authorization }`` the nodes check."""

    user: str
    password: str = field(repr=False)
    hashed: str = field(default="", repr=False)

    @classmethod
    def generated(cls, user: str = "route") -> "RouteAuth":
        return cls(user, secrets.token_urlsafe(32))


def route_authorization(auth: RouteAuth) -> str:
    """nats-server's ``authorization`` block for a ``cluster`` block: the one login routes must give."""
    return f"authorization {{ user: {json.dumps(auth.user)}, password: {json.dumps(auth.hashed or auth.password)} }}"


class NatsCluster(StartedInWith):
    """``nodes`` nats-servers with JetStream, each in ``state_dir/<server_name>``, routed to one another.

    :meth:`start` starts them one after the other and returns once every node reports JetStream healthy
    (the meta group has a leader every node follows). Cluster ports are picked on the first start and
    kept, so a node restarted alone (:meth:`revive`) finds its peers again; client ports are kept too.
    ``config`` (e.g. the clients' ``authorization`` block) goes into every node's configuration.
    """

    def __init__(
        self,
        state_dir: Path,
        nodes: int = 3,
        *,
        host: str = LOOPBACK,
        config: str = "",
        route_auth: RouteAuth | None = None,
        sync_interval: str = "always",
        binary: Path | None = None,
        name: str = CLUSTER_NAME,
    ) -> None:
        if nodes < 2:
            raise NatsServerError(f"a cluster needs at least 2 nodes, got {nodes}")
        self.state_dir = Path(state_dir)
        self.host = host
        self.name = name
        self.route_auth = route_auth or RouteAuth.generated()
        self._config = config
        self._sync_interval = sync_interval
        self._binary = binary
        self._cluster_ports: list[int] = []
        self.nodes: list[NatsServer] = []
        self._size = nodes

    @property
    def server_names(self) -> list[str]:
        return [f"{self.name}-{i + 1}" for i in range(self._size)]

    @property
    def urls(self) -> list[str]:
        """Every node's client URL, in node order."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """All client URLs, comma-separated: the form ``I2V_NATS_URL`` takes for a cluster."""
        return ",".join(self.urls)

    @property
    def running(self) -> bool:
        return bool(self.nodes) and all(node.running for node in self.nodes)

    def _node_config(self, index: int) -> str:
        login = f"{self.route_auth.user}:{self.route_auth.password}"
        routes = [
            f"nats-route://{login}@{self.host}:{port}" for i, port in enumerate(self._cluster_ports) if i != index
        ]
        return (
            f"server_name: {json.dumps(self.server_names[index])}\n"
            + "cluster {\n"
            + f"  name: {json.dumps(self.name)}\n"
            + f"  listen: {json.dumps(f'{self.host}:{self._cluster_ports[index]}')}\n"
            + f"  {route_authorization(self.route_auth)}\n"
            + f"  routes: {json.dumps(routes)}\n"
            + "}\n"
            + self._config
        )

    def start(self, timeout: float = 60.0) -> None:
        """Start every node and wait until the cluster's JetStream is healthy on each.

        A first start picks the cluster ports and, should a node fail to start (another process may take
        a port it was given while the nodes before it start), begins again on fresh ports and empty
        folders, up to three times within ``timeout``: nothing holds a port of a cluster that never ran.
        """
        deadline = time.monotonic() + timeout
        first = not self._cluster_ports
        for attempt in range(1, (_CONSTRUCTIONS if first else 1) + 1):
            if first:
                self._construct()
            try:
                for node in self.nodes:
                    if not node.running:
                        node.start(max(1.0, deadline - time.monotonic()))
                self.wait_healthy(max(1.0, deadline - time.monotonic()))
                return
            except NatsServerError:
                self.stop()
                if not first or attempt == _CONSTRUCTIONS or time.monotonic() > deadline:
                    raise
            except BaseException:
                self.stop()
                raise

    def _construct(self) -> None:
        """Fresh cluster ports, and a node for each on an empty folder."""
        for node in self.nodes:
            shutil.rmtree(node.state_dir, ignore_errors=True)
        self._cluster_ports = free_ports(self._size, self.host)
        self.nodes = [
            NatsServer(
                self.state_dir / name,
                host=self.host,
                binary=self._binary,
                config=self._node_config(i),
                sync_interval=self._sync_interval,
            )
            for i, name in enumerate(self.server_names)
        ]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Return once every node's ``/healthz`` says JetStream is current; NatsServerError naming the first
        node that is not, with its answer, after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for name, node in zip(self.server_names, self.nodes, strict=True):
            while (answer := _health(f"http://{self.host}:{node.monitor_port}/healthz")) != "ok":
                if time.monotonic() > deadline:
                    raise NatsServerError(
                        f"nats-server cluster node {name} not healthy within {timeout:.0f}s ({answer}; "
                        f"log {node.log_path}: {log_tail(node.log_path)})"
                    )
                time.sleep(_POLL_S)

    def revive(self, timeout: float | None = None) -> list[str]:
        """Start again every node that is not running (a crash, a kill); returns their server names.
        Each comes back on its own client and cluster ports and catches up from its peers."""
        revived = []
        for name, node in zip(self.server_names, self.nodes, strict=True):
            if not node.running:
                node.restart(timeout)  # reaps a crashed process first
                revived.append(name)
        return revived

    def stop(self, timeout: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop every node and start them again: same ports, same data."""
        self.stop()
        self.start(timeout)

    def __repr__(self) -> str:
        return f"NatsCluster({self.url or 'not started'}, state_dir={self.state_dir}, running={self.running})"


def _health(url: str) -> str:
    """``ok``, or the node's reason for not being healthy (its error, or why it did not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return str(exc)
    if not isinstance(body, dict):
        return "unreadable /healthz answer"
    return "ok" if body.get("status") == "ok" else str(body.get("error") or body)
