"""envpipe.yml checks that stop a config before it can do damage: a state or stack
shared by every environment, paths leaving the definition, a mangled account id."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import run_envpipe

from envpipe_agent.config import load_config
from envpipe_agent.errors import ConfigError

TWO_ENVIRONMENTS = "project: p\nenvironments:\n  - name: test\n  - name: production\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "envpipe.yml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(("extra", "where"), [
    ("terraform:\n  state: {bucket: our-state, key: terraform.tfstate}\n", "terraform.state.key"),
    ("terraform:\n  state: {bucket: our-state, key: '{project}/terraform.tfstate'}\n", "terraform.state.key"),
    ("tool: cloudformation\ncloudformation:\n  stack_name: our-stack\n", "cloudformation.stack_name"),
])
def test_state_key_or_stack_name_shared_by_several_environments_is_refused(tmp_path, extra, where):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, TWO_ENVIRONMENTS + extra))
    assert f"envpipe.yml: {where}: " in str(caught.value)
    assert "add {environment}" in str(caught.value)


def test_fixed_state_key_and_stack_name_are_fine_with_one_environment(tmp_path):
    config = load_config(write(tmp_path, "project: p\nenvironments: [{name: test}]\n"
                                         "terraform:\n  state: {bucket: our-state, key: terraform.tfstate}\n"
                                         "cloudformation:\n  stack_name: our-stack\n"))
    assert (config.terraform.state.key, config.cloudformation.stack_name) == ("terraform.tfstate", "our-stack")


def test_stack_name_is_not_checked_for_a_terraform_project(tmp_path):
    config = load_config(write(tmp_path, TWO_ENVIRONMENTS + "cloudformation:\n  stack_name: unused\n"))
    assert config.cloudformation.stack_name == "unused"


@pytest.mark.parametrize(("extra", "where"), [
    ("tests:\n  path: ../../etc\n", "tests.path"),
    ("tests:\n  path: /etc\n", "tests.path"),
    ("tests:\n  path: tests/../../x\n", "tests.path"),
    ("cloudformation:\n  template: ../x.yaml\n", "cloudformation.template"),
    ("cloudformation:\n  template: /tmp/x.yaml\n", "cloudformation.template"),
    ("cloudformation:\n  template: 'stacks\\\\x.yaml'\n", "cloudformation.template"),
])
def test_paths_leaving_the_definition_are_refused_at_load(tmp_path, extra, where):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, TWO_ENVIRONMENTS + extra))
    assert f"envpipe.yml: {where}: " in str(caught.value)
    assert "relative path inside the definition" in str(caught.value)


@pytest.mark.parametrize("path", ["tests/", "tests", ".", "suite/smoke/"])
def test_relative_test_paths_load(tmp_path, path):
    assert load_config(write(tmp_path, TWO_ENVIRONMENTS + f"tests:\n  path: {path}\n")).tests.path == path


def test_unquoted_account_id_is_refused_with_advice_to_quote_it(tmp_path):
    # YAML reads 012345670123 as an octal number: 1402433619, not the account.
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "project: p\nenvironments:\n  - name: test\n    account_id: 012345670123\n"))
    assert "environments[0].account_id: read as the number 1402433619" in str(caught.value)
    assert "put the account id in quotes" in str(caught.value)


def test_quoted_account_id_keeps_its_leading_zero(tmp_path):
    config = load_config(write(tmp_path, "project: p\nenvironments:\n  - name: test\n"
                                         "    account_id: '012345670123'\n"))
    assert config.environment("test").account_id == "012345670123"


def test_cli_exits_2_naming_the_shared_state_key(tmp_path):
    write(tmp_path, TWO_ENVIRONMENTS + f"repository: {tmp_path / 'repo'}\n"
                    "terraform:\n  state: {bucket: our-state, key: terraform.tfstate}\n")
    result = run_envpipe(["status"], cwd=tmp_path, check=2)
    assert "terraform.state.key" in result.stderr.strip().splitlines()[-1]
