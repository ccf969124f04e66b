"""Where a webhook may go, and the POST that goes there.

A URL whose host resolves to a loopback, private, link-local or otherwise non-public address is refused
(unless the deployment allows them): a job's submitter must not make our servers call the inside of the
network. The gateway checks at submit; the webhooks service checks again at every attempt, after its own
DNS lookup, and connects to the very address it checked, so a name that resolves to a public address at
the check and a private one a moment later (DNS rebinding) still reaches only the public one.
"""

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_RESPONSE_BYTES = 64 * 1024
"""What is read of a receiver's answer: its status is all that matters, the body only shortens the error."""


class WebhookRefusedError(ValueError):
    """The URL's host cannot be resolved, or resolves to an address deliveries may not go to; one line."""


@dataclass(frozen=True)
class Destination:
    """A webhook URL and the one address it was checked at."""

    url: str
    host: str
    port: int
    address: str
    https: bool

    @property
    def target(self) -> str:
        """The request target: path and query, ``/`` when the URL has none."""
        parts = urlsplit(self.url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    @property
    def host_header(self) -> str:
        default = 443 if self.https else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(url: str, *, allow_private: bool) -> Destination:
    """Look the URL's host up and pick its first address; WebhookRefusedError if it does not resolve, or
    if any of its addresses is not public and ``allow_private`` is off. Blocking (a DNS lookup)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise WebhookRefusedError(f"webhook: the host {host!r} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise WebhookRefusedError(f"webhook: the host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            if not _is_public(address):
                raise WebhookRefusedError(
                    f"webhook: {host!r} resolves to {address}, a loopback or private address; webhooks go to "
                    "public addresses (a deployment may allow others with I2V_WEBHOOK_ALLOW_PRIVATE)"
                )
    return Destination(url=url, host=host, port=port, address=addresses[0], https=https)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address, whatever the name resolves to now."""

    def __init__(self, destination: Destination, timeout: float) -> None:
        super().__init__(destination.host, destination.port, timeout=timeout)
        self._address = destination.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the checked address; the certificate is verified for the URL's host name (SNI too)."""

    def __init__(self, destination: Destination, timeout: float) -> None:
        super().__init__(destination.host, destination.port, timeout=timeout, context=ssl.create_default_context())
        self._address = destination.address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Answer:
    """A receiver's answer: its status and the start of its body."""

    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def post(destination: Destination, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """POST ``body`` to the destination's address; redirects are not followed (a 3xx is not a delivery).
    Raises OSError (refused, reset, TLS) or TimeoutError past ``timeout``. Blocking."""
    connection: http.client.HTTPConnection
    if destination.https:
        connection = _PinnedHTTPSConnection(destination, timeout)
    else:
        connection = _PinnedHTTPConnection(destination, timeout)
    try:
        connection.request(
            "POST",
            destination.target,
            body=body,
            headers={**headers, "Host": destination.host_header, "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        return Answer(response.status, response.read(MAX_RESPONSE_BYTES))
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {type(exc).__name__} {exc}") from exc
    finally:
        connection.close()
