"""A fault-injecting HTTP proxy in front of the moto server, for the object-storage fault tests.

Owns: a thread-based HTTP/1.1 forwarder on 127.0.0.1 (a free port) that passes every request to
the upstream server unchanged (the Host header too: moto does not check signatures) and, when a
fault matches a request, answers it itself instead: 503 SlowDown or 500 InternalError (an S3 XML
error body), 403 InvalidAccessKeyId or SignatureDoesNotMatch, or a connection closed without an
answer (`drop`: FIN) or reset (`reset`: RST). A faulted request never reaches the server, but for
`lost`: the server does it, and its answer is lost (the connection closed instead). It logs every
request with the fault it got. Must not touch: pytest, snakebatch.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# kind -> (status, S3 error code, message); drop and reset send nothing.
ANSWERS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "denied": (403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."),
    "signature": (403, "SignatureDoesNotMatch",
                  "The request signature we calculated does not match the signature you provided."),
}
KINDS = (*ANSWERS, "drop", "reset", "lost")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Fault:
    """Answer `count` requests (None: every one) whose method is `method` (None: any) and whose
    path (bucket and key, with the query) matches the regular expression `path`, with `kind`."""

    kind: str
    count: int | None = None
    method: str | None = None
    path: str | None = None
    hits: int = 0

    def takes(self, method: str, path: str) -> bool:
        return ((self.count is None or self.hits < self.count)
                and (self.method is None or method == self.method)
                and (self.path is None or re.search(self.path, path) is not None))


@dataclass
class Request:
    """One request the proxy saw: what it got (the fault's kind, or the server's status)."""

    method: str
    path: str
    fault: str | None
    status: int | None = None
    headers: dict = field(default_factory=dict)


class FaultProxy:
    """The proxy, serving from construction until `close()`; `endpoint` is its URL."""

    def __init__(self, upstream: str):
        split = urlsplit(upstream)
        self.upstream = (split.hostname, split.port)
        self.faults: list[Fault] = []
        self.log: list[Request] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def inject(self, kind: str, count: int | None = None, method: str | None = None, path: str | None = None) -> Fault:
        assert kind in KINDS, kind
        fault = Fault(kind, count, method, path)
        with self.lock:
            self.faults.append(fault)
        return fault

    def heal(self) -> None:
        """No more faults."""
        with self.lock:
            self.faults.clear()

    def choose(self, method: str, path: str, headers: dict) -> Request:
        with self.lock:
            fault = next((f for f in self.faults if f.takes(method, path)), None)
            if fault is not None:
                fault.hits += 1
            request = Request(method, path, fault.kind if fault else None, headers=headers)
            self.log.append(request)
        return request

    def requests(self, method: str | None = None, path: str | None = None, faulted: bool | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.log if (method is None or r.method == method)
                    and (path is None or re.search(path, r.path)) and (faulted is None or (r.fault is not None) == faulted)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _error_body(code: str, message: str, path: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Resource>{path}</Resource><RequestId>faultproxy</RequestId></Error>").encode()


def _handler(proxy: FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the store's client expects
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self):
            body = self._body()
            request = proxy.choose(self.command, self.path, dict(self.headers))
            if request.fault in ("drop", "reset", "lost"):
                if request.fault == "lost":
                    request.status = self._forward(body)[0]
                if request.fault == "reset":  # SO_LINGER 0: the close sends RST
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:  # FIN
                    self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if request.fault is not None:
                status, code, message = ANSWERS[request.fault]
                self._answer(status, {"Content-Type": "application/xml"}, _error_body(code, message, self.path))
                return
            status, headers, data = self._forward(body)
            request.status = status
            self._answer(status, headers, data)

        def _forward(self, body: bytes) -> tuple[int, dict, bytes]:
            """The upstream server's answer to this request: (status, headers, body)."""
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP and k.lower() != "content-length"}
                upstream.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None,
                                 headers=headers)
                response = upstream.getresponse()
                data = response.read()
                # A HEAD's Content-Length is the object's; any other is the body's.
                return response.status, {k: v for k, v in response.getheaders() if k.lower() not in _HOP
                                         and (self.command == "HEAD" or k.lower() != "content-length")}, data
            finally:
                upstream.close()

        def _answer(self, status: int, headers: dict, data: bytes) -> None:
            self.send_response(status)
            if not any(key.lower() == "content-length" for key in headers):
                headers["Content-Length"] = str(len(data))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
