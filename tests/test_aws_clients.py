"""Every AWS client comes from one factory, built from the environment mapping given:
S3 (the repository), STS and CloudFormation act as one identity, in one region.

Requests are observed as moto receives them: the access key and region in each
request's signature (``Credential=KEY/date/REGION/SERVICE/aws4_request``).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, List, Mapping, Tuple

import pytest

from conftest import read_repository_file
from envpipe_agent import StageContext, apply, promote, publish
from envpipe_agent.aws_credentials import client
from envpipe_agent.errors import UsageError

PROFILE_KEY = "AKIAPROFILEONLY00001"
PROFILE_REGION = "eu-west-1"
CREDENTIAL_RE = re.compile(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")

TEMPLATE = """\
Parameters:
  EnvpipeVersion: {Type: String}
Resources:
  Version:
    Type: AWS::SSM::Parameter
    Properties: {Name: /our-project/version, Type: String, Value: !Ref EnvpipeVersion}
"""

CONFIG = """\
project: our-project
source: infra
repository: s3://our-project-repository/pipelines
tool: cloudformation
environments:
  - name: test
{environment}
cloudformation:
  template: stack.yaml
"""


class SignedRequests:
    """A client factory that makes envpipe's own clients and notes who signed each request."""

    def __init__(self) -> None:
        self.seen: List[Tuple[str, str, str]] = []  # (service, access key, region)

    def __call__(self, service: str, environ: Mapping[str, str], **kwargs: Any):
        made = client(service, environ, **kwargs)
        made.meta.events.register("request-created", self._note)
        return made

    def _note(self, request: Any, **_: Any) -> None:
        authorization = request.headers.get("Authorization") or ""
        if isinstance(authorization, bytes):
            authorization = authorization.decode()
        match = CREDENTIAL_RE.search(authorization)
        if match:
            key, region, service = match.groups()
            self.seen.append((service, key, region))

    def regions(self, service: str) -> set:
        return {region for seen_service, _, region in self.seen if seen_service == service}


def profile_only_environ(tmp_path: Path, moto_server: str) -> dict:
    """The agent's environment naming only a profile: no keys, no region variables."""
    (tmp_path / "credentials").write_text(
        f"[deployer]\naws_access_key_id = {PROFILE_KEY}\naws_secret_access_key = profile-secret\n")
    (tmp_path / "config").write_text(f"[profile deployer]\nregion = {PROFILE_REGION}\n")
    environ = {name: value for name, value in os.environ.items()
               if name not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    environ.update(AWS_PROFILE="deployer", AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"),
                   AWS_CONFIG_FILE=str(tmp_path / "config"), AWS_ENDPOINT_URL=moto_server)
    return environ


def working_copy(tmp_path: Path, environment: str, template: str = TEMPLATE) -> Path:
    root = tmp_path / "work"
    (root / "infra").mkdir(parents=True)
    (root / "envpipe.yml").write_text(CONFIG.format(environment=environment))
    (root / "infra" / "stack.yaml").write_text(template)
    return root


def test_a_profile_only_configuration_reaches_s3_sts_and_cloudformation_as_one_identity(
        s3_bucket, moto_server, tmp_path):
    # The process environment holds other keys (conftest's); only the mapping counts.
    root = working_copy(tmp_path, '    account_id: "123456789012"')
    signed = SignedRequests()
    ctx = StageContext.load(root / "envpipe.yml", environ=profile_only_environ(tmp_path, moto_server),
                            client_factory=signed)

    publish(ctx, version="1.0.1")
    promote(ctx, "test", "1.0.1")
    result = apply(ctx, "test")

    assert result.result == "done" and result.added == 1
    assert {key for _, key, _ in signed.seen} == {PROFILE_KEY}
    assert {service for service, _, _ in signed.seen} == {"s3", "sts", "cloudformation"}
    # The stack and the repository are in the profile's region. (STS signs for its
    # global endpoint's region, whatever the client's, as botocore does.)
    assert signed.regions("s3") == signed.regions("cloudformation") == {PROFILE_REGION}


def test_a_large_template_is_uploaded_with_the_assumed_roles_credentials(s3_bucket, moto_server, tmp_path):
    padding = "".join(f"# padding line {i:05d} keeps this template over the inline limit\n" for i in range(1000))
    root = working_copy(tmp_path, "    role_arn: arn:aws:iam::123456789012:role/deployer", TEMPLATE + padding)
    signed = SignedRequests()
    ctx = StageContext.load(root / "envpipe.yml", environ={**os.environ, "AWS_ENDPOINT_URL": moto_server},
                            client_factory=signed)
    publish(ctx, version="1.0.1")
    promote(ctx, "test", "1.0.1")
    before = len(signed.seen)

    result = apply(ctx, "test")

    assert result.result == "done"
    template = TEMPLATE + padding
    key = f".envpipe/templates/test/{hashlib.sha256(template.encode()).hexdigest()}.yaml"
    assert read_repository_file("s3://our-project-repository/pipelines", key) == template.encode()
    role_keys = {key for service, key, _ in signed.seen[before:] if service == "cloudformation"}
    assert len(role_keys) == 1 and os.environ["AWS_ACCESS_KEY_ID"] not in role_keys
    # The template went to S3 as the role, like the change set that reads it.
    template_writers = {key for service, key, _ in signed.seen[before:] if service == "s3"} & role_keys
    assert template_writers == role_keys


def test_a_profile_that_does_not_exist_is_a_usage_error(tmp_path, moto_server):
    environ = {**profile_only_environ(tmp_path, moto_server), "AWS_PROFILE": "nobody"}

    with pytest.raises(UsageError) as raised:
        client("s3", environ)
    assert str(raised.value) == ("AWS profile 'nobody' (AWS_PROFILE) is not in the agent's AWS config files; "
                                 "fix AWS_PROFILE or add the profile")
