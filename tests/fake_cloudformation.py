"""A CloudFormation endpoint in front of moto's server, for what moto cannot do.

moto has no drift detection, and never answers like a broken proxy or an
overloaded load balancer does. This endpoint forwards every request to moto's
server except the actions a test gives an answer for: those get that answer (an
AWS XML document, an HTML error page, an empty 503) instead. It is a real HTTP
server, so ``envpipe`` run as a subprocess talks to it through
``AWS_ENDPOINT_URL_CLOUDFORMATION`` like to any endpoint.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Mapping, Union
from urllib.parse import parse_qs

import requests

XMLNS = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
# Request headers passed on to moto (the signature is moto's business, not ours).
FORWARDED = ("Content-Type", "Authorization", "X-Amz-Date", "X-Amz-Security-Token", "User-Agent")


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    content_type: str = "text/xml"


def aws_response(action: str, result: str) -> Answer:
    """A successful Query-protocol answer to ``action`` whose result holds ``result`` (XML)."""
    return Answer(200, f'<{action}Response xmlns="{XMLNS}"><{action}Result>{result}</{action}Result>'
                       f"<ResponseMetadata><RequestId>fake-1</RequestId></ResponseMetadata></{action}Response>")


def aws_error(code: str, message: str, status: int = 400) -> Answer:
    return Answer(status, f'<ErrorResponse xmlns="{XMLNS}"><Error><Type>Sender</Type><Code>{code}</Code>'
                          f"<Message>{message}</Message></Error><RequestId>fake-2</RequestId></ErrorResponse>")


HTML_ERROR_PAGE = Answer(500, "<html><head><title>500 Internal Server Error</title></head><body><center>"
                              "<h1>500 Internal Server Error</h1></center><hr><center>nginx</center></body></html>",
                         "text/html")
EMPTY_503 = Answer(503, "", "text/plain")

Reply = Union[Answer, Callable[[Mapping[str, str]], Answer]]


class FakeCloudFormation:
    """``answers`` maps an action name (``DetectStackDrift``) to its Answer, or to a
    function of the request's parameters returning one; ``calls`` lists the actions
    seen, in order."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.answers: Dict[str, Reply] = {}
        self.calls: List[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parameters = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                action = parameters.get("Action", "")
                fake.calls.append(action)
                reply = fake.answers.get(action)
                if reply is None:
                    headers = {name: self.headers[name] for name in FORWARDED if self.headers.get(name)}
                    upstream = requests.post(fake.upstream + self.path, data=body, headers=headers, timeout=60)
                    answer = Answer(upstream.status_code, upstream.text,
                                    upstream.headers.get("Content-Type", "text/xml"))
                else:
                    answer = reply(parameters) if callable(reply) else reply
                data = answer.body.encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeCloudFormation":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
