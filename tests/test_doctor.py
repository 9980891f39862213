"""`envpipe doctor`: the repository bucket's safety settings, checked read-only (SPEC §11)."""
from __future__ import annotations

import json

from conftest import run_envpipe

BUCKET = "our-project-repository"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
CONFIG = f"""\
project: our-project
repository: s3://{BUCKET}/pipelines
repository_encryption: {{kms_key_id: "{KEY}"}}
environments:
  - name: test
  - name: production
    approval: manual
"""
STATE_APART = """\
    state: {bucket: our-project-production-state, region: us-east-1}
"""


def settings(s3) -> dict:
    """Everything doctor reads, as S3 reports it (errors included), to prove it changed nothing."""
    result = {}
    for name in ("get_bucket_versioning", "get_bucket_encryption", "get_public_access_block", "get_bucket_policy",
                 "get_bucket_ownership_controls"):
        try:
            response = getattr(s3, name)(Bucket=BUCKET)
            response.pop("ResponseMetadata", None)
            result[name] = response
        except s3.exceptions.ClientError as exc:
            result[name] = exc.response["Error"]["Code"]
    return result


def apply_recommended_settings(s3) -> None:
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY},
        "BucketKeyEnabled": True}]})
    s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))
    s3.put_bucket_ownership_controls(Bucket=BUCKET, OwnershipControls={
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})


def test_a_default_bucket_gets_one_line_per_finding_and_nothing_changes(s3, s3_bucket, tmp_path):
    (tmp_path / "envpipe.yml").write_text(CONFIG)
    before = settings(s3)
    result = run_envpipe(["doctor"], cwd=tmp_path, check=1)
    lines = result.stdout.splitlines()
    assert [line.split(":")[0].split(None, 1) for line in lines] == [
        ["FINDING", "versioning"], ["FINDING", "default encryption"], ["FINDING", "block public access"],
        ["FINDING", "TLS only"], ["FINDING", "object ownership"], ["WARNING", "production state"]]
    assert "put-bucket-versioning --bucket our-project-repository" in lines[0]
    assert KEY in lines[1] and "BucketOwnerEnforced" in lines[4] and "environments[].state" in lines[5]
    assert settings(s3) == before


def test_the_recommended_settings_and_state_apart_give_a_clean_bill(s3, s3_bucket, tmp_path):
    (tmp_path / "envpipe.yml").write_text(CONFIG + STATE_APART)
    apply_recommended_settings(s3)
    report = json.loads(run_envpipe(["doctor", "--json"], cwd=tmp_path, check=0).stdout)
    assert report["ok"] is True
    assert [(c["name"], c["status"]) for c in report["checks"]] == [
        ("versioning", "ok"), ("default encryption", "ok"), ("block public access", "ok"), ("TLS only", "ok"),
        ("object ownership", "ok"), ("production state", "ok")]


def test_another_key_than_repository_encryptions_is_a_finding(s3, s3_bucket, tmp_path):
    (tmp_path / "envpipe.yml").write_text(CONFIG + STATE_APART)
    apply_recommended_settings(s3)
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    result = run_envpipe(["doctor"], cwd=tmp_path, check=1)
    assert [line for line in result.stdout.splitlines() if not line.startswith("OK")] == [
        f"FINDING  default encryption: is AES256, not repository_encryption's key {KEY}; aws s3api "
        "put-bucket-encryption --bucket our-project-repository --server-side-encryption-configuration "
        "'{\"Rules\":[{\"ApplyServerSideEncryptionByDefault\":{\"SSEAlgorithm\":\"aws:kms\",\"KMSMasterKeyID\":"
        f"\"{KEY}\"}},\"BucketKeyEnabled\":true}}]}}'"]
