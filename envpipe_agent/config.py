"""envpipe.yml (SPEC §2) loaded into frozen values.

Every key is checked against an allowlist; a problem names the file, the key path and
what was expected, and raises ``ConfigError`` (exit 2) before anything is changed.
"""
from __future__ import annotations

import datetime as dt
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import yaml

from envpipe_agent.errors import ConfigError, UnsafePath, UsageError
from envpipe_agent.paths import check_relative_path
from envpipe_agent.written_yaml import construct_as_written
from envpipe_agent.timespec import TimeSpecError, Window, parse_duration, parse_window

PROJECT_RE = re.compile(r"[a-z][a-z0-9-]*\Z")
ENVIRONMENT_RE = re.compile(r"[a-z][a-z0-9-]{0,62}\Z")
VERSION_RE = re.compile(r"[0-9][0-9A-Za-z._+-]{0,127}\Z")
VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,127}\Z")
ENV_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
# Identifiers that end up unquoted in generated pipelines (credential ids, agent
# labels, GoCD groups and resources, approvers): a safe, common subset of each tool.
CI_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
VERSION_FIELDS = ("build", "label", "commit", "short_commit")
TOOLS = ("terraform", "cloudformation")
APPROVALS = ("auto", "manual")
DEFAULT_CONFIG_NAME = "envpipe.yml"
ROLE_ARN_RE = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+\Z")
ROLE_ARN_HINT = "an IAM role ARN (arn:aws:iam::123456789012:role/NAME)"
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
# A KMS key as S3's SSEKMSKeyId and Terraform's kms_key_id take it: key id, key ARN,
# alias name or alias ARN.
KMS_KEY_RE = re.compile(r"(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key/[\w-]+|alias/[\w/+=,.@-]+)"
                        r"|alias/[\w/+=,.@-]+|(mrk-)?[0-9a-f-]{32,36})\Z")


def validate_environment_name(name: str) -> str:
    if not isinstance(name, str) or not ENVIRONMENT_RE.match(name):
        raise UsageError(
            f"invalid environment name {name!r}: use lower-case letters, digits and '-', "
            "starting with a letter (at most 63 characters)"
        )
    return name


def validate_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_RE.match(version) or ".." in version:
        raise UsageError(
            f"invalid version {version!r}: start with a digit, then letters, digits, "
            "'.', '_', '+' or '-' (at most 128 characters, no '..')"
        )
    return version


@dataclass(frozen=True)
class Environment:
    name: str
    description: str = ""
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # The same vars with every scalar as written in envpipe.yml (``Yes`` stays ``Yes``,
    # ``010`` stays ``010``): CloudFormation parameters are strings. None when the vars
    # did not come from YAML text (a Python caller's): then ``vars`` is all there is.
    vars_written: Optional[Mapping[str, Any]] = None
    approval: str = "auto"
    approvers: Tuple[str, ...] = ()
    role_arn: Optional[str] = None
    account_id: Optional[str] = None
    # Promotion policy (SPEC §10): how long a version must have passed its tests in the
    # previous environment, and when promotions into this one may happen.
    soak: Optional[dt.timedelta] = None
    windows: Tuple[Window, ...] = ()
    # For an instance that is not on the path (an on-demand environment, a sandbox, a
    # blue-green half): the path environment whose vars, role and account it copies.
    # None for the path's own environments.
    like: Optional[str] = None
    # Where this environment's Terraform state lives, overriding terraform.state
    # (SPEC §11): production's state in production's account.
    state: Optional["TerraformState"] = None
    # Released blue-green (SPEC §9): two instances and a router instead of one stack.
    bluegreen: Optional["BlueGreen"] = None

    @property
    def manual(self) -> bool:
        return self.approval == "manual"

    @property
    def on_path(self) -> bool:
        return self.like is None


# Suffixes blue-green gives a path environment's own instances (SPEC §9).
BLUEGREEN_SUFFIXES = ("blue", "green", "router")


@dataclass(frozen=True)
class BlueGreen:
    """``bluegreen:`` of a path environment: its router, a folder of the definition
    holding a small stack of the same tool that sends traffic to the live instance."""

    router: str  # relative folder, no trailing '/'

    def router_stack(self, tool: str, template: str) -> str:
        """What must exist in the router folder: Terraform's ``*.tf`` files, or the
        CloudFormation template under the same name as the main stack's."""
        return f"{self.router}/*.tf" if tool == "terraform" else f"{self.router}/{template}"

    def holds_router(self, paths: Iterable[str], tool: str, template: str) -> bool:
        """Whether a definition of these file ``paths`` holds the router's stack."""
        wanted = self.router_stack(tool, template)
        if tool != "terraform":
            return wanted in set(paths)
        folder = f"{self.router}/"
        return any(p.startswith(folder) and "/" not in p[len(folder):] and p.endswith((".tf", ".tf.json"))
                   for p in paths)


@dataclass(frozen=True)
class OnDemandSettings:
    """``on_demand:`` (SPEC §9): what on-demand environments and sandboxes are like."""

    like: str
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    vars_written: Optional[Mapping[str, Any]] = None  # as Environment.vars_written
    ttl: dt.timedelta = dt.timedelta(hours=8)
    max_ttl: dt.timedelta = dt.timedelta(days=7)
    max: int = 10


@dataclass(frozen=True)
class TerraformState:
    bucket: str
    key: str = "{environment}/terraform.tfstate"
    region: Optional[str] = None
    # A role Terraform's backend assumes to reach the state (its own account's).
    role_arn: Optional[str] = None

    def key_for(self, environment: str, project: str) -> str:
        return self.key.format(environment=environment, project=project)


@dataclass(frozen=True)
class RepositoryEncryption:
    """SSE-KMS for every object envpipe writes and for the Terraform backend."""

    kms_key_id: str


@dataclass(frozen=True)
class TerraformSettings:
    state: Optional[TerraformState] = None


@dataclass(frozen=True)
class CloudFormationSettings:
    template: str = "template.yaml"
    stack_name: str = "{project}-{environment}"
    capabilities: Tuple[str, ...] = ()


@dataclass(frozen=True)
class HttpCheck:
    url: str
    status: int = 200
    body: Optional[str] = None
    within: float = 60.0


@dataclass(frozen=True)
class TestSettings:
    path: Optional[str] = None
    http: Tuple[HttpCheck, ...] = ()


# A ci: value given once for every environment, or per environment ({environment: value}).
PerEnvironment = Union[str, Mapping[str, str]]


@dataclass(frozen=True)
class JenkinsSettings:
    agent: Optional[str] = None
    timeout_minutes: int = 60  # each stage that works on an agent
    approval_timeout_days: int = 7  # each manual approval
    branch: str = "main"  # the branch whose builds go beyond the first environment
    # environment name -> id of a username/password credential holding
    # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for that environment
    aws_credentials: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # variable name -> id of a secret-text credential bound to that variable in every
    # environment, or {environment: id} to bind it in those environments only
    secret_credentials: Mapping[str, PerEnvironment] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class GocdSettings:
    group: Optional[str] = None
    git_url: Optional[str] = None
    branch: str = "main"
    resources: Tuple[str, ...] = ()
    # environments whose stages get their own AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    aws_credentials: Tuple[str, ...] = ()
    # id of the GoCD secret config that YAML pipelines take secret values from
    secret_config: str = "envpipe"
    # variable name -> its key in the secret config for every environment, or
    # {environment: key} for those environments only (default: the name, everywhere)
    secret_keys: Mapping[str, PerEnvironment] = field(default_factory=lambda: MappingProxyType({}))
    # the file-based secrets plugin's file, for the <secretConfig> of `--full`
    secrets_file: str = "/godata/config/envpipe-secrets.json"
    timeout_minutes: int = 60  # each job


@dataclass(frozen=True)
class CiSettings:
    install: Optional[str] = None
    requirements: Optional[str] = None  # a hashed requirements file (pip --require-hashes)
    # non-secret environment variables set for every stage of the generated pipelines
    variables: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    jenkins: JenkinsSettings = JenkinsSettings()
    gocd: GocdSettings = GocdSettings()


@dataclass(frozen=True)
class Config:
    path: Path
    project: str
    description: str = ""
    source: Path = Path(".")
    repository: Optional[str] = None
    version: str = "1.0.{build}"
    tool: str = "terraform"
    environments: Tuple[Environment, ...] = ()
    terraform: TerraformSettings = TerraformSettings()
    cloudformation: CloudFormationSettings = CloudFormationSettings()
    tests: TestSettings = TestSettings()
    secrets: Tuple[str, ...] = ()
    ci: CiSettings = CiSettings()
    on_demand: Optional[OnDemandSettings] = None  # None only in a Config built by hand
    repository_encryption: Optional[RepositoryEncryption] = None

    @property
    def on_demand_settings(self) -> OnDemandSettings:
        return self.on_demand or OnDemandSettings(like=self.environments[0].name)

    @property
    def environment_names(self) -> Tuple[str, ...]:
        return tuple(env.name for env in self.environments)

    def environment(self, name: str) -> Environment:
        for env in self.environments:
            if env.name == name:
                return env
        raise UsageError(
            f"environment {name!r} is not in {self.path.name}: "
            f"choose one of {', '.join(self.environment_names) or '(none configured)'}"
        )

    def state(self, environment: Environment) -> Optional[TerraformState]:
        """Where ``environment``'s Terraform state lives, when not in the artefact
        repository (an on-demand instance never shares its path environment's own)."""
        return environment.state or self.terraform.state

    def where(self, name: str) -> str:
        """``environments[2]``: where the path environment ``name`` is in envpipe.yml."""
        return f"environments[{self.environment_names.index(name)}]"

    def previous_environment(self, name: str) -> Optional[Environment]:
        """The environment before ``name`` on the path, or None for the first."""
        names = self.environment_names
        index = names.index(self.environment(name).name)
        return self.environments[index - 1] if index else None


# --- loading -----------------------------------------------------------------------


# The most nodes envpipe.yml may hold once its aliases are expanded. A real one holds
# a few hundred; an "alias bomb" (an alias of a list of aliases of ...) holds billions
# and would exhaust memory in whatever walks it (vars written for Terraform, say).
MAX_EXPANDED_NODES = 100_000


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one, and a
    document whose aliases expand beyond MAX_EXPANDED_NODES."""

    def get_single_node(self) -> Optional[yaml.Node]:
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node


def _check_expanded_size(root: yaml.Node) -> None:
    """Count the nodes ``root`` expands to, each shared node once per reference."""
    sizes: Dict[int, int] = {}
    in_progress: set = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in in_progress:
            raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it",
                                              node.start_mark)
        in_progress.add(id(node))
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_EXPANDED_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"its aliases expand to more than {MAX_EXPANDED_NODES:,} values; "
                    "write the values out, or use fewer nested aliases", child.start_mark)
        in_progress.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root)


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


class _Reader:
    """Walks the parsed YAML, reporting problems as 'file: key.path: expectation'."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, expectation: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where or '(top level)'}: {expectation}")

    def mapping(self, value: Any, where: str, allowed: Sequence[str], required: Sequence[str] = ()) -> dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {_kind(value)}")
        for key in value:
            if key not in allowed:
                raise self.fail(
                    _join(where, str(key)),
                    f"unknown key; allowed here: {', '.join(allowed)}",
                )
        for key in required:
            if key not in value:
                raise self.fail(_join(where, key), "required key is missing")
        return value

    def string(self, value: Any, where: str, pattern: Optional[re.Pattern] = None, hint: str = "") -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a non-empty string, got {_kind(value)}")
        if "\x00" in value:
            raise self.fail(where, "must not contain NUL characters")
        if pattern is not None and not pattern.match(value):
            raise self.fail(where, f"{value!r} does not match {hint or pattern.pattern}")
        return value

    def optional_string(self, value: Any, where: str, pattern: Optional[re.Pattern] = None, hint: str = "") -> Optional[str]:
        return None if value is None else self.string(value, where, pattern, hint)

    def number(self, value: Any, where: str, minimum: float = 0, integer: bool = False) -> Any:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
            expected = "an integer" if integer else "a number"
            raise self.fail(where, f"expected {expected} >= {minimum}, got {value!r}")
        return value

    def string_list(self, value: Any, where: str, pattern: Optional[re.Pattern] = None, hint: str = "") -> Tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list of strings, got {_kind(value)}")
        return tuple(self.string(item, f"{where}[{i}]", pattern, hint) for i, item in enumerate(value))

    def string_map(self, value: Any, where: str, key_check: Callable[[str, str], None], pattern: re.Pattern, hint: str) -> Mapping[str, str]:
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {_kind(value)}")
        result = {}
        for key, item in value.items():
            key_check(str(key), _join(where, str(key)))
            result[str(key)] = self.string(item, _join(where, str(key)), pattern, hint)
        return MappingProxyType(result)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check_template(reader: _Reader, value: str, where: str, fields: Sequence[str]) -> str:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise reader.fail(where, f"invalid template {value!r}: {exc}") from None
    for name in names:
        if name not in fields:
            raise reader.fail(
                where, f"unknown placeholder {{{name}}}; allowed: {', '.join('{%s}' % f for f in fields)}"
            )
    return value


def _check_per_environment(reader: _Reader, value: str, where: str, environments: Sequence[Environment],
                           what: str) -> str:
    """With several environments, ``value`` must name {environment}: a fixed state key
    or stack name would be shared by all of them, and applying production would
    replace (or destroy) what test had."""
    names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    if len(environments) > 1 and "environment" not in names:
        raise reader.fail(where, f"{value!r} has no {{environment}}, so all {len(environments)} environments "
                                 f"would share one {what}: add {{environment}} to it")
    return value


def _relative_path(reader: _Reader, value: Optional[str], where: str, folder: bool = True) -> Optional[str]:
    """A path inside the definition: relative, without '..', '.' or empty components
    (for a ``folder``, a trailing '/' and '.' alone, the whole definition, are fine)."""
    if value is None:
        return None
    relative = value.rstrip("/") if folder else value
    if folder and relative in ("", "."):
        return value
    try:
        check_relative_path(relative)
    except UnsafePath:
        raise reader.fail(where, f"{value!r} must be a relative path inside the definition "
                                 "(no leading '/', no '..', '.' or empty components, no '\\')") from None
    return value


def _check_version_template(reader: _Reader, value: str) -> str:
    """A version template whose placeholders are known and that renders a valid version.

    Rendered here with sample values, so 'v{build}' or '{build:d}' fail at load time
    with the key path, not later inside a CI build.
    """
    _check_template(reader, value, "version", VERSION_FIELDS)
    sample = {"build": "1", "label": "1", "commit": "0" * 40, "short_commit": "0" * 12}
    try:
        rendered = value.format(**sample)
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise reader.fail("version", f"invalid template {value!r}: {exc}") from None
    if not VERSION_RE.match(rendered) or ".." in rendered:
        raise reader.fail(
            "version",
            f"template {value!r} renders versions like {rendered!r}; a version starts with a digit, "
            "then letters, digits, '.', '_', '+' or '-' (no '/' or '..')",
        )
    return value


def check_version_template(value: str, where: str) -> str:
    """A version template from outside envpipe.yml (``where`` names it), checked as `version` is."""
    return _check_version_template(_Reader(Path(where)), value)


def _deep_freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({str(k): _deep_freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_deep_freeze(v) for v in value)
    return value


def _environments(reader: _Reader, raw: Any, written: Any = None) -> Tuple[Environment, ...]:
    if not isinstance(raw, list) or not raw:
        raise reader.fail("environments", f"expected a non-empty list of environments, got {_kind(raw)}")
    seen = set()
    result = []
    for i, item in enumerate(raw):
        where = f"environments[{i}]"
        item = reader.mapping(
            item,
            where,
            ("name", "description", "vars", "approval", "approvers", "role_arn", "account_id", "soak", "window",
             "state", "bluegreen"),
            required=("name",),
        )
        name = reader.string(item["name"], f"{where}.name", ENVIRONMENT_RE,
                             "lower-case letters, digits and '-', starting with a letter")
        if name in seen:
            raise reader.fail(f"{where}.name", f"environment {name!r} appears twice")
        seen.add(name)
        variables = _variables(reader, item.get("vars"), f"{where}.vars")
        approval = item.get("approval", "auto")
        if approval not in APPROVALS:
            raise reader.fail(f"{where}.approval", f"expected one of {', '.join(APPROVALS)}, got {approval!r}")
        account_id = item.get("account_id")
        if isinstance(account_id, int) and not isinstance(account_id, bool):
            # YAML reads an unquoted 012345670123 as octal and drops leading zeros:
            # the number it gives is not the account id that was written.
            raise reader.fail(f"{where}.account_id", f"read as the number {account_id}, not an account id: "
                                                     "put the account id in quotes (account_id: \"012345678901\")")
        result.append(Environment(
            name=name,
            description=reader.optional_string(item.get("description"), f"{where}.description") or "",
            vars=variables,
            vars_written=_written_variables(written, ("environments", i, "vars"), variables),
            approval=approval,
            approvers=reader.string_list(item.get("approvers"), f"{where}.approvers", CI_NAME_RE, "a user name"),
            role_arn=reader.optional_string(item.get("role_arn"), f"{where}.role_arn", ROLE_ARN_RE, ROLE_ARN_HINT),
            account_id=reader.optional_string(account_id, f"{where}.account_id", re.compile(r"\d{12}\Z"),
                                              "a 12-digit AWS account id in quotes"),
            soak=_soak(reader, item.get("soak"), where, first=not i),
            windows=_windows(reader, item.get("window"), f"{where}.window"),
            state=_state(reader, item["state"], f"{where}.state", ()) if item.get("state") is not None else None,
            bluegreen=_bluegreen(reader, item["bluegreen"], f"{where}.bluegreen")
            if item.get("bluegreen") is not None else None,
        ))
    return tuple(result)


def _bluegreen(reader: _Reader, raw: Any, where: str) -> BlueGreen:
    raw = reader.mapping(raw, where, ("router",), required=("router",))
    router = _relative_path(reader, reader.string(raw["router"], f"{where}.router"), f"{where}.router")
    router = router.rstrip("/")
    if router in ("", "."):
        raise reader.fail(f"{where}.router", "a folder inside the definition holding the router's own stack, "
                                             "not the whole definition (router/, say)")
    return BlueGreen(router=router)


# The longest name a blue-green environment may have, so that "<name>-router" is
# still a valid environment name (instance names are used as folder and state keys).
_BLUEGREEN_NAME_MAX = 63 - len("-router")


def _check_bluegreen_names(reader: _Reader, environments: Sequence[Environment]) -> None:
    names = {env.name for env in environments}
    for i, env in enumerate(environments):
        if env.bluegreen is None:
            continue
        if len(env.name) > _BLUEGREEN_NAME_MAX:
            raise reader.fail(f"environments[{i}].bluegreen", f"{env.name!r} is too long for blue-green: its "
                                                              f"instances add '-router'; shorten it to at most "
                                                              f"{_BLUEGREEN_NAME_MAX} characters")
        taken = sorted(names & {f"{env.name}-{suffix}" for suffix in BLUEGREEN_SUFFIXES})
        if taken:
            raise reader.fail(f"environments[{i}].bluegreen", f"{env.name}'s blue-green instances would be "
                                                              f"named like the environment {taken[0]!r}: rename it")


def _state(reader: _Reader, raw: Any, where: str, environments: Sequence[Environment]) -> TerraformState:
    """A Terraform S3 state location; with several ``environments`` sharing it, its
    key must name {environment}."""
    raw = reader.mapping(raw, where, ("bucket", "key", "region", "role_arn"), required=("bucket",))
    key = _check_template(reader, reader.string(raw.get("key", "{environment}/terraform.tfstate"), f"{where}.key"),
                          f"{where}.key", ("environment", "project"))
    return TerraformState(
        bucket=reader.string(raw["bucket"], f"{where}.bucket", BUCKET_RE, "an S3 bucket name"),
        key=_check_per_environment(reader, key, f"{where}.key", environments, "Terraform state"),
        region=reader.optional_string(raw.get("region"), f"{where}.region"),
        role_arn=reader.optional_string(raw.get("role_arn"), f"{where}.role_arn", ROLE_ARN_RE, ROLE_ARN_HINT),
    )


def _check_shared_state(reader: _Reader, project: str, environments: Sequence[Environment],
                        default: Optional[TerraformState]) -> None:
    """Two environments resolving to one state object would apply over each other."""
    seen: Dict[Tuple[str, str], str] = {}
    for i, env in enumerate(environments):
        state = env.state or default
        if state is None:
            continue
        location = (state.bucket, state.key_for(env.name, project))
        if location in seen:
            where = f"environments[{i}].state" if env.state else "terraform.state"
            raise reader.fail(where, f"{env.name} and {seen[location]} would share the state "
                                     f"s3://{location[0]}/{location[1]}: give each environment its own key")
        seen[location] = env.name


def _soak(reader: _Reader, value: Any, where: str, first: bool) -> Optional[dt.timedelta]:
    if value is None:
        return None
    if first:
        raise reader.fail(f"{where}.soak", "the first environment has no previous environment for a version "
                                           "to soak in: put soak on a later environment")
    return _duration(reader, value, f"{where}.soak")


def _windows(reader: _Reader, value: Any, where: str) -> Tuple[Window, ...]:
    """One window or a list of them (promotions allowed inside any)."""
    if value is None:
        return ()
    items = [(where, value)] if not isinstance(value, list) else [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    if not items:
        raise reader.fail(where, "expected a window or a list of windows, got an empty list")
    windows = []
    for item_where, item in items:
        try:
            windows.append(parse_window(item))
        except TimeSpecError as exc:
            raise reader.fail(item_where, str(exc)) from None
    return tuple(windows)


def _variables(reader: _Reader, value: Any, where: str) -> Mapping[str, Any]:
    variables = value or {}
    if not isinstance(variables, dict):
        raise reader.fail(where, f"expected a mapping of variables, got {_kind(variables)}")
    for key in variables:
        reader.string(key, f"{where}.{key}", VARIABLE_RE, "a Terraform/CloudFormation variable name")
    return _deep_freeze(variables)


def _written_variables(written: Any, path: Sequence[Any], variables: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The vars at ``path`` in the as-written document (see written_yaml), keyed like
    ``variables``; None without one."""
    for step in path:
        if isinstance(written, dict) and isinstance(step, str):
            written = written.get(step)
        elif isinstance(written, list) and isinstance(step, int) and step < len(written):
            written = written[step]
        else:
            return None
    if not isinstance(written, dict):
        return MappingProxyType({}) if not variables else None
    by_name = {str(key): value for key, value in written.items()}
    if set(by_name) != set(variables):
        return None  # keys that YAML 1.1 retyped (a var named 'on'): the typed vars are what was validated
    return _deep_freeze(by_name)


def merged_written(base_vars: Mapping[str, Any], base_written: Optional[Mapping[str, Any]],
                   extra_vars: Mapping[str, Any], extra_written: Optional[Mapping[str, Any]]) -> Mapping[str, Any]:
    """``extra`` vars over ``base`` vars, as written where known."""
    return MappingProxyType({**(base_vars if base_written is None else base_written),
                             **(extra_vars if extra_written is None else extra_written)})


def _duration(reader: _Reader, value: Any, where: str) -> dt.timedelta:
    try:
        return parse_duration(value)
    except TimeSpecError as exc:
        raise reader.fail(where, str(exc)) from None


def _on_demand(reader: _Reader, raw: Any, environments: Sequence[Environment], written: Any = None) -> OnDemandSettings:
    raw = reader.mapping(raw, "on_demand", ("like", "vars", "ttl", "max_ttl", "max"))
    names = [env.name for env in environments]
    like = reader.string(raw.get("like", names[0]), "on_demand.like")
    if like not in names:
        raise reader.fail("on_demand.like", f"no environment named {like!r}; environments: {', '.join(names)}")
    ttl = _duration(reader, raw.get("ttl", "8h"), "on_demand.ttl")
    max_ttl = _duration(reader, raw.get("max_ttl", "7d"), "on_demand.max_ttl")
    if ttl > max_ttl:
        raise reader.fail("on_demand.ttl", f"{raw.get('ttl')!r} is longer than on_demand.max_ttl "
                                           f"({raw.get('max_ttl', '7d')!r}): shorten it or raise max_ttl")
    variables = _variables(reader, raw.get("vars"), "on_demand.vars")
    return OnDemandSettings(like=like, vars=variables,
                            vars_written=_written_variables(written, ("on_demand", "vars"), variables), ttl=ttl,
                            max_ttl=max_ttl, max=reader.number(raw.get("max", 10), "on_demand.max", 1, integer=True))


def _tests(reader: _Reader, raw: Any) -> TestSettings:
    raw = reader.mapping(raw, "tests", ("path", "http"))
    checks = []
    http = raw.get("http") or []
    if not isinstance(http, list):
        raise reader.fail("tests.http", f"expected a list of checks, got {_kind(http)}")
    for i, item in enumerate(http):
        where = f"tests.http[{i}]"
        item = reader.mapping(item, where, ("url", "status", "body", "within"), required=("url",))
        checks.append(HttpCheck(
            url=reader.string(item["url"], f"{where}.url"),
            status=reader.number(item.get("status", 200), f"{where}.status", 100, integer=True),
            body=reader.optional_string(item.get("body"), f"{where}.body"),
            within=float(reader.number(item.get("within", 60), f"{where}.within")),
        ))
    path = _relative_path(reader, reader.optional_string(raw.get("path"), "tests.path"), "tests.path")
    return TestSettings(path=path, http=tuple(checks))


def _ci(reader: _Reader, raw: Any, environment_names: Sequence[str]) -> CiSettings:
    raw = reader.mapping(raw, "ci", ("install", "requirements", "variables", "jenkins", "gocd"))
    hint = "letters, digits, '.', '_' or '-'"

    def known_environment(key: str, where: str) -> None:
        if key not in environment_names:
            raise reader.fail(where, f"no environment named {key!r}; environments: {', '.join(environment_names)}")

    def variable_name(key: str, where: str) -> None:
        if not ENV_VAR_RE.match(key):
            raise reader.fail(where, "expected an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")

    def per_environment(value: Any, where: str) -> Mapping[str, PerEnvironment]:
        """{variable: name for every environment | {environment: name}}."""
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, dict):
            raise reader.fail(where, f"expected a mapping, got {_kind(value)}")
        result: dict = {}
        for key, item in value.items():
            variable_name(str(key), _join(where, str(key)))
            if isinstance(item, dict):
                result[str(key)] = reader.string_map(item, _join(where, str(key)), known_environment, CI_NAME_RE, hint)
            else:
                result[str(key)] = reader.string(item, _join(where, str(key)), CI_NAME_RE,
                                                 f"{hint}, or a mapping of environment to that")
        return MappingProxyType(result)

    jenkins = reader.mapping(raw.get("jenkins"), "ci.jenkins",
                             ("agent", "timeout_minutes", "approval_timeout_days", "branch", "aws_credentials",
                              "secret_credentials"))
    gocd = reader.mapping(raw.get("gocd"), "ci.gocd",
                          ("group", "git_url", "branch", "resources", "aws_credentials", "secret_config",
                           "secret_keys", "secrets_file", "timeout_minutes"))
    branch_re = re.compile(r"[A-Za-z0-9_./-]{1,255}\Z")
    install = reader.optional_string(raw.get("install"), "ci.install")
    requirements = _relative_path(reader, reader.optional_string(raw.get("requirements"), "ci.requirements"),
                                  "ci.requirements", folder=False)
    if install is not None and requirements is not None:
        raise reader.fail("ci.requirements", "give ci.install or ci.requirements, not both (put everything "
                                             "to install in the requirements file)")
    return CiSettings(
        install=install,
        requirements=requirements,
        variables=reader.string_map(raw.get("variables"), "ci.variables", variable_name, re.compile(r"[^\x00]*\Z"),
                                    "text without NUL"),
        jenkins=JenkinsSettings(
            agent=reader.optional_string(jenkins.get("agent"), "ci.jenkins.agent", CI_NAME_RE, hint),
            timeout_minutes=reader.number(jenkins.get("timeout_minutes", 60), "ci.jenkins.timeout_minutes", 1, integer=True),
            approval_timeout_days=reader.number(jenkins.get("approval_timeout_days", 7),
                                                "ci.jenkins.approval_timeout_days", 1, integer=True),
            branch=reader.string(jenkins.get("branch", "main"), "ci.jenkins.branch", branch_re, "a git branch name"),
            aws_credentials=reader.string_map(jenkins.get("aws_credentials"), "ci.jenkins.aws_credentials",
                                              known_environment, CI_NAME_RE, hint),
            secret_credentials=per_environment(jenkins.get("secret_credentials"), "ci.jenkins.secret_credentials"),
        ),
        gocd=GocdSettings(
            group=reader.optional_string(gocd.get("group"), "ci.gocd.group",
                                         re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}\Z"), hint),
            git_url=reader.optional_string(gocd.get("git_url"), "ci.gocd.git_url"),
            branch=reader.string(gocd.get("branch", "main"), "ci.gocd.branch", branch_re, "a git branch name"),
            resources=reader.string_list(gocd.get("resources"), "ci.gocd.resources", CI_NAME_RE, hint),
            aws_credentials=tuple(
                known_environment(name, f"ci.gocd.aws_credentials[{i}]") or name
                for i, name in enumerate(reader.string_list(gocd.get("aws_credentials"), "ci.gocd.aws_credentials"))
            ),
            secret_config=reader.string(gocd.get("secret_config", "envpipe"), "ci.gocd.secret_config", CI_NAME_RE, hint),
            secret_keys=per_environment(gocd.get("secret_keys"), "ci.gocd.secret_keys"),
            secrets_file=reader.string(gocd.get("secrets_file", GocdSettings.secrets_file), "ci.gocd.secrets_file",
                                       re.compile(r"[^\x00-\x1f]*\Z"), "a path on the GoCD server"),
            timeout_minutes=reader.number(gocd.get("timeout_minutes", 60), "ci.gocd.timeout_minutes", 1, integer=True),
        ),
    )


TOP_LEVEL_KEYS = ("project", "description", "source", "repository", "repository_encryption", "version",
                  "tool", "environments", "terraform", "cloudformation", "tests", "secrets", "ci", "on_demand")


def parse_config(data: Any, path: Path, written: Any = None) -> Config:
    """Validate parsed YAML ``data`` (from the file at ``path``) into a Config.

    ``written`` is the same document with scalars as written (written_yaml), where the
    vars' text is kept for CloudFormation parameters."""
    reader = _Reader(path)
    raw = reader.mapping(data, "", TOP_LEVEL_KEYS, required=("project", "environments"))
    project = reader.string(raw["project"], "project", PROJECT_RE,
                            "lower-case letters, digits and '-', starting with a letter")
    base = path.parent
    source = Path(reader.string(raw.get("source", "."), "source"))
    repository = reader.optional_string(raw.get("repository"), "repository")
    if repository and "://" not in repository and not Path(repository).is_absolute():
        repository = str((base / repository).resolve())
    tool = raw.get("tool", "terraform")
    if tool not in TOOLS:
        raise reader.fail("tool", f"expected one of {', '.join(TOOLS)}, got {tool!r}")
    version = _check_version_template(reader, reader.string(raw.get("version", "1.0.{build}"), "version"))
    environments = _environments(reader, raw.get("environments"), written)

    terraform = reader.mapping(raw.get("terraform"), "terraform", ("state",))
    state = None
    if terraform.get("state") is not None:
        sharing = [env for env in environments if env.state is None] if tool == "terraform" else ()
        state = _state(reader, terraform["state"], "terraform.state", sharing)
    _check_shared_state(reader, project, environments, state)
    _check_bluegreen_names(reader, environments)
    encryption = None
    if raw.get("repository_encryption") is not None:
        encryption_raw = reader.mapping(raw["repository_encryption"], "repository_encryption", ("kms_key_id",),
                                        required=("kms_key_id",))
        encryption = RepositoryEncryption(kms_key_id=reader.string(
            encryption_raw["kms_key_id"], "repository_encryption.kms_key_id", KMS_KEY_RE,
            "a KMS key id, key ARN, alias/NAME or alias ARN"))
    cfn = reader.mapping(raw.get("cloudformation"), "cloudformation", ("template", "stack_name", "capabilities"))
    cloudformation = CloudFormationSettings(
        template=_relative_path(reader, reader.string(cfn.get("template", "template.yaml"),
                                                      "cloudformation.template"),
                                "cloudformation.template", folder=False),
        stack_name=_check_per_environment(
            reader,
            _check_template(reader, reader.string(cfn.get("stack_name", "{project}-{environment}"),
                                                  "cloudformation.stack_name"),
                            "cloudformation.stack_name", ("project", "environment")),
            "cloudformation.stack_name", environments if tool == "cloudformation" else (), "stack"),
        capabilities=reader.string_list(cfn.get("capabilities"), "cloudformation.capabilities",
                                        re.compile(r"CAPABILITY_(IAM|NAMED_IAM|AUTO_EXPAND)\Z"),
                                        "CAPABILITY_IAM, CAPABILITY_NAMED_IAM or CAPABILITY_AUTO_EXPAND"),
    )
    return Config(
        path=path,
        project=project,
        description=reader.optional_string(raw.get("description"), "description") or "",
        source=(base / source).resolve() if not source.is_absolute() else source,
        repository=repository,
        version=version,
        tool=tool,
        environments=environments,
        terraform=TerraformSettings(state=state),
        cloudformation=cloudformation,
        tests=_tests(reader, raw.get("tests")),
        secrets=reader.string_list(raw.get("secrets"), "secrets", ENV_VAR_RE, "an environment variable name"),
        ci=_ci(reader, raw.get("ci"), [env.name for env in environments]),
        on_demand=_on_demand(reader, raw.get("on_demand"), environments, written),
        repository_encryption=encryption,
    )


def load_config(path: Path) -> Config:
    """Read and validate envpipe.yml at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: not found; create it (see README) or point --config at it"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data, written = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "parse error"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: {where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply to read; flatten it") from None
    return parse_config(data, path.resolve(), written)


def _load_yaml(text: str) -> Tuple[Any, Any]:
    """The document as data, and as written (written_yaml), from one parse."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()  # checked for duplicate keys and alias expansion
        if node is None:
            return None, None
        data = loader.construct_document(node)
        return data, construct_as_written(node)
    finally:
        loader.dispose()
