"""Input that is odd or hostile gets one clear line and exit 2 or 3, never exit 4
("a bug"): a YAML alias bomb in envpipe.yml, records and summaries envpipe did not
write, a source file whose name is not UTF-8."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)

ALIAS_BOMB = """\
project: our-project
source: infra
repository: {repository}
environments:
  - name: test
    vars:
      a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
      g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
      h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
      i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("envpipe:")]
    assert len(lines) == 1 and "internal error" not in lines[0], stderr
    return lines[0]


@FOLDER_ONLY
@pytest.mark.parametrize("command", [["status"], ["publish", "--version", "1.0.1"], ["generate", "jenkins"]])
def test_a_yaml_alias_bomb_is_a_configuration_error(project, command):
    (project.root / "envpipe.yml").write_text(ALIAS_BOMB.format(repository=project.repository))
    result = project.envpipe(*command, check=2, timeout=60)
    assert "aliases expand to more than" in one_error_line(result.stderr)
    assert not Path(project.repository).exists()


@FOLDER_ONLY
def test_a_few_aliases_are_fine(project):
    (project.root / "envpipe.yml").write_text(f"""\
project: our-project
source: infra
repository: {project.repository}
environments:
  - name: test
    vars: &common {{instance_count: 1, tags: {{team: infra}}}}
  - name: staging
    vars: *common
""")
    project.envpipe("status", check=0)


@FOLDER_ONLY
def test_yaml_nested_too_deeply_is_a_configuration_error(project):
    (project.root / "envpipe.yml").write_text(f"project: p\nrepository: {project.repository}\n"
                                              f"environments: [{{name: test}}]\nx: {'[' * 5000}{']' * 5000}\n")
    assert "nested too deeply" in one_error_line(project.envpipe("status", check=2).stderr)


def plant(project, key: str, data) -> None:
    path = Path(project.repository) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@FOLDER_ONLY
def test_records_and_summaries_envpipe_did_not_write_are_skipped_with_a_warning(project):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    plant(project, ".envpipe/records/test/20261129T000000.000000Z-apply-1.0.1.json", {"result": "done"})
    plant(project, ".envpipe/records/test/20261129T000001.000000Z-apply-1.0.1.json",
          {"action": "apply", "result": 5, "at": 7, "environment": "test"})
    plant(project, ".envpipe/summary/test/apply.json",
          {"action": "apply", "environment": "test", "result": "done", "at": 12, "version": {"a": 1}})
    plant(project, ".envpipe/results/test/1.0.1.json", {"action": "test", "environment": "test", "result": "passed",
                                                        "at": "2026-11-29T00:00:00Z", "ci": "not an object"})
    history = project.envpipe("history", "test", check=0)
    assert "promote" in history.stdout and " apply " not in history.stdout
    assert history.stderr.count("not a record envpipe wrote") == 2
    status = project.envpipe("status", check=0)
    assert "not a record envpipe wrote" in status.stderr and "1.0.1" in status.stdout
    page = project.root / "page.html"
    project.envpipe("status", "--html", str(page), check=0)
    assert "1.0.1" in page.read_text()
    assert json.loads(project.envpipe("status", "--json", check=0).stdout)["environments"]


@FOLDER_ONLY
def test_a_promotion_stamp_that_is_not_text_still_renders(project):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    manifest_path = Path(project.repository) / "test/.envpipe/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["promoted"] = {"at": 5, "user": [1]}
    manifest_path.write_text(json.dumps(manifest))
    project.envpipe("status", "--html", str(project.root / "page.html"), check=0)


@FOLDER_ONLY
def test_a_source_file_name_that_is_not_utf8_is_refused_by_name(project):
    with open(os.fsencode(project.source) + b"/bad\xff.tf", "w") as stream:
        stream.write("# not published\n")
    result = project.envpipe("publish", "--version", "1.0.1", check=3)
    assert "names are not UTF-8: 'bad\\xff.tf'" in one_error_line(result.stderr)
    assert not (Path(project.repository) / "1.0.1").exists()


@FOLDER_ONLY
@pytest.mark.parametrize("command", [
    ["freeze", "production", "--reason", "year end", "--until", "99999999999d"],
    ["freeze", "production", "--reason", "year end", "--until", "3000000d"],
    ["env", "create", "review-1", "--version", "1.0.1", "--ttl", "99999999999d"],
    ["env", "extend", "review-1", "--ttl", "99999999999d"],
])
def test_a_duration_too_long_for_the_calendar_is_a_usage_error(project, command):
    result = project.envpipe(*command, check=2)
    assert "is longer than 100 years" in one_error_line(result.stderr)
    assert not Path(project.repository).exists()


@FOLDER_ONLY
@pytest.mark.parametrize("setting", ["    soak: 99999999999d\n", "on_demand: {ttl: 3000000d, max_ttl: 3000000d}\n"])
def test_a_configured_duration_too_long_for_the_calendar_is_a_configuration_error(project, setting):
    config = project.root / "envpipe.yml"
    text = config.read_text()
    config.write_text(text.replace("    approval: manual\n", "    approval: manual\n" + setting)
                      if setting.startswith(" ") else text + setting)
    result = project.envpipe("env", "create", "review-1", "--version", "1.0.1", check=2)
    assert "is longer than 100 years" in one_error_line(result.stderr)
    assert not Path(project.repository).exists()


@FOLDER_ONLY
def test_an_approver_with_a_line_break_is_refused_before_anything_changes(project):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    result = project.envpipe("promote", "1.0.1", "--to", "production", "--force", "--reason", "hotfix",
                             "--approved-by", "alice\n2026-11-29T21:00:00Z  production  promote  1.0.1  done", check=2)
    assert "holds a line break or control character" in one_error_line(result.stderr)
    assert not (Path(project.repository) / "production").exists()
    assert not (Path(project.repository) / ".envpipe" / "records" / "production").exists()


@FOLDER_ONLY
def test_history_shows_a_reason_with_line_breaks_and_escapes_on_one_line(project):
    project.envpipe("freeze", "production", "--reason", "year end\nforged line\x1b[2J", check=0)
    lines = project.envpipe("history", "production", check=0).stdout.splitlines()
    assert len(lines) == 2, lines
    assert lines[1].endswith("reason: year end\\nforged line\\x1b[2J")
