"""State apart from the artefacts (environments[].state) and repository_encryption (SPEC §11)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest

from envpipe_agent import StageContext, apply, promote, publish
from envpipe_agent.config import parse_config
from envpipe_agent.errors import ConfigError
from envpipe_agent.tools.terraform import backend_settings

KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
BASE = {"project": "our-project", "repository": "s3://our-project-repository",
        "environments": [{"name": "test"},
                         {"name": "production", "approval": "manual",
                          "state": {"bucket": "production-state", "region": "eu-west-1",
                                    "role_arn": "arn:aws:iam::210987654321:role/state"}}],
        "terraform": {"state": {"bucket": "our-project-state"}}}


def config(**overrides):
    return parse_config({**BASE, **overrides}, Path("/work/envpipe.yml"))


def test_an_environments_own_state_overrides_the_shared_one():
    cfg = config()
    assert cfg.state(cfg.environment("test")).bucket == "our-project-state"
    production = cfg.state(cfg.environment("production"))
    assert (production.bucket, production.key_for("production", "our-project"), production.region,
            production.role_arn) == ("production-state", "production/terraform.tfstate", "eu-west-1",
                                     "arn:aws:iam::210987654321:role/state")


@pytest.mark.parametrize("overrides, where", [
    ({"environments": [{"name": "test", "state": {"bucket": "states", "key": "fixed.tfstate"}},
                       {"name": "staging", "state": {"bucket": "states", "key": "fixed.tfstate"}}]},
     "environments[1].state"),
    ({"environments": [{"name": "test", "state": {"bucket": "states", "rolearn": "x"}}]},
     "environments[0].state.rolearn"),
    ({"repository_encryption": {"kms_key_id": "not a key"}}, "repository_encryption.kms_key_id"),
])
def test_shared_or_mistyped_state_and_keys_are_configuration_errors(overrides, where):
    with pytest.raises(ConfigError, match=re.escape(f"envpipe.yml: {where}:")):
        config(**overrides)


def test_terraform_backend_assumes_the_state_role_and_encrypts_with_the_key():
    cfg = config(repository_encryption={"kms_key_id": KEY})
    request = SimpleNamespace(config=cfg, environment=cfg.environment("production"), repository=None)
    settings = backend_settings(request, {"AWS_DEFAULT_REGION": "us-east-1"})["s3"]
    assert settings == {"bucket": "production-state", "key": "production/terraform.tfstate", "region": "eu-west-1",
                        "use_lockfile": True, "assume_role": {"role_arn": "arn:aws:iam::210987654321:role/state"},
                        "encrypt": True, "kms_key_id": KEY}


def test_every_object_envpipe_writes_names_the_kms_key(project, s3, monkeypatch):
    if not project.repository.startswith("s3://"):
        pytest.skip("server-side encryption is S3's")
    # A key of the server's own KMS: Terraform checks that the backend's key is a KMS key ARN.
    key = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    config_path = project.root / "envpipe.yml"
    config_path.write_text(config_path.read_text() + f"repository_encryption: {{kms_key_id: \"{key}\"}}\n")
    # Large enough for a multipart upload, and a multipart copy's single-part sibling.
    (project.source / "large.bin").write_bytes(os.urandom(17 * 1024 * 1024))
    ctx = StageContext.load(config_path, environ=dict(os.environ))
    publish(ctx, version="1.0.1")
    promote(ctx, "test", version="1.0.1")
    apply(ctx, "test")  # Terraform's backend writes the state (and its lock file) with the key too
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="our-project-repository")
            for item in page.get("Contents", ())]
    assert any(k.endswith("1.0.1/large.bin") for k in keys) and any(k.endswith("test/large.bin") for k in keys)
    assert any("/.envpipe/records/test/" in k for k in keys)
    assert any(k.endswith(".envpipe/state/test/terraform.tfstate") for k in keys)
    for name in keys:
        head = s3.head_object(Bucket="our-project-repository", Key=name)
        assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == ("aws:kms", key), name
