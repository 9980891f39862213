"""envpipe.yml → frozen values, and every way of getting it wrong (SPEC §2)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from envpipe_agent.config import load_config, validate_environment_name, validate_version
from envpipe_agent.errors import ConfigError, UsageError

FULL = """\
project: our-project
source: infra/
repository: s3://our-project-repository
version: "1.0.{build}"
tool: terraform
environments:
  - name: test
  - name: staging
    vars: {instance_count: 2}
  - name: production
    approval: manual
    role_arn: arn:aws:iam::123456789012:role/deployer
    account_id: "123456789012"
    vars: {instance_count: 3}
terraform:
  state:
    bucket: our-project-state
    key: "{environment}/terraform.tfstate"
    region: eu-west-1
cloudformation:
  template: stack.yaml
  stack_name: "{project}-{environment}"
  capabilities: [CAPABILITY_NAMED_IAM]
tests:
  path: tests/
  http:
    - url: "{outputs[endpoint]}/health"
      status: 200
      within: 120
secrets: [DB_PASSWORD]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "envpipe.yml"
    path.write_text(textwrap.dedent(text))
    return path


def test_spec_example_loads_into_frozen_values(tmp_path):
    config = load_config(write(tmp_path, FULL))
    assert config.project == "our-project"
    assert config.source == (tmp_path / "infra").resolve()
    assert config.environment_names == ("test", "staging", "production")
    production = config.environment("production")
    assert production.manual and production.account_id == "123456789012"
    assert dict(config.environment("staging").vars) == {"instance_count": 2}
    assert config.terraform.state.bucket == "our-project-state"
    assert config.cloudformation.capabilities == ("CAPABILITY_NAMED_IAM",)
    assert config.tests.http[0].within == 120.0
    assert config.secrets == ("DB_PASSWORD",)
    assert config.previous_environment("staging").name == "test"
    assert config.previous_environment("test") is None
    with pytest.raises(Exception):
        config.environment("staging").vars["instance_count"] = 5  # type: ignore[index]


def test_relative_repository_is_resolved_against_the_config_folder(tmp_path):
    config = load_config(write(tmp_path, "project: p\nrepository: repo\nenvironments: [{name: a}]\n"))
    assert config.repository == str((tmp_path / "repo").resolve())


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ("project: p\nenvironments: [{name: a}]\nunknown: 1\n", "unknown", "unknown key"),
        ("project: p\nenvironments: [{name: a, colour: red}]\n", "environments[0].colour", "unknown key"),
        ("project: 5\nenvironments: [{name: a}]\n", "project", "expected a non-empty string"),
        ("project: p\nenvironments: {name: a}\n", "environments", "non-empty list"),
        ("project: p\nenvironments: [{name: Staging}]\n", "environments[0].name", "does not match"),
        ("project: p\nenvironments: [{name: a}, {name: a}]\n", "environments[1].name", "appears twice"),
        ("project: p\nversion: \"1.0.{buildnumber}\"\nenvironments: [{name: a}]\n", "version",
         "unknown placeholder"),
        ("project: p\nversion: \"v{build}\"\nenvironments: [{name: a}]\n", "version", "renders versions like 'v1'"),
        ("project: p\nversion: \"1.{build:d}\"\nenvironments: [{name: a}]\n", "version", "invalid template"),
        ("project: p\nversion: \"1.{build\"\nenvironments: [{name: a}]\n", "version", "invalid template"),
        ("project: p\nenvironments: [{name: a, approval: yes}]\n", "environments[0].approval", "one of auto, manual"),
        ("project: p\ntool: pulumi\nenvironments: [{name: a}]\n", "tool", "terraform, cloudformation"),
        ("project: p\nenvironments: [{name: a, vars: [1]}]\n", "environments[0].vars", "mapping of variables"),
        ("project: p\nenvironments: [{name: a}]\ntests: {http: [{status: 200}]}\n", "tests.http[0].url",
         "required key is missing"),
        ("environments: [{name: a}]\n", "project", "required key is missing"),
        ("project: p\nenvironments: [{name: a}]\nsecrets: [db-password]\n", "secrets[0]", "does not match"),
    ],
)
def test_invalid_config_names_file_and_key_path(tmp_path, text, where, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert f": {where}: " in message
    assert expected in message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "project: p\nenvironments: [\n")
    with pytest.raises(ConfigError, match=r"envpipe\.yml: line \d+: invalid YAML"):
        load_config(path)


def test_duplicate_yaml_key_is_refused_not_silently_replaced(tmp_path):
    path = write(tmp_path, "project: p\nproject: q\nenvironments: [{name: a}]\n")
    with pytest.raises(ConfigError, match="duplicate key 'project'"):
        load_config(path)


def test_missing_config_says_where_it_looked(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yml: not found"):
        load_config(tmp_path / "nowhere.yml")


def test_unknown_environment_lists_the_configured_ones(tmp_path):
    config = load_config(write(tmp_path, "project: p\nenvironments: [{name: a}, {name: b}]\n"))
    with pytest.raises(UsageError, match="choose one of a, b"):
        config.environment("c")


@pytest.mark.parametrize("version", ["1.0.1", "2", "1.0.0-rc.1+build.5", "10_3"])
def test_valid_versions_pass(version):
    assert validate_version(version) == version


@pytest.mark.parametrize("version", ["v1", "1/2", "1..2", "", "1 2", "1\\2", "1" * 129, "staging"])
def test_invalid_versions_are_usage_errors(version):
    with pytest.raises(UsageError):
        validate_version(version)


@pytest.mark.parametrize("name", ["Test", "1env", "a" * 64, "a_b", "", "a/b"])
def test_invalid_environment_names_are_usage_errors(name):
    with pytest.raises(UsageError):
        validate_environment_name(name)
