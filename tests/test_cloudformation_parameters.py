"""CloudFormation parameters as written in envpipe.yml, checked before any AWS call.

PyYAML reads YAML 1.1, where an unquoted ``Yes`` is true and ``010`` is 8; a
CloudFormation parameter is a string, and the template's ``AllowedValues: [Yes, No]``
wants ``Yes``. Terraform vars keep YAML's types (HCL has real booleans).
"""
from __future__ import annotations

import socket
import textwrap

import pytest

from conftest import run_envpipe
from envpipe_agent.config import load_config
from envpipe_agent.errors import ConfigError
from envpipe_agent.tools import cloudformation_template
from envpipe_agent.tools.cloudformation import CloudFormationRunner
from test_cloudformation import CONFIG, Pipeline, parameters, ssm_value, stack

REPOSITORY = "s3://our-project-repository/pipelines"

DHCP_TEMPLATE = """\
Parameters:
  CreateDHCPOptionSet: {Type: String, AllowedValues: [Yes, No], Default: No}
  ZoneId: {Type: String, Default: "000"}
Conditions:
  # Quoted for moto, which reads templates as YAML 1.1 (CloudFormation reads Yes as Yes).
  CreateOptions: !Equals [!Ref CreateDHCPOptionSet, "Yes"]
Resources:
  Options:
    Type: AWS::SSM::Parameter
    Condition: CreateOptions
    Properties: {Name: /our-project/dhcp, Type: String, Value: !Ref ZoneId}
  Always:
    Type: AWS::SSM::Parameter
    Properties: {Name: /our-project/always, Type: String, Value: !Ref CreateDHCPOptionSet}
"""


def config_with(variables: str) -> str:
    return CONFIG.replace("{{QueueDelay: 5}}", variables.replace("{", "{{").replace("}", "}}"))


def test_yaml_booleans_and_numbers_reach_cloudformation_as_written(s3_bucket, tmp_path, cloudformation):
    pipeline = Pipeline(tmp_path, REPOSITORY, config_with("{CreateDHCPOptionSet: Yes, ZoneId: 010}"))
    pipeline.release("1.0.1", template=DHCP_TEMPLATE)

    prepared = cloudformation_template.prepare(pipeline.request())
    CloudFormationRunner().apply(pipeline.request())

    assert {p["ParameterKey"]: p["ParameterValue"] for p in prepared.parameters} == {
        "CreateDHCPOptionSet": "Yes", "ZoneId": "010"}
    assert parameters(stack(cloudformation))["CreateDHCPOptionSet"] == "Yes"
    assert ssm_value("/our-project/dhcp") == "010"  # the condition took the Yes branch
    assert ssm_value("/our-project/always") == "Yes"


def test_terraform_vars_keep_yamls_types(tmp_path):
    config = tmp_path / "envpipe.yml"
    config.write_text("project: p\nenvironments:\n  - name: test\n    vars: {enabled: Yes, count: 010, "
                      "names: [on, '1.10']}\n")

    [test] = load_config(config).environments

    assert dict(test.vars) == {"enabled": True, "count": 8, "names": (True, "1.10")}
    assert dict(test.vars_written) == {"enabled": "Yes", "count": "010", "names": ("on", "1.10")}


CONSTRAINED = """\
Parameters:
  Size: {Type: String, AllowedValues: [small, large], Default: small}
  Bucket: {Type: String, AllowedPattern: "[a-z][a-z0-9-]*", Default: b,
           ConstraintDescription: "lower-case letters, digits and hyphens"}
  Name: {Type: String, MinLength: 3, MaxLength: 8, Default: abc}
  Count: {Type: Number, MinValue: 1, MaxValue: 10, Default: 1}
  Ports: {Type: List<Number>, Default: "80"}
  Secret: {Type: String, NoEcho: true, MinLength: 12, Default: a-long-secret-value}
  Toggle: {Type: String, AllowedValues: ["true", "false"], Default: "false"}
Resources:
  Thing:
    Type: AWS::SSM::Parameter
    Properties: {Name: /our-project/thing, Type: String, Value: x}
"""


@pytest.mark.parametrize("variables, message", [
    ("{Size: medium}", "environments[0].vars.Size: 'medium' is not allowed by the AllowedValues "
                       "['small', 'large'] of template stack.yaml's parameter Size"),
    ("{Bucket: My_Bucket}", "'My_Bucket' is not allowed by the AllowedPattern '[a-z][a-z0-9-]*' of template "
                            "stack.yaml's parameter Bucket (lower-case letters, digits and hyphens)"),
    ("{Name: ab}", "'ab' is not allowed by the MinLength 3"),
    ("{Name: abcdefghi}", "'abcdefghi' is not allowed by the MaxLength 8"),
    ("{Count: 0}", "'0' is not allowed by the MinValue 1"),
    ("{Count: 11}", "'11' is not allowed by the MaxValue 10"),
    ("{Count: many}", "'many' is not allowed by the Type Number (not a number)"),
    ("{Ports: [80, http]}", "'80,http' is not allowed by the Type List<Number> (not a number)"),
    ("{Secret: short}", "vars.Secret: **** is not allowed by the MinLength 12"),
    ("{Toggle: yes}", "'yes' is not allowed by the AllowedValues ['true', 'false'] of template stack.yaml's "
                      "parameter Toggle; it is passed as written, but YAML reads it as a bool: quote it"),
])
def test_a_value_the_template_refuses_is_a_configuration_error_before_any_aws_call(
        s3_bucket, tmp_path, variables, message):
    root = tmp_path / "work"
    (root / "infra").mkdir(parents=True)
    (root / "envpipe.yml").write_text(config_with(variables).format(repository=REPOSITORY))
    (root / "infra" / "stack.yaml").write_text(CONSTRAINED)
    run_envpipe(["publish", "--version", "1.0.1"], cwd=root, check=0)
    run_envpipe(["promote", "1.0.1", "--to", "test"], cwd=root, check=0)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        # CloudFormation is a port nobody listens on: any AWS call would fail with exit 1.
        nowhere = {"AWS_ENDPOINT_URL_CLOUDFORMATION": f"http://127.0.0.1:{closed.getsockname()[1]}",
                   "AWS_MAX_ATTEMPTS": "1"}

        result = run_envpipe(["apply", "test"], cwd=root, env=nowhere, check=2)

    assert message in result.stderr
    assert "short" not in result.stderr or "Secret" not in variables


def test_a_value_envpipe_sets_that_breaks_a_constraint_names_the_template(s3_bucket, tmp_path):
    pipeline = Pipeline(tmp_path, REPOSITORY, config_with("{}"))
    pipeline.release("1.0.1", template=textwrap.dedent("""\
        Parameters:
          EnvpipeVersion: {Type: String, AllowedPattern: "v[0-9.]+"}
        Resources:
          Thing: {Type: AWS::SSM::Parameter, Properties: {Name: /x, Type: String, Value: !Ref EnvpipeVersion}}
    """))

    with pytest.raises(ConfigError) as refused:
        cloudformation_template.prepare(pipeline.request())

    assert str(refused.value) == ("template stack.yaml: parameter EnvpipeVersion is set by envpipe to '1.0.1', "
                                  "which breaks its AllowedPattern 'v[0-9.]+'; loosen the constraint in the template")
