"""The secrets matrix: secrets with quotes, backslashes, newlines, unicode, $, % and {}
go through Terraform (outputs sensitive and not, a resource input, an error), pytest
(a failed assertion, printed output), an HTTP check against a server that echoes them,
records, JUnit and the status page. No rendering of any of them may appear anywhere:
raw, any line of it, JSON/HCL-escaped, Python repr, URL-encoded, base64, HTML-escaped."""
from __future__ import annotations

import base64
import html
import json
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List, Tuple
from urllib.parse import quote, quote_plus

import pytest

from conftest import run_envpipe

SECRETS = [
    'pw-Kx7"quote\\back-42',
    "first-line-Kx7\nsecond-line-Kx8",
    "ünïcødé-Kx7-€-42",
    "dollar-$HOME-${var.x}-pct-100%-%{if}-{}-{{x}}-42",
]

MAIN_TF = """\
variable "db_password" { type = string }
variable "port" { type = string }
variable "fail" {
  type    = string
  default = "no"
}
resource "terraform_data" "db" {
  input = var.db_password
  lifecycle {
    precondition {
      condition     = var.fail == "no"
      error_message = "cannot log in with ${var.db_password}"
    }
  }
}
output "plain" { value = "pw=${var.db_password}" }
output "secret" {
  value     = var.db_password
  sensitive = true
}
output "encoded" { value = base64encode(var.db_password) }
output "json" { value = jsonencode({ pw = var.db_password }) }
output "health" { value = "http://127.0.0.1:${var.port}/health?pw=${urlencode(var.db_password)}" }
"""

SUITE = """\
import os

def test_login():
    password = os.environ["DB_PASSWORD"]
    print("trying", password, repr(password))
    assert password == "wrong", f"login refused for {password!r}"
"""


class EchoingServer(BaseHTTPRequestHandler):
    """A health check that fails and echoes what it was sent, secret included."""

    def do_GET(self) -> None:
        body = f"unhealthy: {self.path}".encode()
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def echoing_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def renderings(secret: str) -> List[Tuple[str, str]]:
    """Written independently of envpipe's redactor: each way a tool may print ``secret``."""
    forms = [("raw", secret), ("json", json.dumps(secret)[1:-1]),
             ("json-unicode", json.dumps(secret, ensure_ascii=False)[1:-1]), ("repr", repr(secret)[1:-1]),
             ("url", quote(secret, safe="")), ("url-plus", quote_plus(secret)),
             ("base64", base64.b64encode(secret.encode()).decode().rstrip("=")[:-2]),
             ("html", html.escape(secret))]
    forms += [(f"line {n}", line) for n, line in enumerate(secret.splitlines()) if len(secret.splitlines()) > 1]
    return forms


def leaks(secret: str, text: str, where: str) -> List[str]:
    return [f"{how} rendering in {where}" for how, form in renderings(secret) if form in text]


@pytest.mark.parametrize("secret", SECRETS, ids=["quotes-backslash", "newline", "unicode", "dollar-percent-braces"])
def test_no_rendering_of_a_secret_appears_anywhere(tmp_path: Path, echoing_server: int, secret: str) -> None:
    root = tmp_path / "work"
    (root / "infra" / "tests").mkdir(parents=True)
    (root / "envpipe.yml").write_text(textwrap.dedent(f"""\
        project: our-project
        source: infra
        repository: {tmp_path / 'repository'}
        secrets: [DB_PASSWORD]
        environments:
          - name: test
        tests:
          path: tests/
          http:
            - url: "{{outputs[health]}}"
              status: 200
              within: 1
        """))
    (root / "infra" / "main.tf").write_text(MAIN_TF)
    (root / "infra" / "tests" / "test_login.py").write_text(SUITE)
    env = {"DB_PASSWORD": secret, "TF_VAR_db_password": secret, "TF_VAR_port": str(echoing_server)}

    printed = []

    def envpipe(*args: str, check: int, extra=None) -> None:
        result = run_envpipe(args, cwd=root, env={**env, **(extra or {})}, check=check, timeout=300)
        printed.append((" ".join(args), result.stdout + result.stderr))

    envpipe("publish", "--version", "1.0.1", check=0)
    envpipe("promote", "1.0.1", "--to", "test", check=0)
    envpipe("plan", "test", check=0)
    envpipe("apply", "test", check=0)
    envpipe("apply", "test", "--json", check=0)
    envpipe("apply", "test", check=1, extra={"TF_VAR_fail": "yes"})  # Terraform's error quotes the secret
    report = tmp_path / "junit.xml"
    envpipe("test", "test", "--junit", str(report), check=1)
    page = tmp_path / "status.html"
    envpipe("status", "--html", str(page), check=0)
    envpipe("status", "--json", check=0)
    envpipe("history", "test", "--json", check=0)

    found = []
    for command, text in printed:
        found += leaks(secret, text, f"'envpipe {command}' output")
    for path in sorted((tmp_path / "repository" / ".envpipe").rglob("*")):
        if path.is_file() and "state" not in path.relative_to(tmp_path / "repository").parts:
            found += leaks(secret, path.read_text(), str(path.relative_to(tmp_path)))
    found += leaks(secret, report.read_text(), "the JUnit report")
    found += leaks(secret, page.read_text(), "the status page")
    assert found == []
    # and the checks did see the secret where they were meant to fail on it
    assert "****" in report.read_text() and "login refused for" in report.read_text()
    assert any("cannot log in with ****" in text for _, text in printed)
