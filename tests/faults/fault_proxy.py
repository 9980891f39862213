"""A small fault-injecting HTTP proxy for S3 (moto's server behind it).

Rules say which requests fail and how: by method and a regular expression on the
object key, for a number of times. The faults are those a real S3 path shows:

* ``slowdown`` — 503 with S3's SlowDown error body (throttling), not forwarded;
* ``internal`` — 500 with S3's InternalError body, not forwarded;
* ``reset`` — the connection is reset before the request is forwarded;
* ``lose`` — the request is forwarded (S3 did it) and the connection is reset
  instead of the answer: the client cannot tell whether it happened;
* ``truncate`` — forwarded, and the answer's body is cut off half-way (a read
  that fails mid-stream).
"""
from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional, Tuple
from urllib.parse import unquote, urlparse

import pytest

FAULTS = ("slowdown", "internal", "reset", "lose", "truncate")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate", "content-length"}
_ERROR_BODY = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
               '<RequestId>FAULTPROXY</RequestId></Error>')


@dataclass
class Rule:
    method: str
    key: "re.Pattern[str]"
    fault: str
    times: int = 1
    hits: List[str] = field(default_factory=list)

    def matches(self, method: str, key: str) -> bool:
        return self.times > 0 and method == self.method and self.key.search(key) is not None


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self.upstream: Tuple[str, int] = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.rules: List[Rule] = []
        self.requests: List[Tuple[str, str, Optional[str]]] = []  # (method, key, fault applied)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: the test's own output matters
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def add(self, method: str, key_pattern: str, fault: str, times: int = 1) -> Rule:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: one of {FAULTS}")
        rule = Rule(method, re.compile(key_pattern), fault, times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def faults_applied(self) -> List[Tuple[str, str, str]]:
        return [(m, k, f) for m, k, f in self.requests if f]

    def _take_fault(self, method: str, key: str) -> Optional[str]:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, key):
                    rule.times -= 1
                    rule.hits.append(key)
                    self.requests.append((method, key, rule.fault))
                    return rule.fault
            self.requests.append((method, key, None))
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        method = handler.command
        key = unquote(urlparse(handler.path).path)
        body = _read_body(handler)
        fault = self._take_fault(method, key)
        if fault in ("slowdown", "internal"):
            status, code, message = ((503, "SlowDown", "Please reduce your request rate.") if fault == "slowdown"
                                     else (500, "InternalError", "We encountered an internal error."))
            payload = _ERROR_BODY.format(code=code, message=message).encode()
            handler.send_response(status)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        if fault == "reset":
            _reset(handler)
            return
        status, headers, payload = self._forward(handler, method, body)
        if fault == "lose":
            _reset(handler)
            return
        handler.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                handler.send_header(name, value)
        length = dict((k.lower(), v) for k, v in headers).get("content-length", "0")
        # HEAD reports the object's length without sending it.
        handler.send_header("Content-Length", length if method == "HEAD" else str(len(payload)))
        handler.end_headers()
        if method == "HEAD":
            return
        if fault == "truncate":
            handler.wfile.write(payload[: len(payload) // 2])
            handler.wfile.flush()
            _reset(handler)
            return
        handler.wfile.write(payload)

    def _forward(self, handler: BaseHTTPRequestHandler, method: str, body: bytes):
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            connection.request(method, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read() if method != "HEAD" else b""
            return response.status, response.getheaders(), payload
        finally:
            connection.close()


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline().strip():  # trailers
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dropped connection looks to the client."""
    handler.close_connection = True
    try:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()
    except OSError:
        pass


@pytest.fixture
def proxy(s3_bucket, moto_server, monkeypatch):
    """The fault proxy in front of a reset moto server, reached through AWS_ENDPOINT_URL."""
    with FaultProxy(moto_server) as faults:
        monkeypatch.setenv("AWS_ENDPOINT_URL", faults.url)
        yield faults
