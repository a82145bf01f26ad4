"""An OTLP/HTTP protobuf receiver that decodes the spans celgate exports.

The protocol tests read spans here rather than from `otlpEndpoint: stdout` because this
goes through celgate's real exporter (the protobuf a collector gets) and keeps the
attribute types (int, double, bool, arrays) that the stdout dump prints as text. It
decodes with the pinned `opentelemetry-proto` package, answers every export with an
empty `ExportTraceServiceResponse`, and keeps each span as a plain dict.
"""

from __future__ import annotations

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def decode(body: bytes) -> list[dict[str, Any]]:
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    spans = []
    for rs in req.resource_spans:
        resource = {kv.key: value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append({
                    "name": s.name,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "kind": s.kind,
                    "status": s.status.code,  # 0 unset, 1 ok, 2 error
                    "attributes": {kv.key: value(kv.value) for kv in s.attributes},
                    "resource": resource,
                })
    return spans


class OtlpSink:
    """Listens on 127.0.0.1 (free port); `endpoint` is the base URL for celgate."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                try:
                    spans = decode(body)
                except Exception as e:  # a decode failure is a test failure, not a crash
                    with sink._lock:
                        sink.errors.append(f"{self.path}: {e}")
                    spans = []
                with sink._lock:
                    sink.spans.extend(spans)
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def by_trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def wait(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Every span so far once there are at least `count` (or when time is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.spans) >= count:
                    break
            time.sleep(0.05)
        with self._lock:
            return list(self.spans)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
