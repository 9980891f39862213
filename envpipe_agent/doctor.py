"""doctor: the artefact repository's own safety checks (SPEC §11), read-only.

The bucket holds every environment's definition, records and, by default, state, so
it deserves the settings AWS recommends for such a bucket. Each check reads one
setting and says, when it is missing, exactly what to set. Nothing is ever changed.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional

from envpipe_agent import aws_credentials
from envpipe_agent.config import Config
from envpipe_agent.errors import RepositoryError, UsageError

OK = "ok"
FINDING = "finding"
WARNING = "warning"

# Error codes S3 answers when a setting was never made: the check's "not set".
_NOT_CONFIGURED = {"ServerSideEncryptionConfigurationNotFoundError", "NoSuchPublicAccessBlockConfiguration",
                   "NoSuchBucketPolicy", "OwnershipControlsNotFoundError"}
PUBLIC_ACCESS_SETTINGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | finding | warning
    detail: str

    def line(self) -> str:
        return f"{self.status.upper():8} {self.name}: {self.detail}"

    def as_dict(self) -> Dict[str, str]:
        return asdict(self)


def _read(call: Callable[..., Dict[str, Any]], bucket: str) -> Optional[Dict[str, Any]]:
    """A bucket setting, or None when it was never made; other errors stop the run."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _NOT_CONFIGURED:
            return None
        if code == "NoSuchBucket":
            raise UsageError(f"bucket {bucket!r} does not exist: create it or fix 'repository' in envpipe.yml") from None
        raise RepositoryError(f"cannot read the settings of bucket {bucket} ({call.__name__}): {code}; "
                              "doctor needs the read-only policy 'envpipe iam status' prints") from None
    except BotoCoreError as exc:
        raise RepositoryError(f"cannot read the settings of bucket {bucket}: {exc}") from None


def _versioning(client, bucket: str) -> Check:
    status = (_read(client.get_bucket_versioning, bucket) or {}).get("Status")
    if status == "Enabled":
        return Check("versioning", OK, "enabled")
    return Check("versioning", FINDING,
                 f"is {status or 'off'}: an overwritten or deleted object (state, records) cannot be recovered; "
                 f"aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled")


def _encryption(client, bucket: str, kms_key_id: Optional[str]) -> Check:
    rules = ((_read(client.get_bucket_encryption, bucket) or {})
             .get("ServerSideEncryptionConfiguration", {}).get("Rules", []))
    defaults = [rule.get("ApplyServerSideEncryptionByDefault") or {} for rule in rules]
    algorithms = {d.get("SSEAlgorithm") for d in defaults}
    fix = (f"aws s3api put-bucket-encryption --bucket {bucket} --server-side-encryption-configuration "
           + ("'{\"Rules\":[{\"ApplyServerSideEncryptionByDefault\":{\"SSEAlgorithm\":\"aws:kms\","
              f"\"KMSMasterKeyID\":\"{kms_key_id}\"}},\"BucketKeyEnabled\":true}}]}}'" if kms_key_id else
              "'{\"Rules\":[{\"ApplyServerSideEncryptionByDefault\":{\"SSEAlgorithm\":\"aws:kms\"},"
              "\"BucketKeyEnabled\":true}]}'"))
    if not algorithms - {None}:
        return Check("default encryption", FINDING, f"none set; {fix}")
    if kms_key_id and not any(d.get("KMSMasterKeyID") == kms_key_id for d in defaults):
        return Check("default encryption", FINDING,
                     f"is {', '.join(sorted(a for a in algorithms if a))}, not repository_encryption's key "
                     f"{kms_key_id}; {fix}")
    return Check("default encryption", OK, ", ".join(sorted(a for a in algorithms if a)))


def _public_access(client, bucket: str) -> Check:
    settings = (_read(client.get_public_access_block, bucket) or {}).get("PublicAccessBlockConfiguration", {})
    missing = [name for name in PUBLIC_ACCESS_SETTINGS if not settings.get(name)]
    if not missing:
        return Check("block public access", OK, "all four settings on")
    return Check("block public access", FINDING,
                 f"{', '.join(missing)} off; aws s3api put-public-access-block --bucket {bucket} "
                 "--public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,"
                 "BlockPublicPolicy=true,RestrictPublicBuckets=true")


def _values(value: Any) -> List[str]:
    """A policy element that may be one value or a list, as lower-case strings."""
    return [str(item).lower() for item in (value if isinstance(value, list) else [value])]


def _denies_insecure_transport(policy: Dict[str, Any]) -> bool:
    """A statement denying everyone everything on the bucket when aws:SecureTransport is false."""
    statements = policy.get("Statement") or []
    for statement in statements if isinstance(statements, list) else [statements]:
        if not isinstance(statement, dict) or statement.get("Effect") != "Deny":
            continue
        condition = {str(k).lower(): v for k, v in ((statement.get("Condition") or {}).get("Bool") or {}).items()}
        principal = statement.get("Principal")
        everyone = principal == "*" or (isinstance(principal, dict) and _values(principal.get("AWS")) == ["*"])
        if (everyone and "false" in _values(condition.get("aws:securetransport"))
                and any(action in ("s3:*", "*") for action in _values(statement.get("Action")))):
            return True
    return False


def _tls_only(client, bucket: str, partition: str) -> Check:
    raw = (_read(client.get_bucket_policy, bucket) or {}).get("Policy")
    try:
        policy = json.loads(raw) if raw else {}
    except ValueError:
        policy = {}
    if _denies_insecure_transport(policy):
        return Check("TLS only", OK, "the bucket policy denies requests without TLS")
    statement = {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                 "Resource": [f"arn:{partition}:s3:::{bucket}", f"arn:{partition}:s3:::{bucket}/*"],
                 "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    return Check("TLS only", FINDING, "no bucket policy statement denies requests without TLS; add "
                                      f"{json.dumps(statement, separators=(',', ':'))} to the bucket policy")


def _ownership(client, bucket: str) -> Check:
    rules = ((_read(client.get_bucket_ownership_controls, bucket) or {})
             .get("OwnershipControls", {}).get("Rules", []))
    ownership = {rule.get("ObjectOwnership") for rule in rules}
    if "BucketOwnerEnforced" in ownership:
        return Check("object ownership", OK, "BucketOwnerEnforced (ACLs disabled)")
    return Check("object ownership", FINDING,
                 f"is {', '.join(sorted(o for o in ownership if o)) or 'not set'}: ACLs still apply; "
                 f"aws s3api put-bucket-ownership-controls --bucket {bucket} "
                 "--ownership-controls 'Rules=[{ObjectOwnership=BucketOwnerEnforced}]'")


def state_checks(config: Config, bucket: Optional[str]) -> List[Check]:
    """Where the state of each approval: manual environment lives: in the artefact
    bucket, whoever can read artefacts can read it (a warning, not an error)."""
    checks = []
    if config.tool != "terraform":
        return checks
    for env in config.environments:
        if not env.manual:
            continue
        state = config.state(env)
        where = state.bucket if state is not None else bucket
        if state is None or where == bucket:
            checks.append(Check(f"{env.name} state", WARNING,
                                f"kept in the artefact bucket {where or '(a folder)'}: whoever can read artefacts can "
                                f"read {env.name}'s state; give it its own (environments[].state: bucket, key, "
                                "region, role_arn in its own account)"))
        else:
            checks.append(Check(f"{env.name} state", OK, f"in s3://{state.bucket}, apart from the artefacts"))
    return checks


def doctor(config: Config, repository_url: str, environ: Mapping[str, str],
           client_factory: aws_credentials.ClientFactory = aws_credentials.client,
           partition: str = "aws") -> List[Check]:
    """Every check, in a fixed order; the S3 client comes from ``client_factory``
    (made only for an s3:// repository)."""
    if not repository_url.startswith("s3://"):
        return [Check("repository", WARNING, f"{repository_url} is a folder: the bucket checks do not apply; "
                                             "keep it private to the agent's user"),
                *state_checks(config, None)]
    bucket = repository_url[len("s3://"):].partition("/")[0]
    client = client_factory("s3", environ)
    kms_key_id = config.repository_encryption.kms_key_id if config.repository_encryption else None
    return [
        _versioning(client, bucket),
        _encryption(client, bucket, kms_key_id),
        _public_access(client, bucket),
        _tls_only(client, bucket, partition),
        _ownership(client, bucket),
        *state_checks(config, bucket),
    ]
