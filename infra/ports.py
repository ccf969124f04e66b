"""Free loopback TCP ports for the servers we launch.

The kernel picks a port for a socket bound to port 0; we close the socket and hand the number to
a child process. Between the close and the child's bind another process may take the port. That
window is small, so launchers do not lock anything: they detect the failed bind (the child exits
before it is ready) and retry with fresh ports.
"""

import socket
from contextlib import ExitStack

LOOPBACK = "127.0.0.1"


def _bound_socket(host: str, port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that was free a moment ago."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """Return ``n`` distinct free TCP ports on ``host``; all sockets stay open until every port is chosen."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    with ExitStack() as held:
        ports = []
        for _ in range(n):
            sock = held.enter_context(_bound_socket(host))
            ports.append(int(sock.getsockname()[1]))
        return ports


def is_port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether ``port`` on ``host`` can be bound right now."""
    try:
        _bound_socket(host, port).close()
    except OSError:
        return False
    return True
