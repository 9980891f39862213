"""status --json and the HTML status page reflect the records; their cost stays flat."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import lxml.html
import pytest
from conftest import run_envpipe, tested_config

from envpipe_agent.ci_context import CIContext
from envpipe_agent.commands.status_page import render_status_page
from envpipe_agent.context import StageContext
from envpipe_agent.records import RecordWriter
from envpipe_agent.stages.promote import promote
from envpipe_agent.stages.publish import publish
from envpipe_agent.stages.status import status

JENKINS = CIContext(server="jenkins", build="42", build_url="https://ci.example.com/job/infra/42/",
                    user="alice", job="infra")


@pytest.fixture
def working_copy(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    (root / "infra").mkdir(parents=True)
    (root / "infra" / "main.tf").write_text('resource "terraform_data" "a" {}\n')
    (root / "envpipe.yml").write_text(tested_config(tmp_path / "repository"))
    return root


def context(root: Path) -> StageContext:
    return StageContext.load(root / "envpipe.yml", environ={"USER": "tester"})


def passed_through(ctx: StageContext, environment: str, version: str, result: str = "passed") -> None:
    """Promote ``version`` into ``environment`` and record an apply and a test of it there."""
    promote(ctx, environment, version, force=ctx.config.previous_environment(environment) is not None,
            reason="records written directly by this test")
    records = RecordWriter(ctx.repository, JENKINS, ctx.record_redactor)
    records.write(environment, "apply", version, "applied", {"outputs": {}})
    records.write(environment, "test", version, result,
                  {"tests": 4, "failures": 0 if result == "passed" else 1, "errors": 0, "skipped": 0,
                   "failed": [] if result == "passed" else ["test.tests.test_outputs.test_endpoint"]})


def page_environments(html: str) -> dict:
    tree = lxml.html.fromstring(html)
    return {li.get("data-environment"): (li.get("data-version"), li.get("data-state"))
            for li in tree.xpath("//li[@data-environment]")}


def test_status_json_and_html_page_show_each_environments_version_and_test_state(working_copy: Path) -> None:
    ctx = context(working_copy)
    publish(ctx, version="1.0.1")
    (working_copy / "infra" / "main.tf").write_text('resource "terraform_data" "b" {}\n')
    publish(ctx, version="1.0.2")
    passed_through(ctx, "test", "1.0.1")
    passed_through(ctx, "staging", "1.0.1")
    passed_through(ctx, "test", "1.0.2", result="failed")

    page = working_copy / "out" / "status.html"
    result = run_envpipe(["status", "--json", "--html", str(page)], cwd=working_copy, check=0)

    entries = {e["environment"]: e for e in json.loads(result.stdout)["environments"]}
    assert [e for e in entries] == ["test", "staging", "production"]
    assert (entries["test"]["version"], entries["staging"]["version"], entries["production"]["version"]) == \
        ("1.0.2", "1.0.1", None)
    assert entries["test"]["last"]["test"]["result"] == "failed"
    assert entries["staging"]["last"]["test"]["result"] == "passed"
    assert entries["staging"]["last"]["apply"]["ci"]["build_url"] == "https://ci.example.com/job/infra/42/"
    assert "status page written to" in result.stderr

    html = page.read_text()
    assert page_environments(html) == {"test": ("1.0.2", "failed"), "staging": ("1.0.1", "passed"),
                                       "production": ("", "empty")}
    tree = lxml.html.fromstring(html)
    assert "https://ci.example.com/job/infra/42/" in tree.xpath("//a/@href")
    changes = tree.xpath("//table[@id='changes']/tbody/tr")
    first = [cell.text_content().strip() for cell in changes[0].xpath("td")]
    assert first[1:5] == ["test", "test", "1.0.2", "failed"]  # newest first
    # Self-contained: nothing fetched from elsewhere.
    assert not tree.xpath("//script | //link | //img | //*[@src]")


def test_status_page_shows_the_current_versions_state_not_an_older_ones(working_copy: Path) -> None:
    ctx = context(working_copy)
    publish(ctx, version="1.0.1")
    (working_copy / "infra" / "main.tf").write_text('resource "terraform_data" "b" {}\n')
    publish(ctx, version="1.0.2")
    passed_through(ctx, "test", "1.0.1")
    promote(ctx, "test", "1.0.2")  # promoted, neither applied nor tested yet

    assert page_environments(render_status_page(ctx))["test"] == ("1.0.2", "promoted")


def test_status_page_escapes_record_text_and_links_only_http_urls(working_copy: Path) -> None:
    ctx = context(working_copy)
    publish(ctx, version="1.0.1")
    ctx = replace(ctx, ci=CIContext(server="jenkins", build="7", build_url="javascript:alert(1)",
                                    user="<b>mallory</b>", job="infra"))
    promote(ctx, "test", "1.0.1")
    promote(ctx, "staging", "1.0.1", force=True, reason="<script>alert('x')</script> hotfix")

    html = render_status_page(ctx)
    tree = lxml.html.fromstring(html)
    assert not tree.xpath("//script")
    assert not [href for href in tree.xpath("//a/@href") if not href.startswith("http")]
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; hotfix" in html
    assert "&lt;b&gt;mallory&lt;/b&gt;" in html
    assert "Forced in by <b>mallory</b> past the gate of test" in tree.text_content()


class CountingRepository:
    """Counts every call made to a repository, and every object its listings yield."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            result = attribute(*args, **kwargs)
            return self._listed(result) if name == "list" else result

        return counted

    def _listed(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            self.calls["listed objects"] += 1
            yield item


def requests_for_status(ctx: StageContext) -> Counter:
    counting = CountingRepository(ctx.repository)
    counted = replace(ctx, repository=counting)
    render_status_page(counted, status(counted))
    return counting.calls


def test_status_and_page_make_the_same_requests_with_1000_more_records(working_copy: Path) -> None:
    ctx = context(working_copy)
    publish(ctx, version="1.0.1")
    passed_through(ctx, "test", "1.0.1")
    passed_through(ctx, "staging", "1.0.1")
    before = requests_for_status(ctx)

    records = RecordWriter(ctx.repository, JENKINS, ctx.record_redactor)
    for number in range(1000):  # a thousand test runs of a thousand other versions
        records.write("test", "test", f"2.0.{number}", "passed", {"tests": 1})
    passed_through(ctx, "test", "1.0.1")  # the current version's state is the newest again

    after = requests_for_status(ctx)
    assert after == before
    assert sum(before.values()) < 40
