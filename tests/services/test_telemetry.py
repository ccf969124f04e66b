"""Spans go out over OTLP/HTTP when the standard OTEL_EXPORTER_OTLP_ENDPOINT is set, beside the JSON-lines
file. The collector is our own: a standard-library HTTP server on loopback."""

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from infra.ports import LOOPBACK
from services.telemetry import tracer_provider
from tests.http_serving import serving


class Collector(ThreadingHTTPServer):
    """Records each POST as (path, content type, body) and answers as an OTLP/HTTP collector does."""

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), _Receive)
        self.received: list[tuple[str, str, bytes]] = []

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}"


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers["Content-Type"], body))
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[Collector]:
    with serving(Collector()) as server:
        yield server


def test_spans_go_to_the_otlp_endpoint_and_the_file(
    collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    trace_file = tmp_path / "spans.jsonl"
    provider = tracer_provider("ingest", trace_file)
    with provider.get_tracer("test").start_as_current_span("i2v.work.ingest process") as span:
        trace_id = f"{span.get_span_context().trace_id:032x}"
    provider.shutdown()  # flushes the batch

    assert [(path, kind) for path, kind, _ in collector.received] == [("/v1/traces", "application/x-protobuf")]
    request = ExportTraceServiceRequest.FromString(collector.received[0][2])
    [resource_spans] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
    [sent] = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert (service, sent.name, sent.trace_id.hex()) == ("i2v-ingest", "i2v.work.ingest process", trace_id)
    # The JSON-lines file the tests read is still written.
    [line] = trace_file.read_text().splitlines()
    assert json.loads(line)["trace_id"] == trace_id
