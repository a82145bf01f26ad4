"""A recording reverse proxy: what a backend really received.

`celgate upstream` keeps no journal a test in another process can read, so the e2e
tests put this tap between celgate and the scripted upstream (or between a client and
the upstream, for the direct comparison runs): it records every request (method, path
with query, headers in order, body) and relays it unchanged, streaming the answer back
chunk by chunk as it arrives (SSE stays SSE; a gzip body stays gzip). Without a target
it answers every request with a 400 in OpenAI's error shape (a status no client
retries), which is enough to record what a client sends first.

Only the hop-by-hop headers are dropped on the way (RFC 9110 section 7.6.1), and `Host`
is set to the target's.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "content-length",
}

# Header names whose values are secrets, masked when a recording is saved.
SECRET_HEADERS = {"authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie",
                  "proxy-authorization"}


@dataclass
class Recorded:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    # The answer as the tap relayed it (filled in while it streams).
    status: int = 0
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""

    def header(self, name: str) -> list[str]:
        """Every value of a header (case-insensitive name), in order of arrival."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)

    def masked(self) -> dict[str, Any]:
        """A JSON-ready copy with every secret header value and `?key=` masked."""
        headers = [[k, mask(v) if k.lower() in SECRET_HEADERS else v] for k, v in self.headers]
        split = urllib.parse.urlsplit(self.path)
        query = [(k, mask(v) if k == "key" else v)
                 for k, v in urllib.parse.parse_qsl(split.query, keep_blank_values=True)]
        path = split.path + ("?" + urllib.parse.urlencode(query) if query else "")
        try:
            body: Any = self.json()
        except ValueError:
            body = self.body.decode("utf-8", "replace")
        return {"method": self.method, "path": path, "headers": headers, "body": body}


def mask(value: str) -> str:
    """`Bearer sk-abc...` -> `Bearer ***`: the scheme stays, the secret goes."""
    scheme, _, rest = value.partition(" ")
    return f"{scheme} ***" if rest and scheme.lower() in ("bearer", "basic") else "***"


class Tap:
    """`Tap(target)` listens on 127.0.0.1 (free port) until `close()`."""

    def __init__(self, target: Optional[str]) -> None:
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._target = urllib.parse.urlsplit(target) if target else None
        tap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                tap._relay(self)

            do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def take(self) -> list[Recorded]:
        """The requests recorded since the last `take()`."""
        with self._lock:
            out, self.requests = self.requests, []
        return out

    def _relay(self, h: BaseHTTPRequestHandler) -> None:
        body = read_body(h)
        rec = Recorded(h.command, h.path, list(h.headers.items()), body)
        with self._lock:
            self.requests.append(rec)
        if self._target is None:
            rec.status = 400
            send_whole(h, 400, b'{"error":{"message":"recording tap: no backend",'
                               b'"type":"invalid_request_error","code":null}}')
            return
        conn = http.client.HTTPConnection(self._target.hostname, self._target.port, timeout=120)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Host"] = self._target.netloc
            conn.request(h.command, h.path, body=body, headers=headers)
            resp = conn.getresponse()
            relay_response(h, resp, rec)
        except (OSError, http.client.HTTPException) as e:
            send_whole(h, 502, json.dumps({"error": {"message": f"tap: {e}"}}).encode())
        finally:
            conn.close()


def read_body(h: BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += h.rfile.read(size)
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def send_whole(h: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def relay_response(h: BaseHTTPRequestHandler, resp: http.client.HTTPResponse,
                   rec: Recorded) -> None:
    """Status and headers, then the body as it arrives (chunked when it had no length)."""
    rec.status, rec.response_headers = resp.status, resp.getheaders()
    length = resp.getheader("Content-Length")
    h.send_response(resp.status, resp.reason)
    for k, v in resp.getheaders():
        if k.lower() not in HOP_BY_HOP:
            h.send_header(k, v)
    if length is not None:
        h.send_header("Content-Length", length)
    else:
        h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        rec.response_body += chunk
        h.wfile.write(chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
        h.wfile.flush()
    if length is None:
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
