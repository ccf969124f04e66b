"""A webhook receiver on loopback for tests: verifies each POST with the standardwebhooks package against
the secret it is told, answers 500 to its first ``fail_first`` POSTs, then 200, and records every one."""

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from tests.http_serving import serving


@dataclass(frozen=True)
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(self, secret: Callable[[], str], fail_first: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self.url = ""

    def delivered(self) -> list[Received]:
        """The POSTs answered 2xx."""
        with self._lock:
            return [r for r in self.received if r.status == 200]

    def _handle(self, headers: dict[str, str], body: bytes) -> int:
        try:
            Webhook(self.secret()).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        with self._lock:
            status = 500 if len(self.received) < self.fail_first else 200
            self.received.append(Received(headers.get("webhook-id", ""), headers, body, verified, status))
        return status


@contextmanager
def receiving(secret: Callable[[], str], fail_first: int = 0) -> Iterator[Receiver]:
    receiver = Receiver(secret, fail_first)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = receiver._handle({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no" if status != 200 else b"ok")

        def log_message(self, *_args: object) -> None:
            pass

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/i2v?src=test"
        yield receiver
