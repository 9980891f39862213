"""Redaction: secrets stay out of records and reports; TF_VAR_* values are masked in
what envpipe prints but never corrupt recorded data or identifiers (SPEC §6, §7)."""
from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_envpipe

from envpipe_agent.ci_context import detect
from envpipe_agent.junit import Case, redact_case
from envpipe_agent.records import RecordWriter, history, latest_test, read_summary
from envpipe_agent.redact import Redactor
from envpipe_agent.repository import open_repository

SECRET = "S3cr3tPW-9f2"

MAIN_TF = """\
variable "envpipe_environment" { type = string }
variable "envpipe_version" { type = string }
variable "pw" {
  type    = string
  default = "none"
}
output "name" { value = "app-${var.envpipe_environment}" }
output "connection" { value = "db://user:${var.pw}@host" }
"""

SUITE = f"""\
import os
import pytest

def test_output_equal_to_a_tf_var_value_arrives_unmasked():
    assert os.environ["ENVPIPE_OUTPUT_NAME"] == "app-test"

@pytest.mark.parametrize("pw", [os.environ["DB_PASSWORD"]])
def test_login(pw):
    assert pw == "wrong", "login refused for " + pw
"""


@pytest.fixture
def working(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "work"
    (root / "infra" / "tests").mkdir(parents=True)
    (root / "envpipe.yml").write_text(textwrap.dedent(f"""\
        project: our-project
        source: infra
        repository: {tmp_path / 'repository'}
        secrets: [DB_PASSWORD]
        environments:
          - name: test
          - name: production
            approval: manual
        tests:
          path: tests/
        """))
    (root / "infra" / "main.tf").write_text(MAIN_TF)
    (root / "infra" / "tests" / "test_app.py").write_text(SUITE)
    monkeypatch.setenv("DB_PASSWORD", SECRET)
    monkeypatch.setenv("TF_VAR_pw", SECRET)
    monkeypatch.setenv("TF_VAR_label", "app-test")  # equals an output's value
    return root


def test_outputs_equal_to_a_tf_var_value_are_recorded_and_tested_unmasked_but_secrets_never(
        working: Path, tmp_path: Path) -> None:
    run_envpipe(["publish", "--version", "1.0.1"], cwd=working, check=0)
    run_envpipe(["promote", "1.0.1", "--to", "test"], cwd=working, check=0)
    applied = run_envpipe(["apply", "test", "--json"], cwd=working, check=0)
    report = tmp_path / "junit.xml"
    tested = run_envpipe(["test", "test", "--junit", str(report)], cwd=working, check=1)

    repository = open_repository(str(tmp_path / "repository"), {})
    apply_record = read_summary(repository, "test")["apply"]
    assert apply_record["outputs"] == {"name": "app-test", "connection": "db://user:****@host"}
    # What envpipe prints still masks every TF_VAR_* value (SPEC §7).
    assert json.loads(applied.stdout)["outputs"]["name"] == "****"
    test_record = latest_test(repository, "test", "1.0.1")
    assert (test_record["tests"], test_record["failures"]) == (2, 1)  # the output check passed
    assert test_record["failed"] == ["test.tests.test_app.test_login[****]"]
    stored = json.dumps(list(history(repository, "test"))) + report.read_text()
    assert SECRET not in stored and SECRET not in tested.stdout + tested.stderr + applied.stderr
    names = [case.get("name") for case in ET.parse(report).getroot().iter("testcase")]
    assert "test_login[****]" in names
    failure = next(ET.parse(report).getroot().iter("failure"))
    assert failure.get("message").startswith("AssertionError: login refused for ****")


def test_tf_var_equal_to_an_environment_name_leaves_status_json_intact(working: Path, tmp_path: Path) -> None:
    result = run_envpipe(["status", "--json"], cwd=working, env={"TF_VAR_stage": "test"}, check=0)

    environments = json.loads(result.stdout)["environments"]
    assert [entry["environment"] for entry in environments] == ["test", "production"]


def test_a_record_masks_secrets_at_any_depth_keys_included(tmp_path: Path) -> None:
    repository = open_repository(str(tmp_path / "repository"), {})
    redactor = Redactor.for_records({"DB_PASSWORD": SECRET, "TF_VAR_x": "plain-value"}, ["DB_PASSWORD"])

    record = RecordWriter(repository, detect({}), redactor).write(
        "test", "apply", "1.0.1", "done", {"outputs": {"a": [f"x{SECRET}y", "plain-value"], SECRET: 1}})

    stored = repository.read(record["key"]).decode()
    assert SECRET not in stored
    assert json.loads(stored)["outputs"] == {"a": ["x****y", "plain-value"], "****": 1}
    assert SECRET not in json.dumps(read_summary(repository, "test"))


def test_printing_redactor_masks_tf_vars_except_public_names() -> None:
    environ = {"TF_VAR_a": "production", "TF_VAR_b": "hunter22", "AWS_SECRET_ACCESS_KEY": "abcdefgh"}
    printing = Redactor.from_environ(environ, public=["production"])
    records = Redactor.for_records(environ)

    assert printing("production hunter22 abcdefgh") == "production **** ****"
    assert records("production hunter22 abcdefgh") == "production hunter22 ****"


def test_redact_case_masks_name_classname_message_and_text() -> None:
    case = Case(name=f"test_pw[{SECRET}]", classname=f"tests.{SECRET}", message=SECRET, text=f"got {SECRET}")

    redact_case(case, Redactor([SECRET]))

    assert (case.name, case.classname, case.message, case.text) == ("test_pw[****]", "tests.****", "****", "got ****")


# --- every rendering of a secret ----------------------------------------------------

HOSTILE_SECRETS = [
    'pw-Kx7"quote\\back-42',     # JSON/HCL and repr escape both
    "Kx7'single'-quote-42",
    "line-one-42\nline-two-43",  # a newline: tools print the lines apart too
    "pässwörd-ünïcode-42",
    "cost-$HOME-${var.x}-42",    # HCL doubles ${ and %{
    "percent-100%-%{if}-42",
    "braces-{}-{{x}}-42",
]


def _renderings_seen(secret: str):
    """How tools print a secret: (how, the secret as rendered, the line a tool writes)."""
    import base64
    import html
    from urllib.parse import quote, quote_plus

    hcl = json.dumps(secret, ensure_ascii=False).replace("${", "$${").replace("%{", "%%{")
    yield "raw", secret, f"value={secret}"
    yield "json", json.dumps(secret), json.dumps({"pw": secret})
    yield "json-unicode", json.dumps(secret, ensure_ascii=False), json.dumps({"pw": secret}, ensure_ascii=False)
    yield "hcl", hcl, f"      + password = {hcl}"
    nested = json.dumps(json.dumps({"p": secret}), ensure_ascii=False)  # `terraform output` of a jsonencode()
    yield "json-in-hcl", nested[1:-1], f"json = {nested.replace('${', '$${').replace('%{', '%%{')}"
    yield "json-in-json", nested[1:-1], json.dumps({"config": json.dumps({"pw": secret})})
    yield "repr", repr(secret), f"AssertionError: assert {secret!r} == 'wrong'"
    yield "repr-in-list", repr([secret, "x'y\"z"]), repr([secret, "x'y\"z"])
    yield "url", quote(secret, safe=""), f"https://db.example.com/?pw={quote(secret, safe='')}&u=1"
    yield "url-plus", quote_plus(secret), f"pw={quote_plus(secret)}"
    for prefix in (b"", b"u:", b"us:"):
        encoded = base64.b64encode(prefix + secret.encode()).decode()
        yield f"base64+{len(prefix)}", encoded[4:-4], f"Authorization: Basic {encoded}"
    yield "html", html.escape(secret), f"<td>{html.escape(secret)}</td>"


@pytest.mark.parametrize("secret", HOSTILE_SECRETS)
def test_every_rendering_of_a_secret_is_masked(secret):
    redactor = Redactor([secret])
    for how, rendered, text in _renderings_seen(secret):
        masked = redactor(text)
        assert "****" in masked and secret not in masked, (how, masked)
        # what is left holds no piece of the rendering longer than the mask's margins
        assert rendered.strip("\"'") not in masked, (how, masked)
        for line in secret.splitlines():
            assert line not in masked, (how, masked)


def test_ordinary_text_is_left_alone():
    redactor = Redactor(HOSTILE_SECRETS)
    text = 'terraform_data.example: Creation complete after 0s [id=7c1e]\n{"outputs": {"name": "app-test"}}'
    assert redactor(text) == text


@pytest.mark.parametrize("value", ["abc", "x"])
def test_a_secret_too_short_to_mask_is_refused(working: Path, value):
    result = run_envpipe(["status"], cwd=working, env={"DB_PASSWORD": value})
    assert result.returncode == 2, result.stderr
    assert "DB_PASSWORD is" in result.stderr and "4 characters" in result.stderr
    assert value not in result.stderr.replace("characters", "")
