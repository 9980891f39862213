"""A CloudFormation definition as envpipe reads it, before any AWS call: the template,
its declared parameters and their constraints, the environment's vars as parameter
values, the stack name and tags.

Everything here is pure (files in, values out): a configuration mistake is a
ConfigError (exit 2) raised before anything is changed, and CloudFormation's own
parameter constraints (AllowedValues, AllowedPattern, MinLength/MaxLength,
MinValue/MaxValue) are checked here too, so a value CloudFormation would reject is
named with its rule before a change set is even created.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from envpipe_agent.errors import ConfigError, StageFailed, UnsafePath
from envpipe_agent.paths import local_path
from envpipe_agent.tools.base import RunRequest, parameter_name
from envpipe_agent.written_yaml import WrittenLoader

STACK_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,127}\Z")
# Set by envpipe where a template declares them; a blue-green router's too (SPEC §9).
ENVPIPE_PARAMETERS = ("EnvpipeEnvironment", "EnvpipeVersion", "EnvpipeLiveColor", "EnvpipeLiveEnvironment",
                      "EnvpipeLiveOutputs")
MASK = "****"


class _TemplateLoader(WrittenLoader):
    """Scalars as written (a constraint ``AllowedValues: [Yes, No]`` is text, as for
    CloudFormation), and CloudFormation's short forms (``!Ref``, ``!Sub`` ...)."""


def _short_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix if suffix == "Ref" else f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _short_form)


@dataclass(frozen=True)
class Parameter:
    """A declared parameter: what envpipe checks a value against before CloudFormation does."""

    no_echo: bool
    has_default: bool
    type: str = "String"
    allowed_values: Optional[Tuple[str, ...]] = None
    allowed_pattern: Optional[str] = None
    min_length: Optional[int] = None
    max_length: Optional[int] = None
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    description: str = ""  # ConstraintDescription, said along with a broken rule

    @property
    def is_list(self) -> bool:
        return self.type == "CommaDelimitedList" or self.type.startswith("List<")

    @property
    def is_number(self) -> bool:
        return self.type in ("Number", "List<Number>")

    def broken_rule(self, value: str) -> Optional[str]:
        """The constraint ``value`` breaks, as CloudFormation names it; None if none.
        A list's constraints hold for each of its items, as CloudFormation checks them."""
        items = value.split(",") if self.is_list else [value]
        for item in items:
            if self.allowed_values is not None and item not in self.allowed_values:
                return f"AllowedValues {list(self.allowed_values)}"
            if self.allowed_pattern is not None and not _full_match(self.allowed_pattern, item):
                return f"AllowedPattern {self.allowed_pattern!r}"
            if self.is_number:
                number = _number(item)
                if number is None:
                    return f"Type {self.type} (not a number)"
                if self.min_value is not None and number < self.min_value:
                    return f"MinValue {_plain_number(self.min_value)}"
                if self.max_value is not None and number > self.max_value:
                    return f"MaxValue {_plain_number(self.max_value)}"
        if self.min_length is not None and len(value) < self.min_length:
            return f"MinLength {self.min_length}"
        if self.max_length is not None and len(value) > self.max_length:
            return f"MaxLength {self.max_length}"
        return None


def _number(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        return None


def _plain_number(number: float) -> str:
    return str(int(number)) if number == int(number) else str(number)


def _full_match(pattern: str, text: str) -> bool:
    """CloudFormation matches AllowedPattern (a Java regular expression) against the
    whole value. A pattern Python cannot read is left to CloudFormation to judge."""
    try:
        return re.fullmatch(pattern, text) is not None
    except re.error:
        return True


def _text(value: Any) -> str:
    """A template value as CloudFormation reads it (JSON templates give typed values)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _declared(name: str, spec: Mapping[str, Any], relative: str) -> Parameter:
    def number(key: str) -> Optional[float]:
        if spec.get(key) is None:
            return None
        found = _number(_text(spec[key]))
        if found is None:
            raise StageFailed(f"template {relative}: parameter {name}: {key} {spec[key]!r} is not a number; "
                              "fix it and publish a new version")
        return found

    allowed = spec.get("AllowedValues")
    lengths = {key: number(key) for key in ("MinLength", "MaxLength")}
    return Parameter(
        no_echo=_text(spec.get("NoEcho", False)).lower() == "true",
        has_default="Default" in spec,
        type=_text(spec.get("Type", "String")),
        allowed_values=tuple(_text(item) for item in allowed) if isinstance(allowed, list) else None,
        allowed_pattern=_text(spec["AllowedPattern"]) if spec.get("AllowedPattern") is not None else None,
        min_length=None if lengths["MinLength"] is None else int(lengths["MinLength"]),
        max_length=None if lengths["MaxLength"] is None else int(lengths["MaxLength"]),
        min_value=number("MinValue"),
        max_value=number("MaxValue"),
        description=_text(spec.get("ConstraintDescription") or ""),
    )


@dataclass(frozen=True)
class Prepared:
    """Everything a change set needs, worked out before any AWS call."""

    stack_name: str
    template_path: str
    body: bytes
    parameters: List[Dict[str, str]]
    shown_parameters: List[str]  # NAME=value with NoEcho values masked, for the log
    secret_values: List[str]  # values of NoEcho parameters: never printed
    tags: List[Dict[str, str]]
    capabilities: List[str]


def _read_template(request: RunRequest) -> Tuple[str, bytes, Dict[str, Parameter]]:
    config = request.config
    relative = config.cloudformation.template
    try:
        path = local_path(request.workdir, relative)
    except UnsafePath:
        raise ConfigError(f"{config.path}: cloudformation.template: {relative!r} must be a relative path "
                          "inside the definition") from None
    if not path.is_file():
        raise ConfigError(f"{config.path}: cloudformation.template: {relative!r} is not in version "
                          f"{request.version}'s definition; fix the path or publish the template")
    body = path.read_bytes()
    document = _parse_template(body, relative)
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise StageFailed(f"template {relative} has no Resources section; is it a CloudFormation template?")
    declared = document.get("Parameters") or {}
    if not isinstance(declared, dict) or not all(isinstance(spec, dict) for spec in declared.values()):
        raise StageFailed(f"template {relative}: Parameters must map each name to its properties; "
                          "fix it and publish a new version")
    parameters = {str(name): _declared(str(name), spec, relative) for name, spec in declared.items()}
    return relative, body, parameters


def _parse_template(body: bytes, relative: str) -> Any:
    """The template as data, from YAML (short forms included) or JSON."""
    try:
        return yaml.load(body, Loader=_TemplateLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        yaml_problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    try:  # JSON that YAML 1.1 trips over (tabs, for one)
        return json.loads(body)
    except ValueError:
        raise StageFailed(f"template {relative} is neither valid YAML nor JSON ({yaml_problem}); "
                          "fix it and publish a new version") from None


def _parameter_value(value: Any) -> str:
    """A vars value as CloudFormation wants it: a string; lists as CommaDelimitedList."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_parameter_value(item) for item in value)
    if value is None:
        return ""
    return str(value)


def _check_constraints(name: str, spec: Parameter, value: str, typed: Any, where: str, relative: str) -> None:
    """ConfigError (exit 2) for a value the template's constraints refuse, naming the
    parameter and the rule; a NoEcho value is never shown."""
    rule = spec.broken_rule(value)
    if rule is None:
        return
    shown = MASK if spec.no_echo else repr(value)
    because = f" ({spec.description})" if spec.description else ""
    if name in ENVPIPE_PARAMETERS:
        raise ConfigError(f"template {relative}: parameter {name} is set by envpipe to {shown}, which breaks its "
                          f"{rule}{because}; loosen the constraint in the template")
    hint = ""
    retyped = typed if not isinstance(typed, (list, tuple)) else next(
        (item for item in typed if not isinstance(item, str)), "")
    if retyped is not None and not isinstance(retyped, str):
        # envpipe passes the text as written, but it is the kind of scalar YAML 1.1
        # reads as a boolean or number: quoting it says what is meant to every reader.
        hint = f"; it is passed as written, but YAML reads it as a {type(retyped).__name__}: quote it ({name}: \"...\")"
    raise ConfigError(f"{where}.{name}: {shown} is not allowed by the {rule} of template {relative}'s parameter "
                      f"{name}{because}{hint}")


def _environment_where(request: RunRequest) -> str:
    names = request.config.environment_names
    index = names.index(request.environment.name) if request.environment.name in names else 0
    return f"{request.config.path}: environments[{index}].vars"


def stack_name_for(request: RunRequest) -> str:
    """``cloudformation.stack_name`` with ``{project}`` and ``{environment}`` filled in."""
    config = request.config
    name = config.cloudformation.stack_name.format(project=config.project, environment=request.environment.name)
    if not STACK_NAME_RE.match(name):
        raise ConfigError(f"{config.path}: cloudformation.stack_name: {name!r} is not a valid stack "
                          "name (a letter, then letters, digits and '-', at most 128 characters)")
    return name


def prepare(request: RunRequest) -> Prepared:
    """Resolve the stack name, template, parameters and tags; raise ConfigError (exit 2)
    for any configuration mistake, before anything is changed."""
    environment = request.environment
    settings = request.config.cloudformation
    stack_name = stack_name_for(request)
    relative, body, declared = _read_template(request)
    where = _environment_where(request)
    reserved = sorted(set(environment.vars) & set(ENVPIPE_PARAMETERS))
    if reserved:
        raise ConfigError(f"{where}: {', '.join(reserved)} is set by envpipe; remove it from vars")
    undeclared = sorted(set(environment.vars) - set(declared))
    if undeclared:
        raise ConfigError(
            f"{where}: {', '.join(undeclared)} not declared in the Parameters of template {relative} "
            f"(it declares: {', '.join(sorted(declared)) or 'none'}); declare it or remove it from vars"
        )
    for value_name, value in environment.vars.items():
        if isinstance(value, Mapping):
            raise ConfigError(f"{where}.{value_name}: a CloudFormation parameter takes a string, number, "
                              "boolean or list, not a mapping")
    # The text as written in envpipe.yml: YAML 1.1 would make `Yes` true and `010` 8.
    written = environment.vars if environment.vars_written is None else environment.vars_written
    values = {name: _parameter_value(value) for name, value in written.items()}
    envpipe_values = {"EnvpipeEnvironment": environment.name, "EnvpipeVersion": request.version,
                      **{parameter_name(name): value for name, value in request.variables.items()}}
    values.update({name: value for name, value in envpipe_values.items() if name in declared})
    for name in sorted(values):
        _check_constraints(name, declared[name], values[name], environment.vars.get(name), where, relative)
    missing = sorted(name for name, spec in declared.items() if not spec.has_default and name not in values)
    if missing:
        raise ConfigError(f"{where}: template {relative} needs {', '.join(missing)} (no Default); "
                          f"set it in the vars of environment {environment.name!r}")
    secret_values = [values[name] for name in sorted(values) if declared[name].no_echo and values[name]]
    return Prepared(
        stack_name=stack_name,
        template_path=relative,
        body=body,
        parameters=[{"ParameterKey": name, "ParameterValue": values[name]} for name in sorted(values)],
        shown_parameters=[f"{name}={MASK if declared[name].no_echo else values[name]}" for name in sorted(values)],
        secret_values=secret_values,
        tags=[{"Key": "envpipe:version", "Value": request.version},
              {"Key": "envpipe:environment", "Value": environment.name}],
        capabilities=list(settings.capabilities),
    )


