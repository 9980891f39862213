"""Credentials for one environment's stages (SPEC §7): role assumption and the account guard.

``environment_credentials`` returns the environment mapping the tool runs with: the
agent's own, or, when the environment names a ``role_arn``, the same mapping with the
agent's AWS credentials replaced by the role's temporary ones. When the environment
names an ``account_id``, the resulting identity is checked with GetCallerIdentity
before anything runs. Terraform and CloudFormation get the same credentials, the
first through its process environment, the second through boto3 clients built from
that mapping.

``client`` is the one way envpipe makes an AWS client (the S3 repository, STS,
CloudFormation, the Terraform state bucket's region): credentials, profile, region and
endpoint all come from the mapping it is given. Components take it as a
``client_factory`` argument (as s3transfer takes its client), so a caller or a test
can pass another.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
import datetime as dt
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from envpipe_agent.ci_context import CIContext
from envpipe_agent.config import Environment
from envpipe_agent.errors import AccountMismatch, Refused, StageFailed, UsageError

log = logging.getLogger(__name__)

# Replaced wholesale by an assumed role: a profile left behind would win over the
# role's keys in some tools' credential chains.
_AGENT_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                               "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                               "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME")
_DENIED = {"AccessDenied", "AccessDeniedException", "InvalidClientTokenId", "ExpiredToken",
           "SignatureDoesNotMatch", "UnrecognizedClientException"}
SESSION_SECONDS = 3600


@dataclass(frozen=True)
class Credentials:
    """The mapping a tool runs with, and what was established about it."""

    environ: Mapping[str, str]
    account: Optional[str] = None
    arn: Optional[str] = None
    role_arn: Optional[str] = None
    # Values to mask in everything printed (the role's secret key and token).
    secrets: Tuple[str, ...] = field(default=())

    def as_record(self) -> Dict[str, Optional[str]]:
        return {"account": self.account, "identity": self.arn, "role_arn": self.role_arn}


# client(service, environ, **client_kwargs) -> a boto3 client
ClientFactory = Callable[..., Any]
# Used when neither the mapping nor the profile names a region: STS and CloudFormation
# need one, and S3 takes this one as its global default.
DEFAULT_REGION = "us-east-1"


def region(environ: Mapping[str, str]) -> Optional[str]:
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None


def endpoint_url(service: str, environ: Mapping[str, str]) -> Optional[str]:
    """The standard per-service endpoint variable, else the global one (SPEC §3)."""
    specific = f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}"
    return environ.get(specific) or environ.get("AWS_ENDPOINT_URL") or None


def _parse_timestamp(value: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        from botocore.utils import parse_timestamp

        return parse_timestamp(value)  # other formats: botocore's general parser


def client(service: str, environ: Mapping[str, str], **kwargs: Any) -> Any:
    """A boto3 client for ``service`` whose credentials, region and endpoint come from
    ``environ`` (not from this process's environment), so an assumed role reaches it.

    Credentials: the mapping's access keys, else its profile (``AWS_PROFILE``), else
    botocore's chain (an instance role, say). Region: the mapping's, else the
    profile's, else us-east-1. ``kwargs`` go to ``Session.client`` (``config=``).
    """
    import boto3
    import botocore.session
    from botocore.exceptions import ProfileNotFound

    core = botocore.session.Session()
    # botocore parses every timestamp with dateutil (~0.1 ms each): a listing of 2,000
    # keys spent longer parsing LastModified, which we never read, than waiting for S3.
    # AWS sends ISO 8601, which the standard library parses fast.
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_parse_timestamp)
    for name, (_, variables, _, convert) in core.session_var_map.items():
        # botocore's settings (AWS_CONFIG_FILE, AWS_MAX_ATTEMPTS, AWS_CA_BUNDLE ...) from
        # the mapping; the profile and the region are chosen below.
        variables = [variables] if isinstance(variables, str) else variables or []
        value = next((environ[v] for v in variables if environ.get(v)), None)
        if value is not None and name not in ("profile", "region"):
            core.set_config_variable(name, convert(value) if convert else value)
    session_arguments: Dict[str, Any] = {"botocore_session": core}
    profile = environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE")
    if environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
        session_arguments.update(aws_access_key_id=environ["AWS_ACCESS_KEY_ID"],
                                 aws_secret_access_key=environ["AWS_SECRET_ACCESS_KEY"],
                                 aws_session_token=environ.get("AWS_SESSION_TOKEN") or None)
    elif profile:
        session_arguments["profile_name"] = profile
    try:
        session = boto3.session.Session(**session_arguments)
        # Named here, or botocore would take this process's AWS_DEFAULT_REGION first.
        kwargs.setdefault("region_name", region(environ) or core.get_scoped_config().get("region")
                          or DEFAULT_REGION)
    except ProfileNotFound:
        raise UsageError(f"AWS profile {profile!r} (AWS_PROFILE) is not in the agent's AWS config files; "
                         "fix AWS_PROFILE or add the profile") from None
    kwargs.setdefault("endpoint_url", endpoint_url(service, environ))
    return session.client(service, **kwargs)


def failure_types() -> Tuple[type, ...]:
    """Every exception botocore raises for a failed call. ``ResponseParserError`` (an
    answer that is no AWS response, such as a proxy's HTML error page) derives from
    neither of the other two."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    return ClientError, BotoCoreError, ResponseParserError


def describe_failure(exc: Exception, endpoint: Optional[str] = None) -> str:
    """One line saying what went wrong with an AWS call, whatever botocore raised.

    An error answer without code or message (a 503 from a load balancer, say) is
    described by its HTTP status and the endpoint, so the line is never empty.
    """
    from botocore.exceptions import ClientError
    from botocore.parsers import ResponseParserError

    where = f" from {endpoint}" if endpoint else ""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code") or "").strip(), str(error.get("Message") or "").strip()
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code and code != str(status):  # botocore puts the HTTP status where no code was sent
            return f"{code}: {message}" if message else f"{code} (HTTP {status}{where}, no message)"
        said = f" ({message})" if message else ""
        return f"HTTP {status or '?'}{said}{where}, with no AWS error code"
    if isinstance(exc, ResponseParserError):
        # Its text quotes the whole body (an HTML page): the first line says enough.
        first = str(exc).split("\n", 1)[0].rstrip(":").strip()
        return f"an answer{where} that is no AWS response ({first}); a proxy or a wrong endpoint URL?"
    return str(exc) or type(exc).__name__


def _call(action: str, call, *args: Any, **kwargs: Any) -> Dict[str, Any]:
    """Run an STS call, turning botocore's errors into one line with the right exit code."""
    from botocore.exceptions import ClientError, NoCredentialsError

    try:
        return call(*args, **kwargs)
    except NoCredentialsError:
        raise UsageError(f"cannot {action}: no AWS credentials found; give the agent credentials the usual "
                         "way (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an instance role)") from None
    except failure_types() as exc:
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        endpoint = getattr(getattr(call, "__self__", None), "meta", None)
        text = describe_failure(exc, getattr(endpoint, "endpoint_url", None))
        if code in _DENIED:
            raise Refused(f"cannot {action}: {text}; check the agent's credentials and the "
                          "role's trust policy") from None
        raise StageFailed(f"cannot {action}: {text}") from None


def assume_role(environ: Mapping[str, str], role_arn: str, session_name: str,
                duration: int = SESSION_SECONDS, client_factory: ClientFactory = client,
                ) -> Tuple[Dict[str, str], Tuple[str, ...]]:
    """``environ`` with the agent's AWS credentials replaced by ``role_arn``'s."""
    sts = client_factory("sts", environ)
    response = _call(f"assume role {role_arn}", sts.assume_role, RoleArn=role_arn,
                     RoleSessionName=session_name, DurationSeconds=duration)
    credentials = response["Credentials"]
    assumed = {k: v for k, v in environ.items() if k not in _AGENT_CREDENTIAL_VARIABLES}
    assumed.update(AWS_ACCESS_KEY_ID=credentials["AccessKeyId"],
                   AWS_SECRET_ACCESS_KEY=credentials["SecretAccessKey"],
                   AWS_SESSION_TOKEN=credentials["SessionToken"])
    return assumed, (credentials["SecretAccessKey"], credentials["SessionToken"], credentials["AccessKeyId"])


def caller_identity(environ: Mapping[str, str], client_factory: ClientFactory = client) -> Dict[str, Any]:
    return _call("ask STS who the credentials belong to (GetCallerIdentity)",
                 client_factory("sts", environ).get_caller_identity)


def environment_credentials(environment: Environment, environ: Mapping[str, str], ci: CIContext,
                            client_factory: ClientFactory = client) -> Credentials:
    """The credentials ``environment``'s stages run with; refuses a wrong account (exit 3)."""
    if not environment.role_arn and not environment.account_id:
        return Credentials(environ=dict(environ))
    tool_environ: Dict[str, str] = dict(environ)
    secrets: Tuple[str, ...] = ()
    if environment.role_arn:
        tool_environ, secrets = assume_role(environ, environment.role_arn, ci.session_name,
                                            client_factory=client_factory)
        log.info("%s: assumed role %s as session %s", environment.name, environment.role_arn, ci.session_name)
    identity = caller_identity(tool_environ, client_factory)
    account, arn = str(identity.get("Account")), identity.get("Arn")
    if environment.account_id and account != environment.account_id:
        raise AccountMismatch(
            f"environment {environment.name!r} is AWS account {environment.account_id}, but the credentials "
            f"are for account {account} ({arn}); give the agent that account's credentials or fix "
            f"'account_id'/'role_arn' for {environment.name} in envpipe.yml"
        )
    return Credentials(environ=tool_environ, account=account, arn=arn, role_arn=environment.role_arn,
                       secrets=secrets)
