"""What the apply/plan/destroy stages hand a tool runner, and what they get back.

A runner (Terraform, CloudFormation) works in a verified, private work folder that
holds exactly the environment's definition. It never touches the artefact
repository's files except through ``RunRequest.repository`` where the tool needs it
(Terraform state kept in the repository, CloudFormation templates too large to
send inline).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol

from envpipe_agent import aws_credentials
from envpipe_agent.ci_context import CIContext
from envpipe_agent.config import Config, Environment
from envpipe_agent.manifest import Manifest
from envpipe_agent.redact import Redactor
from envpipe_agent.repository import Repository


@dataclass(frozen=True)
class RunRequest:
    config: Config
    environment: Environment
    version: str
    manifest: Manifest
    workdir: Path  # private (0700) folder holding the verified definition
    environ: Mapping[str, str]  # the agent's environment plus any assumed-role credentials
    redactor: Redactor
    repository: Repository  # reached with ``environ``'s credentials
    ci: CIContext
    # Command-line choices a runner may honour, e.g. {"replace_failed": True}.
    options: Mapping[str, Any] = field(default_factory=dict)
    # Makes the AWS clients a runner needs, from ``environ``.
    client_factory: aws_credentials.ClientFactory = aws_credentials.client
    # envpipe's own values beyond environment and version, by snake_case name: a
    # blue-green router's {"live_color": "green", ...}. Terraform gets each as
    # TF_VAR_envpipe_<name>, CloudFormation as parameter Envpipe<CamelName> where the
    # template declares it.
    variables: Mapping[str, str] = field(default_factory=dict)


def parameter_name(variable: str) -> str:
    """The CloudFormation parameter of an envpipe variable: live_color -> EnvpipeLiveColor."""
    return "Envpipe" + "".join(part.capitalize() for part in variable.split("_"))


@dataclass(frozen=True)
class Output:
    value: Any
    sensitive: bool = False


@dataclass
class RunOutcome:
    """What happened: ``changed`` is False for a no-op, counts as the tool reports them."""

    changed: bool
    added: int = 0
    changed_count: int = 0
    destroyed: int = 0
    outputs: Dict[str, Output] = field(default_factory=dict)
    summary: str = ""
    details: Dict[str, Any] = field(default_factory=dict)
    # A plan's: what makes it a change ("template changes", "drift"; empty: the tool
    # does not say), and the drift it found (None: not checked).
    causes: List[str] = field(default_factory=list)
    drift: Optional[Dict[str, Any]] = None

    def recorded_outputs(self) -> Dict[str, Any]:
        """Outputs as records hold them: sensitive values replaced, never stored."""
        return {name: ("<sensitive>" if out.sensitive else out.value) for name, out in self.outputs.items()}


class ToolRunner(Protocol):
    name: str

    def plan(self, request: RunRequest) -> RunOutcome:
        """Show what apply would change; ``changed`` says whether it would."""

    def apply(self, request: RunRequest) -> RunOutcome:
        """Bring the environment to the definition; return outputs."""

    def destroy(self, request: RunRequest) -> RunOutcome:
        """Remove the environment's infrastructure."""
