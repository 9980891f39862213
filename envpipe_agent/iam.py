"""Least-privilege IAM policies for each stage, derived from envpipe.yml (SPEC §11).

A policy grants what a stage's own S3 calls need on the artefact repository and on
the state location envpipe manages, written as AWS authorizes those calls (the
Service Authorization Reference for Amazon S3):

* every object read, write and delete is scoped to the keys the stage touches:
  version folders (a version starts with a digit, so ``<prefix>/0*`` .. ``/9*``
  cover them and no environment folder or ``.envpipe/``), one environment's folder,
  its lock, records, summaries, results and its own state key;
* ``s3:ListBucket`` (listing, and the 404 S3 answers for a missing key instead of
  403) is limited with ``s3:prefix`` to the same keys; S3 sets ``s3:prefix`` to the
  key for that 404 check, so one condition serves both;
* a multipart upload is ``s3:PutObject`` (plus ``s3:AbortMultipartUpload`` for
  s3transfer's clean-up), a HEAD is ``s3:GetObject``, a CopyObject is ``s3:GetObject``
  on the source and ``s3:PutObject`` on the target, a batch delete is
  ``s3:DeleteObject`` on each key;
* with ``repository_encryption`` every reader needs ``kms:Decrypt`` and every writer
  ``kms:GenerateDataKey`` on the key.

Where an environment names ``role_arn``, envpipe reaches the repository with the
bound credentials and runs the tool (Terraform state, CloudFormation stacks) with the
role's: the stage's policy then grants ``sts:AssumeRole`` on it, and ``envpipe iam
role ENV`` prints what the role needs from envpipe. Likewise a state ``role_arn``
(``environments[].state``) is assumed by Terraform's backend: ``state-role ENV``.
What the stack's own resources need is the definition's business, not envpipe's.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from envpipe_agent.config import BLUEGREEN_SUFFIXES, Config, Environment
from envpipe_agent.errors import UsageError
from envpipe_agent.live import LIVE_PREFIX, live_key
from envpipe_agent.locking import lock_key
from envpipe_agent.policy import FREEZE_PREFIX, freeze_key
from envpipe_agent.records import RECORDS_PREFIX, RESULTS_PREFIX, SUMMARY_PREFIX
from envpipe_agent.registrations import REGISTRATIONS_PREFIX
from envpipe_agent.tools.cloudformation import TEMPLATE_PREFIX
from envpipe_agent.tools.terraform import STATE_LOCK_FILES, STATE_PREFIX, state_key

STAGES = ("publish", "promote", "apply", "test", "bluegreen", "status", "unlock", "freeze", "on-demand", "role",
          "state-role")
# The stages an environment's pipeline steps run, under that environment's credentials.
ENVIRONMENT_STAGES = ("promote", "apply", "test", "unlock")
VERSION_PATTERNS = tuple(f"{digit}*" for digit in "0123456789")
# Terraform's S3 backend lists this prefix on init to find workspaces.
TERRAFORM_WORKSPACES = "env:/*"
# IAM's limit for a managed policy, counted without white space.
MANAGED_POLICY_LIMIT = 6144

# What envpipe's CloudFormation runner calls on its stack: change sets (and those a
# stack left in review), waiters (DescribeStacks), events while waiting, drift detection
# for plan, the resources counted before a delete; TagResource because the stack is
# created with tags.
STACK_ACTIONS = ("cloudformation:CreateChangeSet", "cloudformation:DeleteChangeSet", "cloudformation:DeleteStack",
                 "cloudformation:DescribeChangeSet", "cloudformation:DescribeStackEvents",
                 "cloudformation:DescribeStackResourceDrifts", "cloudformation:DescribeStacks",
                 "cloudformation:DetectStackDrift", "cloudformation:ExecuteChangeSet",
                 "cloudformation:ListChangeSets", "cloudformation:ListStackResources",
                 "cloudformation:TagResource")
# Authorized on no resource (Resource "*" in the Service Authorization Reference).
UNSCOPED_STACK_ACTIONS = ("cloudformation:DescribeStackDriftDetectionStatus",)


@dataclass(frozen=True)
class Bucket:
    """An S3 bucket and the prefix envpipe's keys sit under, as ARNs and s3:prefix values."""

    partition: str
    name: str
    prefix: str = ""  # "" or ending in "/"

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:s3:::{self.name}"

    def key(self, pattern: str) -> str:
        return f"{self.prefix}{pattern}"

    def objects(self, pattern: str) -> str:
        return f"{self.arn}/{self.key(pattern)}"


class PolicyBuilder:
    """Statements keyed by Sid, merged when two stages grant under one Sid, and one
    ``s3:ListBucket`` statement per bucket covering every key pattern granted in it."""

    def __init__(self) -> None:
        self._statements: Dict[str, Dict[str, Any]] = {}
        self._listed: Dict[str, Tuple[Bucket, Set[str]]] = {}

    def allow(self, sid: str, actions: Sequence[str], resources: Sequence[str],
              condition: Optional[Dict[str, Any]] = None, effect: str = "Allow") -> None:
        statement = self._statements.setdefault(sid, {"Sid": sid, "Effect": effect, "Action": set(),
                                                      "Resource": set()})
        statement["Action"].update(actions)
        statement["Resource"].update(resources)
        if condition:
            statement["Condition"] = condition

    def deny(self, sid: str, actions: Sequence[str], resources: Sequence[str]) -> None:
        """An explicit deny: it wins over any allow, in this policy or another the principal holds."""
        self.allow(sid, actions, resources, effect="Deny")

    def objects(self, sid: str, actions: Sequence[str], bucket: Bucket, patterns: Sequence[str]) -> None:
        """``actions`` on the keys matching ``patterns``, which the policy may also list."""
        self.allow(sid, actions, [bucket.objects(p) for p in patterns])
        self._listed.setdefault(bucket.name, (bucket, set()))[1].update(bucket.key(p) for p in patterns)

    def list_prefix(self, bucket: Bucket, pattern: str) -> None:
        """Listing ``pattern`` (an s3:prefix value, not under the bucket's prefix)."""
        self._listed.setdefault(bucket.name, (bucket, set()))[1].add(pattern)

    def document(self) -> Dict[str, Any]:
        statements: List[Dict[str, Any]] = []
        for index, (bucket, patterns) in enumerate(self._listed.values()):
            statements.append({
                "Sid": "List" if index == 0 else f"List{index + 1}",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [bucket.arn],
                "Condition": {"StringLike": {"s3:prefix": sorted(patterns)}},
            })
        for statement in self._statements.values():
            statements.append({**statement, "Action": sorted(statement["Action"]),
                               "Resource": sorted(statement["Resource"])})
        return {"Version": "2012-10-17", "Statement": statements}


@dataclass(frozen=True)
class PolicyContext:
    config: Config
    repository: Bucket

    @property
    def partition(self) -> str:
        return self.repository.partition

    @property
    def region(self) -> str:
        variables = self.config.ci.variables
        return variables.get("AWS_REGION") or variables.get("AWS_DEFAULT_REGION") or "*"


def repository_bucket(url: Optional[str], config: Config) -> Bucket:
    """The repository's bucket and prefix; a folder repository has no IAM to speak of."""
    if not url or not url.startswith("s3://"):
        raise UsageError(f"IAM policies are for an s3:// repository; {url or 'no repository'} is not one: "
                         "set 'repository' in envpipe.yml (or --repo) to s3://bucket[/prefix]")
    name, _, prefix = url[len("s3://"):].partition("/")
    if not name:
        raise UsageError(f"repository {url!r}: no bucket name; use s3://bucket[/prefix]")
    prefix = prefix.strip("/")
    return Bucket(partition(config), name, f"{prefix}/" if prefix else "")


def partition(config: Config) -> str:
    """aws, aws-cn or aws-us-gov, from any ARN in the config."""
    states = [config.state(env) for env in config.environments]
    arns = [env.role_arn for env in config.environments] + [state.role_arn for state in states if state]
    if config.repository_encryption:
        arns.append(config.repository_encryption.kms_key_id)
    for arn in arns:
        if arn and arn.startswith("arn:"):
            return arn.split(":")[1]
    return "aws"


# --- the pieces a stage is made of ----------------------------------------------------------


def _kms(builder: PolicyBuilder, ctx: PolicyContext, write: bool) -> None:
    encryption = ctx.config.repository_encryption
    if encryption is None:
        return
    actions = ["kms:Decrypt", "kms:GenerateDataKey"] if write else ["kms:Decrypt"]
    key = encryption.kms_key_id
    if re.match(r"arn:[^:]+:kms:[^:]+:\d{12}:key/", key):
        builder.allow("RepositoryKey", actions, [key])
        return
    if key.startswith("alias/") or ":alias/" in key:
        # IAM authorizes KMS calls on the key an alias points to: name the alias in a condition.
        alias = key[key.index("alias/"):]
        builder.allow("RepositoryKey", actions, [f"arn:{ctx.partition}:kms:*:*:key/*"],
                      {"ForAnyValue:StringEquals": {"kms:ResourceAliases": [alias]}})
        return
    builder.allow("RepositoryKey", actions, [f"arn:{ctx.partition}:kms:{ctx.region}:*:key/{key}"])


def _versions(builder: PolicyBuilder, ctx: PolicyContext, write: bool) -> None:
    actions = ["s3:GetObject"]
    if write:
        actions += ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    builder.objects("Versions", actions, ctx.repository, VERSION_PATTERNS)


def _folder(builder: PolicyBuilder, ctx: PolicyContext, env: str, actions: Sequence[str]) -> None:
    builder.objects("EnvironmentFolder", actions, ctx.repository, [f"{env}/*"])


def _lock(builder: PolicyBuilder, ctx: PolicyContext, env: str, actions: Sequence[str]) -> None:
    builder.objects("Lock", actions, ctx.repository, [lock_key(env)])


def _freeze(builder: PolicyBuilder, ctx: PolicyContext, env: str, actions: Sequence[str]) -> None:
    builder.objects("Freeze", actions, ctx.repository, [freeze_key(env)])


def _gate_results(builder: PolicyBuilder, ctx: PolicyContext, env: Environment) -> None:
    """The version's test result in the environment before ``env`` (the gate, the soak)."""
    previous = ctx.config.previous_environment(env.name)
    if previous is not None:
        builder.objects("GateResults", ["s3:GetObject"], ctx.repository, [f"{RESULTS_PREFIX}{previous.name}/*"])


def _records(builder: PolicyBuilder, ctx: PolicyContext, env: str, actions: Sequence[str]) -> None:
    builder.objects("Records", actions, ctx.repository, [f"{RECORDS_PREFIX}{env}/*", f"{SUMMARY_PREFIX}{env}/*"])


def _assume(builder: PolicyBuilder, sid: str, role_arn: str) -> None:
    builder.allow(sid, ["sts:AssumeRole"], [role_arn])


def _state(builder: PolicyBuilder, ctx: PolicyContext, env: Environment) -> None:
    """Terraform's S3 backend on this environment's own state: the state object, and
    its lock file (conditional create, read when held, delete)."""
    state = ctx.config.state(env)
    if state is not None:
        bucket = Bucket(ctx.partition, state.bucket)
        key = state.key_for(env.name, ctx.config.project)
    else:
        bucket, key = ctx.repository, state_key(env.name)
    builder.objects("State", ["s3:GetObject", "s3:PutObject"], bucket, [key])
    builder.objects("StateLock", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], bucket, [f"{key}.tflock"])
    builder.list_prefix(bucket, TERRAFORM_WORKSPACES)
    _kms(builder, ctx, write=True)


def _tool(builder: PolicyBuilder, ctx: PolicyContext, env: Environment) -> None:
    """What the tool's own calls need, made with the environment's role when it has one."""
    if ctx.config.tool == "cloudformation":
        stack = ctx.config.cloudformation.stack_name.format(project=ctx.config.project, environment=env.name)
        builder.allow("Stack", STACK_ACTIONS,
                      [f"arn:{ctx.partition}:cloudformation:{ctx.region}:{env.account_id or '*'}:stack/{stack}/*"])
        builder.allow("StackDriftStatus", UNSCOPED_STACK_ACTIONS, ["*"])
        # CloudFormation fetches a large template from its TemplateURL with the caller's rights.
        builder.objects("Templates", ["s3:GetObject"], ctx.repository, [f"{TEMPLATE_PREFIX}/{env.name}/*"])
        _kms(builder, ctx, write=False)
        return
    state = ctx.config.state(env)
    if state is not None and state.role_arn:
        _assume(builder, "AssumeStateRole", state.role_arn)
    else:
        _state(builder, ctx, env)


# --- stages -------------------------------------------------------------------------------------


def _publish(builder: PolicyBuilder, ctx: PolicyContext) -> None:
    _versions(builder, ctx, write=True)
    _kms(builder, ctx, write=True)


def _promote(builder: PolicyBuilder, ctx: PolicyContext, env: Environment) -> None:
    _versions(builder, ctx, write=False)
    _gate_results(builder, ctx, env)
    _freeze(builder, ctx, env.name, ["s3:GetObject"])
    _folder(builder, ctx, env.name, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"])
    _lock(builder, ctx, env.name, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"])
    _records(builder, ctx, env.name, ["s3:PutObject"])
    _kms(builder, ctx, write=True)


def _apply(builder: PolicyBuilder, ctx: PolicyContext, env: Environment) -> None:
    """apply, plan (of the folder or of a published version) and destroy."""
    _versions(builder, ctx, write=False)
    _folder(builder, ctx, env.name, ["s3:GetObject", "s3:DeleteObject"])  # destroy empties it
    _lock(builder, ctx, env.name, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"])
    _records(builder, ctx, env.name, ["s3:GetObject", "s3:PutObject"])
    _freeze(builder, ctx, env.name, ["s3:GetObject"])
    if env.soak is not None:  # the soak is timed from the version's test in the environment before
        _gate_results(builder, ctx, env)
    if ctx.config.tool == "cloudformation":  # a large template goes up by envpipe, and is removed with the stack
        builder.objects("Templates", ["s3:PutObject", "s3:DeleteObject"], ctx.repository,
                        [f"{TEMPLATE_PREFIX}/{env.name}/*"])
    _kms(builder, ctx, write=True)
    if env.role_arn:
        _assume(builder, "AssumeEnvironmentRole", env.role_arn)
    else:
        _tool(builder, ctx, env)
    # A blue-green environment's plan is its idle instance's (bluegreen ENV does the rest).
    if env.bluegreen is not None:
        builder.objects("Live", ["s3:GetObject"], ctx.repository, [live_key(env.name)])
    for instance in _bluegreen_instances(env):
        _folder(builder, ctx, instance.name, ["s3:GetObject"])
        _records(builder, ctx, instance.name, ["s3:GetObject", "s3:PutObject"])
        if not env.role_arn:
            _tool(builder, ctx, instance)


def _test(builder: PolicyBuilder, ctx: PolicyContext, env: Environment) -> None:
    _folder(builder, ctx, env.name, ["s3:GetObject"])
    _records(builder, ctx, env.name, ["s3:GetObject", "s3:PutObject"])
    # read first: a passing result keeps the time the version started passing (the soak's)
    builder.objects("TestResults", ["s3:GetObject", "s3:PutObject"], ctx.repository,
                    [f"{RESULTS_PREFIX}{env.name}/*"])
    _kms(builder, ctx, write=True)
    if env.role_arn:  # the test suite runs with the environment's role
        _assume(builder, "AssumeEnvironmentRole", env.role_arn)


def _bluegreen_instances(env: Environment) -> Tuple[Environment, ...]:
    """A blue-green environment's instances and router, as envpipe_agent.instances makes
    them: the environment's role and account, never its own state."""
    if env.bluegreen is None:
        return ()
    return tuple(Environment(name=f"{env.name}-{suffix}", role_arn=env.role_arn, account_id=env.account_id,
                             like=env.name) for suffix in BLUEGREEN_SUFFIXES)


def _bluegreen(builder: PolicyBuilder, ctx: PolicyContext, env: Environment) -> None:
    """bluegreen ENV (release, --rollback, --finish): ENV's gate, lock, folder, records and
    result, the live object, and for each instance and the router what promote, apply,
    test and destroy need there."""
    if env.bluegreen is None:
        raise UsageError(f"environment {env.name!r} is not released blue-green (no 'bluegreen:' in envpipe.yml): "
                         f"its pipeline runs promote, apply and test, whose policies 'envpipe iam STAGE {env.name}' "
                         "prints")
    _promote(builder, ctx, env)
    _test(builder, ctx, env)
    builder.objects("Live", ["s3:GetObject", "s3:PutObject"], ctx.repository, [live_key(env.name)])
    read_write = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    for instance in _bluegreen_instances(env):
        _folder(builder, ctx, instance.name, read_write)
        _lock(builder, ctx, instance.name, read_write)
        _records(builder, ctx, instance.name, ["s3:GetObject", "s3:PutObject"])
        builder.objects("TestResults", ["s3:GetObject", "s3:PutObject"], ctx.repository,
                        [f"{RESULTS_PREFIX}{instance.name}/*"])
        if ctx.config.tool == "cloudformation":
            builder.objects("Templates", read_write, ctx.repository, [f"{TEMPLATE_PREFIX}/{instance.name}/*"])
        if env.role_arn:
            _assume(builder, "AssumeEnvironmentRole", env.role_arn)
        else:
            _tool(builder, ctx, instance)


def _unlock(builder: PolicyBuilder, ctx: PolicyContext, env: Environment) -> None:
    """unlock, and unlock --state, which holds the environment's lock while it removes
    a stale Terraform lock file beside a state kept in the repository."""
    _lock(builder, ctx, env.name, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"])
    _records(builder, ctx, env.name, ["s3:PutObject"])
    if ctx.config.tool == "terraform" and ctx.config.state(env) is None:
        folder = state_key(env.name).rsplit("/", 1)[0]
        builder.objects("StateLockFiles", ["s3:GetObject", "s3:DeleteObject"], ctx.repository,
                        [f"{folder}/{name}" for name in STATE_LOCK_FILES])
        builder.list_prefix(ctx.repository, ctx.repository.key(f"{folder}/*"))
    _kms(builder, ctx, write=True)


def _status(builder: PolicyBuilder, ctx: PolicyContext) -> None:
    """status, history, verify and doctor: reads every folder (path environments,
    blue-green instances, on-demand ones, versions) and what .envpipe/ says about them,
    and the bucket's settings; never state or templates, never a write."""
    _versions(builder, ctx, write=False)
    builder.objects("Folders", ["s3:GetObject"], ctx.repository, LETTER_PATTERNS)
    builder.objects("Records", ["s3:GetObject"], ctx.repository,
                    [*INSTANCE_RECORDS, ".envpipe/locks/*", f"{REGISTRATIONS_PREFIX}*", f"{FREEZE_PREFIX}*",
                     f"{LIVE_PREFIX}*"])
    builder.allow("BucketSettings", ["s3:GetBucketOwnershipControls", "s3:GetBucketPolicy",
                                     "s3:GetBucketPublicAccessBlock", "s3:GetBucketVersioning",
                                     "s3:GetEncryptionConfiguration"], [ctx.repository.arn])
    _kms(builder, ctx, write=False)


LETTER_PATTERNS = tuple(f"{letter}*" for letter in "abcdefghijklmnopqrstuvwxyz")
# Per-instance data under .envpipe/, keyed by the instance's name: replaced and removed,
# or (records) only ever added.
INSTANCE_DATA = (".envpipe/locks/*", f"{REGISTRATIONS_PREFIX}*", f"{TEMPLATE_PREFIX}/*")
INSTANCE_RECORDS = (f"{RECORDS_PREFIX}*", f"{SUMMARY_PREFIX}*", f"{RESULTS_PREFIX}*")


def _freeze_stage(builder: PolicyBuilder, ctx: PolicyContext, env: Environment) -> None:
    """freeze and unfreeze: the environment's freeze object, on the record."""
    _freeze(builder, ctx, env.name, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"])
    _records(builder, ctx, env.name, ["s3:PutObject"])
    _kms(builder, ctx, write=True)


def _on_demand(builder: PolicyBuilder, ctx: PolicyContext) -> None:
    """env create|list|extend|destroy|reap and sandbox up|test|destroy, and the ordinary
    stages on such an instance: any name not on the path. An instance's name is only
    known when it is created, so its folder and data are granted by pattern (names
    start with a letter) and every path environment but ``like`` is denied explicitly;
    ``like``'s own is left to its own policy, which the generated on-demand jobs bind
    together with this one."""
    config = ctx.config
    like = config.environment(config.on_demand_settings.like)
    read_write = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    _versions(builder, ctx, write=False)
    builder.objects("Instances", read_write, ctx.repository, LETTER_PATTERNS)
    builder.objects("InstanceData", read_write, ctx.repository, INSTANCE_DATA)
    builder.objects("InstanceRecords", ["s3:GetObject", "s3:PutObject"], ctx.repository, INSTANCE_RECORDS)
    builder.objects("Freeze", ["s3:GetObject"], ctx.repository, [f"{FREEZE_PREFIX}*"])
    _kms(builder, ctx, write=True)
    state = config.terraform.state  # an instance never has an environment's own state
    if config.tool == "cloudformation":
        stack = config.cloudformation.stack_name.format(project=config.project, environment="*")
        builder.allow("Stack", STACK_ACTIONS, [f"arn:{ctx.partition}:cloudformation:{ctx.region}:"
                                               f"{like.account_id or '*'}:stack/{stack}/*"])
        builder.allow("StackDriftStatus", UNSCOPED_STACK_ACTIONS, ["*"])
    elif state is not None:
        bucket = Bucket(ctx.partition, state.bucket)
        key = state.key_for("*", config.project)
        if state.role_arn:
            _assume(builder, "AssumeStateRole", state.role_arn)
        else:
            builder.objects("State", read_write, bucket, [key, f"{key}.tflock"])
            builder.list_prefix(bucket, TERRAFORM_WORKSPACES)
    else:
        builder.objects("State", read_write, ctx.repository, [f"{STATE_PREFIX}*"])
        builder.list_prefix(ctx.repository, TERRAFORM_WORKSPACES)
    if like.role_arn:
        _assume(builder, "AssumeEnvironmentRole", like.role_arn)
    for env in [*config.environments, *(i for e in config.environments for i in _bluegreen_instances(e))]:
        if like.name in (env.name, env.like):
            continue
        builder.deny("DenyPathEnvironments", ["s3:PutObject", "s3:DeleteObject"], [
            ctx.repository.objects(pattern) for pattern in (
                f"{env.name}/*", lock_key(env.name), f"{RECORDS_PREFIX}{env.name}/*",
                f"{SUMMARY_PREFIX}{env.name}/*", f"{RESULTS_PREFIX}{env.name}/*")])
        own = config.state(env)
        if config.tool == "terraform" and not (own and own.role_arn):
            if own is not None:
                key = f"{own.bucket}/{own.key_for(env.name, config.project)}"
                denied = [f"arn:{ctx.partition}:s3:::{key}", f"arn:{ctx.partition}:s3:::{key}.tflock"]
            else:
                denied = [ctx.repository.objects(f"{STATE_PREFIX}{env.name}/*")]
            builder.deny("DenyPathState", read_write, denied)
        if config.tool == "cloudformation":
            stack = config.cloudformation.stack_name.format(project=config.project, environment=env.name)
            builder.deny("DenyPathStacks", ["cloudformation:*"],
                         [f"arn:{ctx.partition}:cloudformation:*:*:stack/{stack}/*"])


def _role(builder: PolicyBuilder, ctx: PolicyContext, env: Environment) -> None:
    if not env.role_arn:
        raise UsageError(f"environment {env.name!r} has no role_arn: its stages run with the bound credentials, "
                         f"whose policy 'envpipe iam apply {env.name}' prints")
    for each in (env, *_bluegreen_instances(env)):
        _tool(builder, ctx, each)


def _state_role(builder: PolicyBuilder, ctx: PolicyContext, env: Environment) -> None:
    state = ctx.config.state(env)
    if state is None or not state.role_arn:
        raise UsageError(f"environment {env.name!r} has no state role_arn (environments[].state.role_arn or "
                         "terraform.state.role_arn): its state is reached with the stage's own credentials")
    _state(builder, ctx, env)


_ENVIRONMENT_STAGES = {"promote": _promote, "apply": _apply, "test": _test, "bluegreen": _bluegreen,
                       "unlock": _unlock, "freeze": _freeze_stage,
                       "role": _role, "state-role": _state_role}


def stage_policy(config: Config, repository_url: Optional[str], stage: str,
                 environment: Optional[str] = None) -> Dict[str, Any]:
    """The policy document for ``stage`` (and ``environment``, for the stages that take one)."""
    ctx = PolicyContext(config, repository_bucket(repository_url, config))
    builder = PolicyBuilder()
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    if stage in ("publish", "status", "on-demand"):
        if environment:
            raise UsageError(f"'{stage}' takes no environment: its policy is the same for all of them")
        {"publish": _publish, "status": _status, "on-demand": _on_demand}[stage](builder, ctx)
    else:
        if not environment:
            raise UsageError(f"'{stage}' needs an environment: envpipe iam {stage} ENV "
                             f"(one of {', '.join(config.environment_names)})")
        _ENVIRONMENT_STAGES[stage](builder, ctx, config.environment(environment))
    return builder.document()


def environment_policies(config: Config, repository_url: Optional[str]) -> Dict[str, Dict[str, Any]]:
    """One policy per environment covering all its stages: what a generated pipeline's
    credential for that environment carries. The first environment's also publishes,
    as the generated pipelines bind its credentials for the Publish stage."""
    ctx = PolicyContext(config, repository_bucket(repository_url, config))
    policies = {}
    for index, env in enumerate(config.environments):
        builder = PolicyBuilder()
        if index == 0:
            _publish(builder, ctx)
        for stage in ENVIRONMENT_STAGES:
            _ENVIRONMENT_STAGES[stage](builder, ctx, env)
        if env.bluegreen is not None:  # its pipeline stage runs 'envpipe bluegreen'
            _bluegreen(builder, ctx, env)
        policies[env.name] = builder.document()
    return policies


def policy_size(document: Dict[str, Any]) -> int:
    """Characters IAM counts against its limit (white space excluded)."""
    return len(re.sub(r"\s", "", json.dumps(document)))
