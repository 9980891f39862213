"""test: run the definition's tests against an environment and record the result (SPEC §4, §6).

Two kinds of tests, both optional, both in one JUnit report:

* the pytest suite published inside the definition (``tests.path``), run from the
  verified environment folder in a subprocess that is told the environment, the
  version and the outputs of the last apply;
* HTTP smoke checks (``tests.http``), retried until each passes or its ``within``
  seconds are up.

The record written for (environment, version) is what the promotion gate reads.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import re
import string
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from envpipe_agent import children
from envpipe_agent.aws_credentials import Credentials
from envpipe_agent.config import HttpCheck
from envpipe_agent.context import StageContext
from envpipe_agent.errors import NotFound, Refused, UsageError
from envpipe_agent.junit import (ERROR, FAILED, Case, Suite, prepare_report, read_report, redact_case, totals,
                                 write_report)
from envpipe_agent.manifest import check_holds, read_manifest
from envpipe_agent.parallel import parallel_map
from envpipe_agent.paths import local_path
from envpipe_agent.records import last_applied, recorded_outputs
from envpipe_agent.workdir import WorkDir, fetched

log = logging.getLogger(__name__)

# Placeholders an HTTP check's URL may use: {outputs[NAME]}, {environment}, {version}, {project}.
_FIELD_RE = re.compile(r"(?:outputs\[[A-Za-z0-9_-]+\]|environment|version|project)\Z")
_OUTPUT_VARIABLE_RE = re.compile(r"[^A-Za-z0-9_]")
RETRY_INTERVAL = 1.0
MAX_REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class TestResult:
    environment: str
    version: str
    passed: bool
    tests: int
    failures: int
    errors: int
    skipped: int
    seconds: float
    failed: List[str] = field(default_factory=list)
    junit: Optional[str] = None

    # Not a test class, whatever pytest's collector thinks of the name.
    __test__ = False

    @property
    def result(self) -> str:
        return "passed" if self.passed else "failed"

    def as_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "result": self.result}

    def counts(self) -> str:
        passed = self.tests - self.failures - self.errors - self.skipped
        return f"{passed} passed, {self.failures} failed, {self.errors} errors, {self.skipped} skipped"

    def summary(self) -> str:
        return f"{self.environment}: version {self.version} {self.result}: {self.counts()} in {self.seconds:.1f}s"


def applied_outputs(ctx: StageContext, environment: str, version: str) -> Dict[str, Any]:
    """The non-sensitive outputs of the environment's last apply, which must be of ``version``.

    Testing infrastructure that still runs another version would let that version's
    result open the gate for this one, so anything else is refused.
    """
    applied = last_applied(ctx.repository, environment)
    if applied is None:
        raise Refused(f"{environment} holds version {version} but it is not applied: "
                      f"run 'envpipe apply {environment}' before 'envpipe test {environment}'")
    if applied.get("version") != version:
        raise Refused(f"{environment} holds version {version} but its last successful apply was of version "
                      f"{applied.get('version')}: run 'envpipe apply {environment}' before "
                      f"'envpipe test {environment}'")
    return recorded_outputs(ctx.repository, environment)


def output_variables(outputs: Mapping[str, Any]) -> Dict[str, str]:
    """``ENVPIPE_OUTPUT_<NAME>`` for each output: strings as they are, anything else as JSON."""
    return {
        "ENVPIPE_OUTPUT_" + _OUTPUT_VARIABLE_RE.sub("_", name).upper():
            value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        for name, value in outputs.items()
    }


def render_url(template: str, where: str, values: Mapping[str, Any]) -> str:
    """Fill an HTTP check's URL; only the documented placeholders are allowed.

    Checking each field first keeps ``str.format_map`` away from attribute access
    (``{outputs.__class__}``) and turns a missing output into a clear message.
    """
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise UsageError(f"{where}: invalid URL template {template!r}: {exc}") from None
    for name in fields:
        if not _FIELD_RE.match(name):
            raise UsageError(f"{where}: unknown placeholder {{{name}}} in {template!r}; use "
                             "{outputs[NAME]}, {environment}, {version} or {project}")
    outputs = values["outputs"]
    missing = sorted({name[len("outputs["):-1] for name in fields if name.startswith("outputs[")} - set(outputs))
    if missing:
        raise KeyError(f"output {missing[0]!r} is not among the outputs of the last apply "
                       f"({', '.join(sorted(outputs)) or 'none'})")
    text_outputs = {k: v if isinstance(v, str) else json.dumps(v) for k, v in outputs.items()}
    return template.format_map({**values, "outputs": text_outputs})


def http_check(check: HttpCheck, url: str, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> Tuple[bool, str, int]:
    """GET ``url`` until it answers ``check.status`` (and holds ``check.body``) or
    ``check.within`` seconds pass. Returns (passed, what happened last, attempts)."""
    deadline = clock() + check.within
    attempts = 0
    last = ""
    # A check expecting a redirect must see it, not where it leads.
    follow = not 300 <= check.status < 400
    import requests  # only HTTP checks need it; keeps every other command's start-up light

    with requests.Session() as session:
        while True:
            attempts += 1
            timeout = max(1.0, min(MAX_REQUEST_TIMEOUT, deadline - clock()))
            try:
                response = session.get(url, timeout=timeout, allow_redirects=follow)
                if response.status_code != check.status:
                    last = f"status {response.status_code}"
                elif check.body is not None and check.body not in response.text:
                    last = f"status {response.status_code} but the body lacks {check.body!r}"
                else:
                    return True, f"status {response.status_code}", attempts
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
            remaining = deadline - clock()
            if remaining <= 0:
                return False, last, attempts
            sleep(min(RETRY_INTERVAL, remaining))


def _check_urls(ctx: StageContext, environment: str, version: str,
                outputs: Mapping[str, Any]) -> List[Tuple[Optional[str], str]]:
    """(URL, problem) per HTTP check. A bad placeholder raises UsageError (exit 2) before
    anything runs; an output the last apply did not produce fails that check only."""
    values = {"outputs": outputs, "environment": environment, "version": version, "project": ctx.config.project}
    urls: List[Tuple[Optional[str], str]] = []
    for index, check in enumerate(ctx.config.tests.http):
        try:
            urls.append((render_url(check.url, f"tests.http[{index}].url", values), ""))
        except KeyError as exc:
            urls.append((None, str(exc.args[0])))
    return urls


def _http_suite(ctx: StageContext, environment: str, urls: List[Tuple[Optional[str], str]]) -> Suite:
    checks = ctx.config.tests.http

    def run(index: int) -> Case:
        check = checks[index]
        case = Case(name=f"[{index}] GET {check.url}", classname=f"{environment}.http")
        started = time.monotonic()
        url, problem = urls[index]
        if url is None:
            case.outcome, case.message = ERROR, problem
            log.info("%s: %s", environment, problem)
            return case
        log.info("%s: GET %s (expect %d%s, within %gs)", environment, url, check.status,
                 f" and {check.body!r}" if check.body else "", check.within)
        passed, last, attempts = http_check(check, url)
        case.seconds = time.monotonic() - started
        if not passed:
            case.outcome = FAILED
            case.message = ctx.redactor(
                f"GET {url}: expected status {check.status}"
                + (f" and {check.body!r} in the body" if check.body else "")
                + f" within {check.within:g}s; {attempts} attempts, the last got {last}")
            log.info("%s: %s", environment, case.message)
        return case

    started = time.monotonic()
    # Concurrent, so the stage takes as long as the slowest check, not the sum.
    cases = parallel_map(run, range(len(checks)), threads=8)
    return Suite(name=f"{environment}.http", cases=cases, seconds=time.monotonic() - started)


def _pytest_command(tests: Path, definition: Path, report: Path) -> List[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(definition),
            f"--junitxml={report}", "-o", "junit_suite_name=pytest", str(tests)]


def _pytest_suite(ctx: StageContext, environment: str, work: WorkDir, outputs: Mapping[str, Any],
                  credentials: Credentials) -> Suite:
    tests_path = ctx.config.tests.path or ""
    manifest, definition, workdir = work.manifest, work.path, work.root
    relative = tests_path.strip("/")
    tests = local_path(definition, relative, "tests.path") if relative not in ("", ".") else definition
    if not tests.exists():
        raise UsageError(f"tests.path {tests_path!r} is not in version {manifest.version} as promoted to "
                         f"{environment}: add the suite to the definition and publish a new version")
    outputs_file = workdir / "outputs.json"
    outputs_file.write_text(json.dumps(dict(outputs), indent=1, sort_keys=True, default=str))
    report = workdir / "pytest.xml"
    environ = {
        **credentials.environ,  # the environment's assumed role, as apply had it
        "ENVPIPE_ENVIRONMENT": environment,
        "ENVPIPE_VERSION": manifest.version,
        "ENVPIPE_OUTPUTS": str(outputs_file),
        **output_variables(outputs),
        "PYTHONDONTWRITEBYTECODE": "1",  # nothing written into the verified definition
    }
    command = _pytest_command(tests, definition, report)
    log.info("%s: pytest %s against version %s", environment, tests_path, manifest.version)
    started = time.monotonic()
    # In a session of its own; interrupted, envpipe stops pytest (SIGINT: the suite's
    # teardown and finally blocks run) and waits for it before the interrupt goes on.
    process = children.start(command, cwd=definition, env=environ, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace")
    redactor = ctx.redactor.with_values(credentials.secrets)
    tail: List[str] = []

    def show(line: str) -> None:
        line = redactor(line.rstrip("\n"))
        log.info("  %s", line)
        tail.append(line)
        del tail[:-40]

    assert process.stdout is not None
    reader = children.pump(process.stdout, show)
    try:
        code = children.wait(process, "pytest")
    except KeyboardInterrupt:
        children.join([reader], timeout=5)
        raise
    children.join([reader])
    seconds = time.monotonic() - started
    suites = read_report(report) if report.exists() else []
    cases = [case for suite in suites for case in suite.cases]
    for case in cases:
        # A parametrised test's name can carry a secret (test_login[S3cr3t]): every
        # field goes through the redactor before the report or a record sees it.
        redact_case(case, redactor)
        case.classname = f"{environment}.{case.classname}" if case.classname else environment
    # pytest's own failures (collection errors, bad options, no tests) must not pass
    # a gate: they become an error case carrying the end of pytest's output.
    if code != 0 and not any(case.outcome in (FAILED, ERROR) for case in cases):
        meaning = {2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}
        cases.append(Case(name="pytest", classname=environment, seconds=seconds, outcome=ERROR,
                          message=f"pytest exited {code} ({meaning.get(code, 'failed')})", text="\n".join(tail)))
    return Suite(name=f"{environment}.pytest", cases=cases, seconds=seconds,
                 timestamp=suites[0].timestamp if suites else None)


def check_prerequisites(ctx: StageContext, source: Optional[Path] = None) -> None:
    """Refuse (UsageError) what would stop any test stage before it starts: nothing
    configured to test, or a pytest suite and no pytest; with ``source`` (the
    definition about to be published), a tests.path that is not a folder in it.
    ``run`` checks this before it publishes anything."""
    settings = ctx.config.tests
    if not settings.path and not settings.http:
        raise UsageError(f"{ctx.config.path.name}: nothing to test: set tests.path (a pytest suite in the "
                         "definition) or tests.http (smoke checks)")
    if settings.path and importlib.util.find_spec("pytest") is None:
        raise UsageError(f"tests.path is set but pytest is not installed for {sys.executable}: "
                         "install it on the agent (pip install pytest)")
    if source is not None and settings.path and not (source / settings.path).is_dir():
        raise UsageError(f"{ctx.config.path.name}: tests.path {settings.path!r} is not a folder in the "
                         f"definition {source}: fix tests.path")


def run_tests(ctx: StageContext, environment: str, junit: Optional[Path] = None,
              version: Optional[str] = None, keep_workdir: bool = False) -> TestResult:
    """Run the configured tests against ``environment``'s current version and record the result.

    With ``version``, refuse (exit 3) unless the environment holds that version. The
    pytest suite runs in a private work folder, kept afterwards with ``keep_workdir``."""
    started = time.monotonic()
    env = ctx.environment(environment)
    settings = ctx.config.tests
    check_prerequisites(ctx)
    if junit:
        prepare_report(Path(junit))
    manifest = read_manifest(ctx.repository, env.name)
    if manifest is None:
        raise NotFound(f"{env.name} holds no version: promote one ('envpipe promote VERSION --to {env.name}') "
                       "and apply it first")
    check_holds(env.name, manifest.version, version, "test")
    outputs = applied_outputs(ctx, env.name, manifest.version)
    urls = _check_urls(ctx, env.name, manifest.version, outputs)
    suites: List[Suite] = []
    if settings.path:
        # The suite comes from the verified environment folder, never the working copy.
        credentials = ctx.credentials(env)
        with fetched(ctx.repository, env.name, keep_workdir, ctx.environ, ctx.config.project,
                     subfolder="definition") as work:
            if work.manifest.version != manifest.version:
                raise Refused(f"{env.name} was promoted to version {work.manifest.version} while its tests "
                              f"started: apply it, then run 'envpipe test {env.name}' again")
            suites.append(_pytest_suite(ctx, env.name, work, outputs, credentials))
    if settings.http:
        suites.append(_http_suite(ctx, env.name, urls))
    counts = totals(suites)
    seconds = time.monotonic() - started
    for suite in suites:
        for case in suite.cases:
            redact_case(case, ctx.redactor)  # the http checks' names quote their URLs
    failed = [case.title for suite in suites for case in suite.cases if case.outcome in (FAILED, ERROR)]
    result = TestResult(environment=env.name, version=manifest.version,
                        passed=not counts["failures"] and not counts["errors"], seconds=seconds,
                        failed=failed, junit=str(junit) if junit else None, **counts)
    ctx.records.write(env.name, "test", manifest.version, result.result, {
        **counts,
        "seconds": round(seconds, 3),
        "digest": manifest.digest,
        "suites": {suite.name.rsplit(".", 1)[-1]: suite.counts() for suite in suites},
        "failed": failed[:20],
    })
    if junit:  # after the record: a report that cannot be written loses no result
        write_report(Path(junit), f"envpipe {ctx.config.project} {env.name}", suites)
    log.info("%s", result.summary())
    return result
