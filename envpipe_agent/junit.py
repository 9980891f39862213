"""JUnit XML: read what pytest writes, write the one report a test stage hands to CI.

Jenkins' ``junit`` step and GoCD's test artifacts both read the common dialect:
``<testsuites>`` holding ``<testsuite>`` elements with ``tests``/``failures``/
``errors``/``skipped``/``time`` attributes and ``<testcase>`` children carrying
``<failure>``, ``<error>`` or ``<skipped>``. Only the standard library is used.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from envpipe_agent.errors import StageFailed
from envpipe_agent.files import prepare_named_file, write_file

PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"
# A CI log or report page needs the start of a failure, not megabytes of it.
MAX_TEXT = 20000


@dataclass
class Case:
    name: str
    classname: str = ""
    seconds: float = 0.0
    outcome: str = PASSED  # passed | failed | error | skipped
    message: str = ""
    text: str = ""

    @property
    def title(self) -> str:
        return f"{self.classname}.{self.name}" if self.classname else self.name


@dataclass
class Suite:
    name: str
    cases: List[Case] = field(default_factory=list)
    seconds: float = 0.0
    timestamp: Optional[str] = None

    def count(self, outcome: str) -> int:
        return sum(1 for case in self.cases if case.outcome == outcome)

    def counts(self) -> Dict[str, int]:
        return {"tests": len(self.cases), "failures": self.count(FAILED), "errors": self.count(ERROR),
                "skipped": self.count(SKIPPED)}


def redact_case(case: Case, redactor: Callable[[str], str]) -> Case:
    """Mask secrets in every text field of ``case``: its name and classname too, since
    a parametrised test's id quotes its parameters (``test_login[S3cr3t]``)."""
    case.name, case.classname = redactor(case.name), redactor(case.classname)
    case.message, case.text = redactor(case.message), redactor(case.text)
    return case


def totals(suites: Sequence[Suite]) -> Dict[str, int]:
    """Summed counts of ``suites``: tests, failures, errors, skipped."""
    result = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key, value in suite.counts().items():
            result[key] += value
    return result


def _seconds(value: Optional[str]) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


def _case(element: ET.Element) -> Case:
    case = Case(name=element.get("name", "?"), classname=element.get("classname", ""),
                seconds=_seconds(element.get("time")))
    for tag, outcome in (("failure", FAILED), ("error", ERROR), ("skipped", SKIPPED)):
        child = element.find(tag)
        if child is not None:
            case.outcome = outcome
            case.message = child.get("message", "")
            case.text = (child.text or "")[:MAX_TEXT]
            break
    return case


def read_report(path: Path) -> List[Suite]:
    """The suites of a JUnit XML file (a ``<testsuites>`` or a single ``<testsuite>``)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise StageFailed(f"cannot read the JUnit report {path}: {exc}") from None
    elements = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    return [
        Suite(name=element.get("name", "tests"), cases=[_case(c) for c in element.iter("testcase")],
              seconds=_seconds(element.get("time")), timestamp=element.get("timestamp"))
        for element in elements
    ]


def _suite_element(suite: Suite) -> ET.Element:
    counts = suite.counts()
    element = ET.Element("testsuite", {"name": suite.name, **{k: str(v) for k, v in counts.items()},
                                       "time": f"{suite.seconds:.3f}"})
    if suite.timestamp:
        element.set("timestamp", suite.timestamp)
    for case in suite.cases:
        child = ET.SubElement(element, "testcase", {"classname": case.classname, "name": case.name,
                                                    "time": f"{case.seconds:.3f}"})
        if case.outcome in (FAILED, ERROR, SKIPPED):
            tag = {FAILED: "failure", ERROR: "error", SKIPPED: "skipped"}[case.outcome]
            detail = ET.SubElement(child, tag, {"message": case.message})
            if case.text:
                detail.text = case.text
    return element


def render_report(name: str, suites: Sequence[Suite]) -> bytes:
    """One ``<testsuites>`` document holding ``suites``, with summed counts."""
    counts = totals(suites)
    root = ET.Element("testsuites", {"name": name, **{k: str(v) for k, v in counts.items()},
                                     "time": f"{sum(s.seconds for s in suites):.3f}"})
    root.extend(_suite_element(suite) for suite in suites)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def prepare_report(path: Path) -> None:
    """Make the report's folder before any test runs: a report that cannot be written
    is a usage error then (exit 2), not a failure after the tests ran."""
    prepare_named_file(path, "--junit", "the file to write the report to")


def write_report(path: Path, name: str, suites: Sequence[Suite]) -> Path:
    """Write the report to ``path`` in one step, so CI never reads half a file."""
    path = Path(path)
    prepare_report(path)
    try:
        return write_file(path, render_report(name, suites))
    except OSError as exc:
        raise StageFailed(f"the JUnit report could not be written to {path}: {exc.strerror or exc}") from None
