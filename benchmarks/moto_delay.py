"""A moto S3 server for benchmarks: counts requests by kind and can add latency.

Run it as its own process so its CPU use is not mixed with the benchmark's::

    python benchmarks/moto_delay.py --port 0 --delay-ms 30
    # prints "http://127.0.0.1:PORT" on stdout once it is listening

Every S3 request first sleeps ``delay`` (real S3 answers small requests in tens
of milliseconds; moto on loopback answers in about one, which rewards CPU
efficiency instead of the concurrency that matters against real S3), then is
counted by kind (PUT, GET, LIST, COPY, ...) and handed to moto. The werkzeug
server is threaded, so delays of concurrent requests overlap as they would on
S3.

Control requests (not counted, not delayed):

* ``GET  /_bench/counts`` -> ``{"total": n, "by_kind": {...}}``
* ``POST /_bench/counts`` resets the counts (and returns them first)
* ``POST /_bench/delay?ms=30`` sets the per-request delay
* ``POST /_bench/fill`` with a JSON body ``{"bucket": b, "objects": [[key, text], ...]}``
  stores the objects straight into moto's backend, uncounted: a history of 100,000
  records in seconds instead of minutes of PUTs
* ``POST /moto-api/reset`` is moto's own: forget every bucket
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable
from urllib.parse import parse_qs

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

CONTROL_PREFIX = "/_bench/"


def request_kind(environ: Dict[str, Any]) -> str:
    """The S3 operation a path-style request stands for, coarse enough to compare tools."""
    method = environ["REQUEST_METHOD"]
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    has_key = "/" in environ.get("PATH_INFO", "").lstrip("/")
    if environ.get("PATH_INFO", "").startswith("/moto-api"):
        return "MOTO_API"
    if method == "HEAD":
        return "HEAD"
    if method == "DELETE":
        return "ABORT_MULTIPART" if "uploadId" in query else "DELETE"
    if method == "POST":
        if "delete" in query:
            return "DELETE_BATCH"
        if "uploads" in query:
            return "CREATE_MULTIPART"
        if "uploadId" in query:
            return "COMPLETE_MULTIPART"
        return "POST"
    if method == "PUT":
        copy = "HTTP_X_AMZ_COPY_SOURCE" in environ
        if "partNumber" in query:
            return "UPLOAD_PART_COPY" if copy else "UPLOAD_PART"
        if copy:
            return "COPY"
        return "PUT" if has_key else "CREATE_BUCKET"
    if method == "GET":
        return "GET" if has_key else "LIST"
    return method


def fill(request: Dict[str, Any]) -> Dict[str, Any]:
    """Put ``request["objects"]`` into ``request["bucket"]`` through moto's own backend."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key, text in request["objects"]:
        backend.put_object(request["bucket"], key, text.encode())
    return {"stored": len(request["objects"])}


class CountingDelayApp:
    """WSGI middleware in front of moto: delay, count, pass on."""

    def __init__(self, app: Callable, delay_seconds: float = 0.0) -> None:
        self.app = app
        self.delay = delay_seconds
        self._lock = threading.Lock()
        self._counts: collections.Counter = collections.Counter()

    def counts(self, reset: bool = False) -> Dict[str, Any]:
        with self._lock:
            snapshot = dict(self._counts)
            if reset:
                self._counts.clear()
        snapshot.pop("MOTO_API", None)
        return {"total": sum(snapshot.values()), "by_kind": dict(sorted(snapshot.items()))}

    def _control(self, environ: Dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ["PATH_INFO"][len(CONTROL_PREFIX):]
        method = environ["REQUEST_METHOD"]
        if path == "counts":
            body = self.counts(reset=method == "POST")
        elif path == "fill" and method == "POST":
            body = fill(json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))))
        elif path == "delay" and method == "POST":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            self.delay = float(query.get("ms", ["0"])[0]) / 1000.0
            body = {"delay_ms": self.delay * 1000.0}
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"unknown control path\n"]
        data = json.dumps(body).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(CONTROL_PREFIX):
            return self._control(environ, start_response)
        kind = request_kind(environ)
        with self._lock:
            self._counts[kind] += 1
        if self.delay and kind != "MOTO_API":
            time.sleep(self.delay)
        return self.app(environ, start_response)


def main(argv: Iterable[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="sleep this long before each S3 request")
    args = parser.parse_args(list(argv) or None)
    # werkzeug logs every request to stderr by default: slow, and noise here.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = CountingDelayApp(DomainDispatcherApplication(create_backend_app), args.delay_ms / 1000.0)
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    host, port = server.server_address[:2]
    print(f"http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
