"""Render the CD server's pipeline config from envpipe.yml (SPEC §8).

The pipeline is first described as plain values (``pipeline_model``): stages, their
envpipe commands, approvals and credentials. The Jinja templates in ``templates/``
(shipped as ``envpipe_agent.templates``) only lay those values out for Jenkins or GoCD.

Escaping is done by the Jinja environment, not by the templates: every ``{{ value }}``
is passed through a per-target ``finalize`` that turns it into a Groovy single-quoted
string, an escaped XML value or a double-quoted YAML scalar. A template, built-in or
overridden with ``--templates``, therefore cannot let a config value out of its string.
"""
from __future__ import annotations

import json
import logging
import re
import shlex
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, Optional, Sequence, Tuple
from urllib.parse import urlsplit, urlunsplit

import jinja2
from markupsafe import Markup, escape

from envpipe_agent.approval import APPROVER_FROM_VARIABLE
from envpipe_agent.config import Config, Environment
from envpipe_agent.errors import UsageError
from envpipe_agent.timespec import format_duration

log = logging.getLogger(__name__)

TARGETS: Dict[str, str] = {
    "jenkins": "Jenkinsfile.j2",
    "gocd-xml": "gocd.xml.j2",
    "gocd-yaml": "gocd.yaml.j2",
}
# The jobs beside the path (SPEC §9): `--job reap` (on a timer) and `--job environments`
# (testers' create/extend/destroy), each a Jenkinsfile or a GoCD pipeline of its own.
JOBS = ("path", "reap", "environments")
ON_DEMAND_TARGETS: Dict[str, str] = {
    "jenkins": "Jenkinsfile-on-demand.j2",
    "gocd-xml": "gocd-on-demand.xml.j2",
    "gocd-yaml": "gocd-on-demand.yaml.j2",
}
# The Jenkins Shared Library (`generate jenkins-library -o DIR`): step → how it is called.
# Each step is vars/<step>.groovy with its help page vars/<step>.txt (Jenkins' convention).
LIBRARY_STEPS: Dict[str, str] = {
    "envpipeInstall": "envpipeInstall()",
    "envpipePublish": "String version = envpipePublish()",
    "envpipeDeploy": "envpipeDeploy(environment: 'staging', version: version)",
    "envpipeApprove": "envpipeApprove(environment: 'production', version: version)",
    "envpipe": "envpipe(['status']) or envpipe(args: ['history', 'production'], environment: 'production')",
}
# GoCD pipeline templates (`generate gocd-xml|gocd-yaml --template`): one for the
# environments that deploy on their own, one for approval: manual ones (GoCD cannot take
# a stage's approval type from a parameter); the environment is their one parameter.
GOCD_TEMPLATES = {False: "envpipe-environment", True: "envpipe-environment-manual"}
# A blue-green environment's stages differ (one release command): templates of their own.
GOCD_BLUEGREEN_SUFFIX = "-bluegreen"
GOCD_TEMPLATE_PARAMETER = "ENVIRONMENT"
# When the reap job runs: Jenkins cron (H spreads jobs over the hour) and GoCD's
# Quartz cron (seconds first), both hourly.
REAP_CRON = {"jenkins": "H * * * *", "gocd": "0 0 * * * ?"}
# GoCD's current schema (validators/gocd/SOURCE.txt): every server since 23.4 expects it.
GOCD_SCHEMA_VERSION = 139
GOCD_MATERIAL = "source"
VENV = ".envpipe-venv"
# envpipe's own folders in the job's workspace; source.ALWAYS_SKIPPED keeps both out of a
# publish whose source is the workspace itself (source: .).
REPORTS = ".envpipe-reports"
# Characters a rendered version may hold (config.VERSION_RE) outside its placeholders.
_VERSION_TEXT_RE = re.compile(r"[0-9A-Za-z._+-]*\Z")
# XML 1.0 cannot carry these at all, not even as character references.
_XML_FORBIDDEN_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_GROOVY_KEYWORDS = frozenset(
    "abstract as assert boolean break byte case catch char class const continue def default do double "
    "else enum extends false final finally float for goto if implements import in instanceof int "
    "interface long native new null package private protected public return short static strictfp "
    "super switch synchronized this threadsafe throw throws trait transient true try var void "
    "volatile while".split()
)


class Literal(str):
    """Text a template may emit as it is: already escaped, or built from safe parts."""


class BuildVersion(str):
    """Where a command takes this build's version: Jenkins passes the published version
    from an environment variable, GoCD leaves it to envpipe, which takes the label."""


BUILD_VERSION = BuildVersion("$ENVPIPE_PUBLISHED_VERSION")
# GoCD: the environments' pipelines carry the publish pipeline's label (the version) as
# their own, and envpipe takes the version from it (ci_context, SPEC §5 {label}).
GOCD_VERSION_TEMPLATE = ("ENVPIPE_VERSION_TEMPLATE", "{label}")
GOCD_UPSTREAM = "upstream"


@dataclass(frozen=True)
class Command:
    """One envpipe invocation; ``args`` excludes the executable and may hold BUILD_VERSION."""

    args: Tuple[str, ...]


@dataclass(frozen=True)
class Secret:
    """A secret variable bound in one environment's stages: for Jenkins the credential
    that fills it, for GoCD its key in the secret config."""

    name: str
    credential: Optional[str] = None
    key: Optional[str] = None


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str  # "publish", "plan", "approval" or "deploy"
    commands: Tuple[Command, ...]
    environment: Optional[Environment] = None
    approvers: Tuple[str, ...] = ()
    junit: Optional[str] = None
    plan_file: Optional[str] = None  # plan: saved there; deploy: applied from there
    aws_credential: Optional[str] = None  # Jenkins usernamePassword credential id
    gocd_aws: bool = False  # GoCD: secure AWS key variables for credentials_of
    credentials_of: Optional[str] = None  # the environment whose AWS credentials the stage binds
    secrets: Tuple[Secret, ...] = ()
    before: Tuple[Tuple[str, ...], ...] = ()  # argv lists run before envpipe (and before install)
    lock: Optional[str] = None  # Jenkins lockable resource held while the stage runs
    branch_only: bool = False  # Jenkins: runs only for ci.jenkins.branch


@dataclass(frozen=True)
class EnvironmentPath:
    """One environment's stages: Jenkins nests them under one stage, GoCD gives them a pipeline."""

    environment: Environment
    pipeline: str  # GoCD pipeline name
    upstream: Tuple[str, str]  # GoCD: (pipeline, stage) whose success triggers this one
    stages: Tuple[Stage, ...]
    secrets: Tuple[Secret, ...]
    lock_behavior: str  # GoCD lockBehavior


@dataclass(frozen=True)
class Pipeline:
    config: Config
    publish: Stage
    environments: Tuple[EnvironmentPath, ...]
    executable: str
    install: Tuple[Tuple[str, ...], ...]  # argv lists run before envpipe on a fresh agent
    variables: Tuple[Tuple[str, str], ...]
    pip_arguments: Tuple[str, ...] = ()  # what the install line has pip install

    @property
    def stages(self) -> Tuple[Stage, ...]:
        return (self.publish,) + tuple(stage for path in self.environments for stage in path.stages)

    @property
    def secret_configs(self) -> Tuple[str, ...]:
        """GoCD secret configs the pipelines refer to (empty: none is needed)."""
        gocd = self.config.ci.gocd
        used = bool(gocd.aws_credentials) or any(path.secrets for path in self.environments)
        return (gocd.secret_config,) if used else ()


def _secrets(config: Config, environment: str) -> Tuple[Secret, ...]:
    """The secrets bound in ``environment``'s stages: only those configured for it (SPEC §8)."""
    jenkins, gocd = config.ci.jenkins, config.ci.gocd
    names = sorted(set(config.secrets) | set(jenkins.secret_credentials) | set(gocd.secret_keys))
    bound = []
    for name in names:
        credential = per_environment(jenkins.secret_credentials.get(name), environment)
        key = per_environment(gocd.secret_keys.get(name, name), environment)
        if credential or key:
            bound.append(Secret(name, credential, key))
    return tuple(bound)


def per_environment(value: Any, environment: str) -> Optional[str]:
    """A ci: value given once for every environment, or per environment (absent: none)."""
    if value is None or isinstance(value, str):
        return value
    return value.get(environment)


def pipeline_model(config: Config) -> Pipeline:
    """What every target renders: publish, then per environment (plan, approval) deploy."""
    jenkins, gocd = config.ci.jenkins, config.ci.gocd
    # Publish writes to the repository that promoting into the first environment writes to,
    # so that environment's credentials can already write there: an agent without an
    # instance role needs them for publish too.
    first = config.environments[0].name
    publish = Stage("publish", "publish", (Command(("publish",)),),
                    aws_credential=jenkins.aws_credentials.get(first), gocd_aws=first in gocd.aws_credentials,
                    credentials_of=first)
    paths = []
    upstream = (config.project, "publish")
    for index, env in enumerate(config.environments):
        path = environment_path(config, index, env, upstream)
        paths.append(path)
        upstream = (path.pipeline, "deploy")
    # A private virtualenv in the workspace: agents' system Pythons refuse pip installs
    # (PEP 668), and each job may land on a fresh agent.
    executable = f"{VENV}/bin/envpipe"
    arguments = pip_arguments(config)
    install: Tuple[Tuple[str, ...], ...] = (("sh", "-c", install_script(config, arguments)),)
    variables = tuple(sorted(config.ci.variables.items()))
    return Pipeline(config, publish, tuple(paths), executable, install, variables, arguments)


def environment_path(config: Config, index: int, env: Environment, upstream: Tuple[str, str]) -> EnvironmentPath:
    """``env``'s stages: (plan, approval) deploy, with its credentials, lock and report.

    ``env`` may be a stand-in whose name is a GoCD parameter (``#{ENVIRONMENT}``): the
    pipeline template's stages are these same stages (template_paths)."""
    jenkins, gocd = config.ci.jenkins, config.ci.gocd
    credentials = dict(aws_credential=jenkins.aws_credentials.get(env.name),
                       gocd_aws=env.name in gocd.aws_credentials, credentials_of=env.name,
                       secrets=_secrets(config, env.name), lock=f"{config.project}-{env.name}",
                       # the first environment takes every branch's builds; the path beyond
                       # it only the configured branch's (a feature branch never asks for production)
                       branch_only=index > 0 or env.manual)
    junit = f"{REPORTS}/{env.name}.xml"
    stages = []
    apply_args = ("apply", env.name, "--version", BUILD_VERSION)
    plan_file = None
    if env.manual:
        # The approver sees what promoting this build's version would change before
        # being asked (SPEC §8): planned against the environment and saved, and the
        # deploy applies exactly that plan. First the gate and the policy (SPEC §10):
        # nobody is asked to approve what would be refused.
        plan_file = f"{REPORTS}/{env.name}.plan"
        # A blue-green environment's plan is of the instance the release goes into.
        check = (("bluegreen", env.name, BUILD_VERSION, "--check") if env.bluegreen else
                 ("promote", BUILD_VERSION, "--to", env.name, "--check"))
        stages.append(Stage(f"plan-{env.name}", "plan",
                            (Command(check),
                             Command(("plan", env.name, "--version", BUILD_VERSION, "--out", plan_file))),
                            environment=env, plan_file=plan_file, **credentials))
        stages.append(Stage(f"approve-{env.name}", "approval", (), environment=env, approvers=env.approvers,
                            branch_only=credentials["branch_only"]))
        apply_args += ("--plan", plan_file)
    if env.bluegreen:
        # SPEC §9: a new instance, its tests (the JUnit report), the swap, the old one
        # destroyed: one command in place of promote, apply and test; the new instance
        # gets the plan the approvers saw (planned of it), or none is applied.
        deploy: Tuple[Command, ...] = (Command(("bluegreen", env.name, BUILD_VERSION, "--junit", junit)
                                               + (("--plan", plan_file) if plan_file else ())),)
    else:
        deploy = (Command(("promote", BUILD_VERSION, "--to", env.name)), Command(apply_args),
                  Command(("test", env.name, "--version", BUILD_VERSION, "--junit", junit)))
    stages.append(Stage(
        f"deploy-{env.name}", "deploy", deploy,
        environment=env, approvers=env.approvers, junit=junit, plan_file=plan_file,
        # GoCD reuses workspaces and Jenkins records reports 'always': without this, a
        # failed apply or a refused test would report an earlier build's results.
        before=(("rm", "-f", junit),), **credentials,
    ))
    return EnvironmentPath(
        environment=env, pipeline=f"{config.project}-{env.name}", upstream=upstream, stages=tuple(stages),
        secrets=credentials["secrets"],
        # A manual environment's pipeline stays locked at its approval and after a
        # failure until someone looks (GoCD's lockOnFailure); the others run one at a time.
        lock_behavior="lockOnFailure" if env.manual else "unlockWhenFinished",
    )



@dataclass(frozen=True)
class PipelineTemplate:
    """A GoCD pipeline template: an environment's stages with #{ENVIRONMENT} for its name."""

    name: str
    manual: bool
    stages: Tuple[Stage, ...]


def pipeline_templates(config: Config) -> Tuple[PipelineTemplate, ...]:
    """The templates the environments' pipelines use: the stages environment_path gives an
    environment, built for a stand-in named by the parameter. Approvers are left to the
    pipeline group's operate permission: a template is shared by projects whose approvers differ."""
    templates = []
    kinds = {(env.manual, env.bluegreen is not None): env for env in reversed(config.environments)}
    for manual, bluegreen in sorted(kinds):
        stand_in = Environment(name=gocd_parameter(GOCD_TEMPLATE_PARAMETER), approval="manual" if manual else "auto",
                               bluegreen=kinds[manual, bluegreen].bluegreen)
        path = environment_path(config, 1, stand_in, (config.project, "publish"))
        templates.append(PipelineTemplate(template_name(stand_in), manual,
                                          tuple(stage for stage in path.stages if stage.kind != "approval")))
    return tuple(templates)


def template_name(env: Environment) -> str:
    """The GoCD pipeline template ``env``'s pipeline uses."""
    return GOCD_TEMPLATES[env.manual] + (GOCD_BLUEGREEN_SUFFIX if env.bluegreen else "")

@dataclass(frozen=True)
class Parameter:
    """A value a person gives when starting the environments job."""

    name: str
    default: str
    description: str
    choices: Tuple[str, ...] = ()


@dataclass(frozen=True)
class OnDemandJob:
    """The reap job or the environments job: one stage with ``like``'s credentials."""

    kind: str  # "reap" or "environments"
    pipeline: str  # GoCD pipeline name, and the name suggested for the Jenkins job
    stage: Stage
    script: str  # a POSIX sh script; parameters reach it as environment variables, never as text
    parameters: Tuple[Parameter, ...] = ()

    @property
    def variables(self) -> Tuple[Tuple[str, str], ...]:
        """The parameters as GoCD environment variables with their defaults."""
        return tuple((parameter.name, parameter.default) for parameter in self.parameters)


ENVIRONMENT_ACTIONS = ("list", "create", "extend", "destroy")


def environments_script(executable: str, like: str) -> str:
    """The environments job's script. ACTION, NAME, VERSION and TTL are only ever
    expanded inside double quotes, so nobody starting the job can inject a command;
    envpipe itself validates the name, the version and the TTL (exit 2)."""
    envpipe = shlex.quote(executable)
    return "\n".join((
        "set -eu",
        'case "$ACTION" in',
        "  create)",
        f'    if [ -n "$VERSION" ]; then set -- --version "$VERSION"; else set -- --from {shlex.quote(like)}; fi',
        f'    {envpipe} env create "$NAME" "$@" ${{TTL:+--ttl "$TTL"}} ;;',
        f'  extend) {envpipe} env extend "$NAME" --ttl "$TTL" ;;',
        f'  destroy) {envpipe} env destroy "$NAME" ;;',
        "  list) ;;",
        f'  *) echo "ACTION must be one of {", ".join(ENVIRONMENT_ACTIONS)}, not \'$ACTION\'" >&2; exit 2 ;;',
        "esac",
        f"{envpipe} env list",
    ))


def on_demand_job(config: Config, kind: str, pipeline: Pipeline) -> OnDemandJob:
    """The reap or environments job; it works with the credentials of ``on_demand.like``."""
    jenkins, gocd = config.ci.jenkins, config.ci.gocd
    like = config.on_demand_settings.like
    stage = Stage(kind, kind, (), environment=config.environment(like),
                  aws_credential=jenkins.aws_credentials.get(like), gocd_aws=like in gocd.aws_credentials,
                  credentials_of=like, secrets=_secrets(config, like))
    name = f"{config.project}-{kind}"
    if kind == "reap":
        return OnDemandJob(kind, name, stage, shlex.quote(pipeline.executable) + " env reap")
    settings = config.on_demand_settings
    return OnDemandJob(kind, name, stage, environments_script(pipeline.executable, like), (
        Parameter("ACTION", "list", "list, create, extend or destroy", ENVIRONMENT_ACTIONS),
        Parameter("NAME", "", "the on-demand environment (lower-case letters, digits and '-')"),
        Parameter("VERSION", "", f"create: the published version (empty: the version {like} holds)"),
        Parameter("TTL", "", "create, extend: its lifetime from now, e.g. 8h or 2d (create's default: "
                             f"{format_duration(settings.ttl)}; at most {format_duration(settings.max_ttl)})"),
    ))


# What the venv was installed with, written once pip succeeded: a later job (the next
# stage of the build, or a later build on the same agent) finds the same line there and
# skips pip, which costs seconds to minutes per job.
INSTALL_MARKER = f"{VENV}/.envpipe-install"


def install_script(config: Config, arguments: Optional[Tuple[str, ...]] = None) -> str:
    """The shell line each job runs before envpipe: create the venv and pip install into
    it, unless the venv already holds exactly that install (its marker says so and its
    envpipe is there). The marker is removed before pip runs and written after it
    succeeds, so a failed or interrupted install is redone by the next job."""
    arguments = pip_arguments(config) if arguments is None else arguments
    wanted = _double_quoted(" ".join(arguments))
    if config.ci.requirements:
        # the same file with other pins is another install: its checksum is part of the line
        wanted += f" $(cksum < {shlex.quote(config.ci.requirements)})"
    pip = shell_words((f"{VENV}/bin/python", "-m", "pip", "install", "--quiet", *arguments))
    return (f'wanted="{wanted}"; '
            f'if [ -x {VENV}/bin/envpipe ] && [ "$(cat {INSTALL_MARKER} 2>/dev/null)" = "$wanted" ]; '
            f'then echo "envpipe: {VENV} already holds $wanted"; '
            f'else rm -f {INSTALL_MARKER} && python3 -m venv {VENV} && {pip} '
            f'&& printf "%s\\n" "$wanted" > {INSTALL_MARKER}; fi')


def _double_quoted(text: str) -> str:
    """``text`` as it is, inside a shell's double quotes."""
    for special in ("\\", '"', "`", "$"):
        text = text.replace(special, "\\" + special)
    return text


_PIP_PREFIXES = (("pip", "install"), ("pip3", "install"), ("python", "-m", "pip", "install"),
                 ("python3", "-m", "pip", "install"))
_REQUIREMENT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def default_install(config: Config) -> Tuple[str, ...]:
    """What a job installs unless ci.install says otherwise: the envpipe that generated the
    pipeline, pinned, so every agent runs the version the pipeline was written for (and
    pytest when the definition has a suite)."""
    from envpipe_agent import __version__

    return (f"envpipe-agent[terraform]=={__version__}",) + (("pytest",) if config.tests.path else ())


def pip_arguments(config: Config) -> Tuple[str, ...]:
    """What pip installs in each job: ci.requirements (hash-checked), ci.install (a
    requirement, or a whole 'pip install ...' line), else the pinned default."""
    ci = config.ci
    if ci.requirements:
        return ("--require-hashes", "-r", ci.requirements)
    if ci.install is None:
        return default_install(config)
    try:
        words = tuple(shlex.split(ci.install))
    except ValueError as exc:
        raise UsageError(f"{config.path}: ci.install: {exc}: quote it as a shell would") from None
    for prefix in _PIP_PREFIXES:
        if words[:len(prefix)] == prefix:
            words = words[len(prefix):]
            break
    if not words:
        raise UsageError(f"{config.path}: ci.install: name what to install, e.g. 'envpipe-agent[terraform]==0.1.0'")
    for word in words:
        name = _REQUIREMENT_NAME_RE.match(word)
        if (name and name.group().lower().replace("_", "-") == "envpipe-agent" and "==" not in word
                and "@" not in word):
            log.warning("%s: ci.install installs %r unpinned: each agent gets whatever is newest when its job "
                        "runs; pin it ('%s') or leave ci.install out to install this envpipe's version",
                        config.path.name, word, default_install(config)[0])
    return words


# --- version → CI expressions ------------------------------------------------------------


def _version_parts(config: Config, target: str) -> Sequence[Tuple[str, Optional[str]]]:
    parts = list(string.Formatter().parse(config.version))
    for text, name, spec, conversion in parts:
        if not _VERSION_TEXT_RE.match(text) or spec or conversion:
            raise UsageError(
                f"{config.path}: version {config.version!r} cannot be rendered for {target}: use only "
                "letters, digits, '.', '_', '+' and '-' around the placeholders"
            )
    return [(text, name) for text, name, _, _ in parts]


def gocd_label_template(config: Config) -> str:
    """GoCD's label template producing the version envpipe derives (ci_context.render_version)."""
    fields = {"build": "${COUNT}", "commit": "${%s}" % GOCD_MATERIAL, "short_commit": "${%s[:12]}" % GOCD_MATERIAL}
    label = ""
    for text, name in _version_parts(config, "GoCD"):
        label += text
        if name is None:
            continue
        if name not in fields:
            raise UsageError(
                f"{config.path}: version {config.version!r} uses {{{name}}}, which a GoCD label template "
                "cannot refer to: use {build}, {commit} or {short_commit}"
            )
        label += fields[name]
    return label


def _check_jenkins_version(config: Config) -> None:
    for _, name in _version_parts(config, "Jenkins"):
        if name == "label":
            raise UsageError(
                f"{config.path}: version {config.version!r} uses {{label}}, which Jenkins does not set: "
                "use {build}, {commit} or {short_commit}"
            )


# --- escaping by target -----------------------------------------------------------------


def groovy_string(value: str) -> Literal:
    """A Groovy single-quoted string literal: no interpolation, nothing escapes it."""
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch in "\n\r\t\b\f":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return Literal("'" + "".join(out) + "'")


def gocd_parameter(name: str) -> str:
    """Where a pipeline template's stages take GoCD's ``#{name}``: a mark that escaping
    turns into the reference (config values, escaped, cannot make one: '#' is doubled)."""
    return f"\x00{name}\x00"


_GOCD_PARAMETER_RE = re.compile(r"\x00([A-Z][A-Z0-9_]*)\x00")


def _gocd_text(value: str) -> str:
    # GoCD substitutes #{param} in every pipeline field; '##' is its literal '#'.
    return _GOCD_PARAMETER_RE.sub(r"#{\1}", value.replace("#", "##"))


def xml_value(value: str) -> Markup:
    """Text or attribute content, with line breaks kept (attributes would turn them into spaces)."""
    text = _gocd_text(value)
    if _XML_FORBIDDEN_RE.search(text):
        raise UsageError(f"{value!r} holds a control character that GoCD XML cannot carry: remove it from envpipe.yml")
    escaped = str(escape(text))
    return Markup(escaped.replace("\r", "&#13;").replace("\n", "&#10;").replace("\t", "&#9;"))


def yaml_string(value: str) -> Literal:
    """A double-quoted YAML scalar (JSON's escapes are YAML's), ASCII only."""
    return Literal(json.dumps(_gocd_text(value), ensure_ascii=True))


def one_line(value: str) -> str:
    """Text safe inside a one-line comment of any target: no line breaks or control characters."""
    return " ".join(_XML_FORBIDDEN_RE.sub(" ", value).replace("\x7f", " ").split())


def xml_comment(value: str) -> Markup:
    """Text inside <!-- -->: one line, no '--', not ending in '-'."""
    text = one_line(value)
    while "--" in text:
        text = text.replace("--", "- -")
    return Markup(text.rstrip("-"))


def _finalizer(quote: Callable[[str], Any]) -> Callable[[Any], Any]:
    def finalize(value: Any) -> Any:
        if isinstance(value, jinja2.Undefined):
            str(value)  # StrictUndefined raises here, naming the missing variable
        if isinstance(value, (Literal, Markup)):
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise UsageError(f"template printed {type(value).__name__} {value!r}: print strings or numbers only")
        return str(value) if isinstance(value, int) else quote(value)
    return finalize


# --- rendering --------------------------------------------------------------------------


def _loader(templates: Optional[Path]) -> jinja2.BaseLoader:
    # PackageLoader reads through importlib, so an installed (zipped or not) package renders.
    builtin = jinja2.PackageLoader("envpipe_agent.templates", "")
    if templates is None:
        return builtin
    if not templates.is_dir():
        raise UsageError(f"--templates {templates}: not a folder; give a folder of *.j2 files")
    return jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(templates)), builtin])


def shell_words(argv: Sequence[str]) -> str:
    """A shell command line; this build's version is expanded by the shell, quoted."""
    return " ".join(f'"{arg}"' if isinstance(arg, BuildVersion) else shlex.quote(arg) for arg in argv)


def gocd_argv(argv: Sequence[str]) -> Tuple[str, ...]:
    """GoCD runs argv lists (no shell): the version is left out, so envpipe takes the
    build's version, which in GoCD's environment pipelines is their label."""
    return tuple(arg for arg in argv if not isinstance(arg, BuildVersion))


def _environment(target: str, templates: Optional[Path]) -> jinja2.Environment:
    quote = {"jenkins": groovy_string, "gocd-xml": xml_value, "gocd-yaml": yaml_string}[target]
    env = jinja2.Environment(
        loader=_loader(templates),
        undefined=jinja2.StrictUndefined,
        autoescape=target == "gocd-xml",
        finalize=_finalizer(quote),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["literal"] = Literal  # for names validated to be safe unquoted
    env.filters["comment"] = xml_comment if target == "gocd-xml" else lambda value: Literal(one_line(value))
    env.filters["shell"] = lambda argv: Literal(groovy_string(shell_words(argv)))
    env.filters["gocd_argv"] = gocd_argv
    env.filters["basename"] = lambda path: PurePosixPath(path).name
    env.filters["dirname"] = lambda path: str(PurePosixPath(path).parent)
    return env


def origin_url(folder: Path) -> Optional[str]:
    """The URL of ``folder``'s git 'origin' remote, without any credentials in it; None
    when there is no git, no repository or no such remote."""
    try:
        found = subprocess.run(["git", "-C", str(folder), "remote", "get-url", "origin"], capture_output=True,
                               text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    url = found.stdout.strip()
    if found.returncode != 0 or not url:
        return None
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        # https://user:token@host/...: a token must not end up in the pipeline config
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
        url = urlunsplit(parts)
    return url


def _check(config: Config, target: str, pipeline: Pipeline) -> Dict[str, Any]:
    """Refuse what the target cannot express; return target-specific template values."""
    if target == "jenkins":
        _check_jenkins_version(config)
        for name, _ in pipeline.variables:
            if name in _GROOVY_KEYWORDS:
                raise UsageError(f"{config.path}: ci.variables.{name}: a Groovy keyword cannot name a Jenkins "
                                 "environment variable; rename it")
        return {"version_variable": Literal(BUILD_VERSION[1:]), "version_file": f"{REPORTS}/version"}
    gocd = config.ci.gocd
    git_url = gocd.git_url or origin_url(config.path.parent)
    if not git_url:
        raise UsageError(f"{config.path}: ci.gocd.git_url is not set and {config.path.parent} has no git 'origin' "
                         "remote to take it from: set ci.gocd.git_url to the repository holding envpipe.yml")
    return {
        "label_template": gocd_label_template(config),
        "group": gocd.group or config.project,
        "git_url": git_url,
        "material": GOCD_MATERIAL,
        "upstream_material": GOCD_UPSTREAM,
        "upstream_label": "${%s}" % GOCD_UPSTREAM,
        "version_template": GOCD_VERSION_TEMPLATE,
        "approver_from": (APPROVER_FROM_VARIABLE, "GO_TRIGGER_USER"),
        "schema_version": GOCD_SCHEMA_VERSION,
        "secret_ref": lambda key: Literal(yaml_string(_secret_reference(gocd.secret_config, key))),
        "secret_value": lambda key: _secret_reference(gocd.secret_config, key),
    }


def _secret_reference(secret_config: str, key: str) -> str:
    """GoCD's secret param: the server resolves it from its secret config when a job runs."""
    return "{{SECRET:[%s][%s]}}" % (secret_config, key)


def _render(env: jinja2.Environment, name: str, **values: Any) -> str:
    try:
        return env.get_template(name).render(**values)
    except jinja2.TemplateNotFound as exc:
        raise UsageError(f"template {exc.name} not found: the package is incomplete; reinstall envpipe-agent") from None
    except jinja2.UndefinedError as exc:
        raise UsageError(f"template {name}: {exc}: fix the template (see --templates)") from None
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(f"template {exc.filename or exc.name}: line {exc.lineno}: {exc.message}") from None


def render(config: Config, target: str, templates: Optional[Path] = None, full: bool = False,
           job: str = "path", template: bool = False, library: Optional[str] = None) -> str:
    """The pipeline config for ``target`` (jenkins, gocd-xml, gocd-yaml); same input, same text.

    ``job``: the path (publish and the environments), or the on-demand ``reap`` or
    ``environments`` job. ``template`` (GoCD): the environments' pipelines use the
    pipeline templates, which the XML also defines. ``library`` (Jenkins): the short
    Jenkinsfile calling the steps of that Shared Library (render_library)."""
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    if job not in JOBS:
        raise UsageError(f"unknown job {job!r}: choose one of {', '.join(JOBS)}")
    if full and target != "gocd-xml":
        raise UsageError("--full applies to gocd-xml only (a complete <cruise> document)")
    if template and not target.startswith("gocd-"):
        raise UsageError("--template applies to gocd-xml and gocd-yaml (GoCD pipeline templates); "
                         "for Jenkins, see 'generate jenkins-library' and --use-library")
    if library is not None and target != "jenkins":
        raise UsageError("--use-library applies to jenkins only (a Jenkinsfile using the Shared Library)")
    if job != "path" and (template or library is not None):
        raise UsageError(f"--job {job} renders a job of its own: it takes neither --template nor --use-library")
    if library is not None and not library.strip():
        raise UsageError("--use-library needs the library's name as configured in Jenkins, e.g. --use-library envpipe")
    pipeline = pipeline_model(config)
    values = _check(config, target, pipeline)
    if job != "path":
        values.update(job=on_demand_job(config, job, pipeline),
                      cron=REAP_CRON["jenkins" if target == "jenkins" else "gocd"])
    if template:
        values.update(templates=pipeline_templates(config), template_of=template_name,
                      parameter=GOCD_TEMPLATE_PARAMETER)
    if library is not None:
        values.update(library=library)
    if job != "path":
        name = ON_DEMAND_TARGETS[target]
    elif template:
        name = f"gocd-template.{target[len('gocd-'):]}.j2"
    elif library is not None:
        name = "Jenkinsfile-library.j2"
    else:
        name = TARGETS[target]
    return _render(_environment(target, templates), name, pipeline=pipeline, config=config, ci=config.ci, full=full,
                   **values)


def render_library(config: Config, templates: Optional[Path] = None) -> Dict[str, str]:
    """The Jenkins Shared Library: {path inside the library: text}, vars/<step>.groovy and
    vars/<step>.txt for each of LIBRARY_STEPS, in a fixed order."""
    pipeline = pipeline_model(config)
    values = dict(_check(config, "jenkins", pipeline), pipeline=pipeline, config=config, ci=config.ci,
                  usages=LIBRARY_STEPS, venv=VENV)
    env = _environment("jenkins", templates)
    files = {}
    for step in LIBRARY_STEPS:
        files[f"vars/{step}.groovy"] = _render(env, f"jenkins-library-{step}.groovy.j2", step=step, **values)
        files[f"vars/{step}.txt"] = _render(env, "jenkins-library-help.txt.j2", step=step, **values)
    return files
