"""OpenTelemetry setup: one tracer provider per process; trace context rides in message headers.

Spans go to a JSON-lines file (``I2V_TRACE_FILE``, what the tests read) and, when the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, to that collector over
OTLP/HTTP in batches; the exporter reads the other standard ``OTEL_EXPORTER_OTLP_*`` variables itself.
"""

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult

OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON object per finished span to a file; several processes may share the file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            context = span.get_span_context()
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "service": span.resource.attributes.get("service.name"),
                        "trace_id": f"{context.trace_id:032x}" if context else None,
                        "span_id": f"{context.span_id:016x}" if context else None,
                        "parent_id": f"{parent.span_id:016x}" if parent else None,
                        "start_ns": span.start_time,
                        "end_ns": span.end_time,
                        "attributes": {k: str(v) for k, v in (span.attributes or {}).items()},
                    }
                )
            )
        # One write per batch with O_APPEND keeps lines from different processes whole.
        with self._lock, self._path.open("a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def tracer_provider(service: str, trace_file: Path | None) -> TracerProvider:
    """A provider named after the service; exports to ``trace_file`` when set and to the OTLP collector the
    environment names, else keeps spans local. ``shutdown()`` flushes what is batched."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"i2v-{service}"}))
    if trace_file is not None:
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(trace_file)))
    # os.environ, not Settings: these are OpenTelemetry's standard variables, and its exporter reads them there.
    if any(os.environ.get(name) for name in OTLP_ENDPOINT_VARIABLES):
        # Imported only when used: it brings protobuf and an HTTP client with it.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Batched: a collector that is slow or away must not hold up the stage that ended a span.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
