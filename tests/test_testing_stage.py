"""envpipe test: the pytest suite and HTTP checks against an applied environment,
the JUnit report, the record, and the promotion gate that reads it."""
from __future__ import annotations

import json
import textwrap
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest
from conftest import TESTED_TESTS, run_envpipe, tested_config

from envpipe_agent.errors import UsageError
from envpipe_agent.junit import ERROR, FAILED, PASSED, SKIPPED, Case, Suite, read_report, render_report
from envpipe_agent.records import history, latest_test
from envpipe_agent.repository import open_repository
from envpipe_agent.stages.testing import output_variables, render_url

MAIN_TF = """\
variable "envpipe_environment" { type = string }
variable "envpipe_version" { type = string }
variable "endpoint" {
  type    = string
  default = "http://127.0.0.1:9"
}
resource "terraform_data" "app" {
  input = { name = "app-${var.envpipe_environment}", version = var.envpipe_version }
}
output "name" { value = terraform_data.app.output.name }
output "endpoint" { value = var.endpoint }
output "sizes" { value = { small = 1, large = 3 } }
output "token" {
  value     = "s3cr3t-${var.envpipe_environment}"
  sensitive = true
}
"""

SUITE_CHECKING_OUTPUTS = """\
import json, os

def test_outputs_file_holds_the_non_sensitive_outputs():
    outputs = json.load(open(os.environ["ENVPIPE_OUTPUTS"]))
    assert outputs == {"name": "app-test", "endpoint": "http://127.0.0.1:9", "sizes": {"small": 1, "large": 3}}

def test_environment_version_and_output_variables_are_set():
    assert os.environ["ENVPIPE_ENVIRONMENT"] == "test"
    assert os.environ["ENVPIPE_VERSION"] == "1.0.1"
    assert os.environ["ENVPIPE_OUTPUT_NAME"] == "app-test"
    assert json.loads(os.environ["ENVPIPE_OUTPUT_SIZES"]) == {"small": 1, "large": 3}
    assert "ENVPIPE_OUTPUT_TOKEN" not in os.environ
"""

FAILING_SUITE = """\
def test_passes():
    assert True

def test_endpoint_answers():
    assert 1 + 1 == 3, "the endpoint did not answer"
"""


class WorkingCopy:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.repository = root.parent / "repository"

    def configure(self, tests: str = TESTED_TESTS, test_vars: str = "") -> None:
        (self.root / "envpipe.yml").write_text(tested_config(self.repository, tests, test_vars))

    def write(self, relative: str, content: str) -> None:
        path = self.root / "infra" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))

    def envpipe(self, *args: str, check: Optional[int] = None):
        return run_envpipe(args, cwd=self.root, check=check)

    def deploy(self, version: str, environment: str = "test") -> None:
        """Publish, promote and apply ``version`` to ``environment`` (with real Terraform)."""
        self.envpipe("publish", "--version", version, check=0)
        self.envpipe("promote", version, "--to", environment, check=0)
        self.envpipe("apply", environment, check=0)

    def latest_test(self, environment: str, version: str) -> Optional[Dict]:
        return latest_test(open_repository(str(self.repository), {}), environment, version)


@pytest.fixture
def copy(tmp_path: Path) -> WorkingCopy:
    working = WorkingCopy(tmp_path / "work")
    (working.root / "infra").mkdir(parents=True)
    working.configure()
    working.write("main.tf", MAIN_TF)
    return working


def junit_cases(path: Path) -> Dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    return {f"{case.get('classname')}::{case.get('name')}": case for case in root.iter("testcase")}


def test_passing_suite_exits_0_gets_the_outputs_and_writes_one_junit_report(copy: WorkingCopy, tmp_path: Path) -> None:
    copy.write("tests/test_outputs.py", SUITE_CHECKING_OUTPUTS)
    copy.deploy("1.0.1")

    report = tmp_path / "reports" / "test.xml"
    result = copy.envpipe("test", "test", "--junit", str(report), "--json", check=0)

    assert json.loads(result.stdout)["result"] == "passed"
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("2", "0", "0")
    assert set(junit_cases(report)) == {
        "test.tests.test_outputs::test_outputs_file_holds_the_non_sensitive_outputs",
        "test.tests.test_outputs::test_environment_version_and_output_variables_are_set",
    }
    record = copy.latest_test("test", "1.0.1")
    assert (record["result"], record["tests"], record["failures"]) == ("passed", 2, 0)
    assert record["suites"] == {"pytest": {"tests": 2, "failures": 0, "errors": 0, "skipped": 0}}
    assert "s3cr3t" not in result.stdout + result.stderr


def test_a_junit_report_that_cannot_be_written_is_refused_before_the_tests_run(copy: WorkingCopy,
                                                                             tmp_path: Path) -> None:
    copy.write("tests/test_outputs.py", SUITE_CHECKING_OUTPUTS)
    copy.deploy("1.0.1")
    (tmp_path / "a-file").write_text("")

    for report, complaint in ((tmp_path, "a folder; give the file"),
                              (tmp_path / "a-file" / "test.xml", "cannot create its folder")):
        result = copy.envpipe("test", "test", "--junit", str(report), check=2)
        assert complaint in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert copy.latest_test("test", "1.0.1") is None


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a folder no file can be created in: /proc")
def test_a_junit_report_that_fails_to_write_after_the_tests_exits_1_with_the_result_recorded(
        copy: WorkingCopy) -> None:
    copy.write("tests/test_outputs.py", SUITE_CHECKING_OUTPUTS)
    copy.deploy("1.0.1")

    result = copy.envpipe("test", "test", "--junit", "/proc/envpipe-report.xml", check=1)

    assert "the JUnit report could not be written to /proc/envpipe-report.xml" in result.stderr
    assert "internal error" not in result.stderr
    assert copy.latest_test("test", "1.0.1")["result"] == "passed"


def test_failing_suite_exits_1_names_the_failure_and_records_it(copy: WorkingCopy, tmp_path: Path) -> None:
    copy.write("tests/test_service.py", FAILING_SUITE)
    copy.deploy("1.0.1")

    report = tmp_path / "test.xml"
    result = copy.envpipe("test", "test", "--junit", str(report), check=1)

    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("envpipe: error: test: version 1.0.1 failed its tests")
    assert "test.tests.test_service.test_endpoint_answers" in last_line
    cases = junit_cases(report)
    failure = cases["test.tests.test_service::test_endpoint_answers"].find("failure")
    assert failure is not None and "the endpoint did not answer" in failure.get("message")
    assert cases["test.tests.test_service::test_passes"].find("failure") is None
    record = copy.latest_test("test", "1.0.1")
    assert (record["result"], record["tests"], record["failures"]) == ("failed", 2, 1)
    assert record["failed"] == ["test.tests.test_service.test_endpoint_answers"]


def test_suite_that_collects_no_tests_fails_instead_of_passing(copy: WorkingCopy) -> None:
    copy.write("tests/helpers.py", "VALUE = 1\n")
    copy.deploy("1.0.1")

    copy.envpipe("test", "test", check=1)

    record = copy.latest_test("test", "1.0.1")
    assert (record["result"], record["errors"]) == ("failed", 1)


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        self.server.requests += 1  # type: ignore[attr-defined]
        status = self.server.status  # type: ignore[attr-defined]
        body = b"service ok" if status == 200 else b"broken"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    server.status, server.requests = 200, 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_http_check_passes_on_200_then_fails_within_its_time_when_the_server_answers_500(
        copy: WorkingCopy, health_server: ThreadingHTTPServer, tmp_path: Path) -> None:
    port = health_server.server_address[1]
    copy.configure(tests='tests:\n  http:\n    - url: "{outputs[endpoint]}/health?env={environment}"\n'
                         '      status: 200\n      body: service ok\n      within: 2\n',
                   test_vars=f'    vars: {{endpoint: "http://127.0.0.1:{port}"}}\n')
    copy.deploy("1.0.1")
    copy.envpipe("test", "test", check=0)
    assert copy.latest_test("test", "1.0.1")["suites"] == {"http": {"tests": 1, "failures": 0, "errors": 0,
                                                                     "skipped": 0}}

    health_server.status = 500  # type: ignore[attr-defined]
    health_server.requests = 0  # type: ignore[attr-defined]
    report = tmp_path / "http.xml"
    copy.envpipe("test", "test", "--junit", str(report), check=1)

    (case,) = junit_cases(report).values()
    message = case.find("failure").get("message")
    assert f"GET http://127.0.0.1:{port}/health?env=test: expected status 200" in message
    assert "within 2s" in message and "the last got status 500" in message
    assert health_server.requests > 1  # retried until `within` ran out
    assert copy.latest_test("test", "1.0.1")["result"] == "failed"


def test_pytest_suite_and_http_checks_share_one_report(copy: WorkingCopy, health_server: ThreadingHTTPServer,
                                                       tmp_path: Path) -> None:
    port = health_server.server_address[1]
    copy.configure(tests=f'tests:\n  path: tests/\n  http:\n    - url: "http://127.0.0.1:{port}/"\n      within: 0\n')
    copy.write("tests/test_service.py", FAILING_SUITE)
    copy.deploy("1.0.1")

    report = tmp_path / "all.xml"
    copy.envpipe("test", "test", "--junit", str(report), check=1)

    suites = read_report(report)
    assert [(s.name, s.counts()["tests"], s.counts()["failures"]) for s in suites] == \
        [("test.pytest", 2, 1), ("test.http", 1, 0)]
    assert ET.parse(report).getroot().get("tests") == "3"


def test_suite_runs_with_the_environments_assumed_role(copy: WorkingCopy, s3) -> None:
    copy.configure(test_vars="    role_arn: arn:aws:iam::123456789012:role/deployer\n")
    copy.write("tests/test_role.py", """\
        import os

        def test_credentials_are_the_roles_not_the_agents():
            assert os.environ["AWS_ACCESS_KEY_ID"] != "testing"
            assert os.environ["AWS_SESSION_TOKEN"]
        """)
    copy.deploy("1.0.1")

    copy.envpipe("test", "test", check=0)

    assert copy.latest_test("test", "1.0.1")["result"] == "passed"


def test_nothing_configured_to_test_exits_2(copy: WorkingCopy) -> None:
    copy.configure(tests="")
    result = copy.envpipe("test", "test", check=2)
    assert "nothing to test" in result.stderr


def test_testing_an_environment_not_yet_applied_is_refused(copy: WorkingCopy) -> None:
    copy.write("tests/test_service.py", FAILING_SUITE)
    copy.envpipe("publish", "--version", "1.0.1", check=0)
    copy.envpipe("promote", "1.0.1", "--to", "test", check=0)

    result = copy.envpipe("test", "test", check=3)

    assert "run 'envpipe apply test'" in result.stderr
    assert copy.latest_test("test", "1.0.1") is None


def test_gate_refuses_an_untested_or_failed_version_and_force_with_reason_is_recorded(copy: WorkingCopy) -> None:
    copy.write("tests/test_service.py", FAILING_SUITE)
    copy.deploy("1.0.1")
    copy.envpipe("test", "test", check=1)

    refused = copy.envpipe("promote", "1.0.1", "--to", "staging", check=3)
    assert "has not passed its tests in test" in refused.stderr
    copy.envpipe("promote", "1.0.1", "--to", "staging", "--force", check=2)
    copy.envpipe("promote", "1.0.1", "--to", "staging", "--force", "--reason", "hotfix for INC-7", check=0)

    copy.write("tests/test_service.py", "def test_passes():\n    assert True\n")
    copy.deploy("1.0.2")
    copy.envpipe("test", "test", check=0)
    copy.envpipe("promote", "1.0.2", "--to", "staging", check=0)  # passed in test: no force needed
    refused = copy.envpipe("promote", "1.0.2", "--to", "production", "--approved-by", "erin", check=3)
    assert "has not passed its tests in staging" in refused.stderr  # approved, but not tested there yet

    records = list(history(open_repository(str(copy.repository), {}), "staging"))
    assert [(r["action"], r["version"], r["result"]) for r in records] == [
        ("promote", "1.0.2", "done"), ("promote", "1.0.1", "done"), ("override", "1.0.1", "forced"),
        ("promote", "1.0.1", "refused")]  # the refusal is on the record too, with its reason
    assert records[2]["reason"] == "hotfix for INC-7" and records[2]["gate"] == "test"
    assert records[1]["forced"] is True and records[0].get("forced") is None
    assert "has not passed its tests in test" in records[3]["error"]


def test_url_templates_allow_only_outputs_and_names() -> None:
    values = {"outputs": {"endpoint": "http://x", "port": 8080}, "environment": "test", "version": "1.0.1",
              "project": "p"}
    assert render_url("{outputs[endpoint]}:{outputs[port]}/{environment}/{version}", "url", values) == \
        "http://x:8080/test/1.0.1"
    for template in ("{outputs.__class__}", "{outputs[endpoint].__class__}", "{0}", "{secret}"):
        with pytest.raises(UsageError, match="unknown placeholder"):
            render_url(template, "tests.http[0].url", values)
    with pytest.raises(KeyError, match="output 'missing' is not among the outputs"):
        render_url("{outputs[missing]}/health", "url", values)


def test_output_variables_are_upper_case_with_non_strings_as_json() -> None:
    assert output_variables({"db-host": "db.internal", "ports": [80, 443], "count": 2}) == {
        "ENVPIPE_OUTPUT_DB_HOST": "db.internal", "ENVPIPE_OUTPUT_PORTS": "[80, 443]", "ENVPIPE_OUTPUT_COUNT": "2"}


def test_junit_report_round_trips_every_outcome(tmp_path: Path) -> None:
    cases = [Case("a", "pkg.mod", 0.5), Case("b", "pkg.mod", outcome=FAILED, message="boom", text="trace <&>"),
             Case("c", outcome=ERROR, message="setup"), Case("d", outcome=SKIPPED, message="later")]
    path = tmp_path / "report.xml"
    path.write_bytes(render_report("r", [Suite("s", cases, 1.0)]))

    (suite,) = read_report(path)
    assert [(c.name, c.outcome, c.message) for c in suite.cases] == [
        ("a", PASSED, ""), ("b", FAILED, "boom"), ("c", ERROR, "setup"), ("d", SKIPPED, "later")]
    assert suite.cases[1].text == "trace <&>"
    assert suite.counts() == {"tests": 4, "failures": 1, "errors": 1, "skipped": 1}


def test_the_suite_runs_in_a_private_work_folder_under_tmpdir_kept_with_keep_workdir(
        copy: WorkingCopy, tmp_path: Path) -> None:
    copy.write("tests/test_ok.py", "def test_ok():\n    assert True\n")
    copy.deploy("1.0.1")
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    result = run_envpipe(["test", "test", "--keep-workdir"], cwd=copy.root, env={"TMPDIR": str(scratch)}, check=0)

    [kept] = [path for path in scratch.iterdir() if path.is_dir()]
    assert str(kept) in result.stderr  # named in the warning that it was kept
    assert kept.stat().st_mode & 0o777 == 0o700
    assert (kept / "definition" / "tests" / "test_ok.py").is_file()
    assert json.loads((kept / "outputs.json").read_text())["name"] == "app-test"
