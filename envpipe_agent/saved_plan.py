"""Saved plans: what an approver saw is what apply applies (SPEC §4 `plan --out`, `apply --plan`).

``envpipe plan ENV --out FILE`` writes FILE, a zip holding ``envpipe-plan.json`` (the
project, environment, version and content digest planned, the tool, when and by which
build) and the tool's own plan: Terraform's binary plan file (``plan.tfplan``), or the
CloudFormation change set the plan created and kept (its id, in the JSON).
``envpipe apply ENV --plan FILE`` applies exactly that plan, and refuses (exit 3) a plan
made for another project, environment, tool, version or content. Terraform refuses a
plan whose state changed since it was made (another apply ran), and CloudFormation a
change set the stack moved on from, by themselves; envpipe says so in words.

A Terraform plan holds the values it would set, secrets included, in clear text: FILE
is written readable by its owner only, and belongs in a CI server's build storage
(a Jenkins stash, a GoCD artifact), never in the artefact repository.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from envpipe_agent.errors import Refused, UsageError
from envpipe_agent.files import prepare_named_file, replacing

FORMAT = 1
METADATA = "envpipe-plan.json"
TOOL_PLAN = "plan.tfplan"


@dataclass(frozen=True)
class SavedPlan:
    project: str
    environment: str
    version: str
    digest: str  # the content digest of the definition planned
    tool: str
    created: str  # ISO 8601 UTC
    build: Optional[str] = None  # the CI build that made it (URL, else server and number)
    changed: bool = True
    # what the tool keeps outside the file: CloudFormation's change set {change_set, stack, kind}
    tool_plan: Optional[Dict[str, Any]] = None

    def describe(self) -> str:
        return f"version {self.version} of {self.project} for {self.environment}, planned {self.created}" + (
            f" by {self.build}" if self.build else "")


# What every check compares as text: anything else was not written by 'plan --out'.
_TEXT_FIELDS = ("project", "environment", "version", "digest", "tool", "created")


def prepare(path: Path) -> None:
    """Make ``path``'s folder (as --junit does), before the tool runs: a plan that cannot
    be saved is refused before anything is planned."""
    prepare_named_file(path, "--out", "the file to save the plan in")


def write(path: Path, plan: SavedPlan, tool_plan: Optional[Path]) -> str:
    """Write the saved plan to ``path`` in one step (owner-only); return its SHA-256."""
    prepare(path)
    with replacing(path, mode=0o600) as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(METADATA, json.dumps({"format": FORMAT, **asdict(plan)}, indent=1, sort_keys=True))
        if tool_plan is not None:
            archive.write(tool_plan, TOOL_PLAN)
    return sha256(path)


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def read(path: Path) -> Tuple[SavedPlan, Optional[bytes]]:
    """The saved plan at ``path`` and the tool's plan in it (None when the tool keeps none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            raw: Dict[str, Any] = json.loads(archive.read(METADATA))
            tool_plan = archive.read(TOOL_PLAN) if TOOL_PLAN in names else None
    except FileNotFoundError:
        raise UsageError(f"--plan {path}: no such file; pass the file 'envpipe plan ENV --out FILE' wrote") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise UsageError(f"--plan {path}: not a plan saved by 'envpipe plan --out' ({exc})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"--plan {path}: not a plan saved by 'envpipe plan --out' ({METADATA} is no JSON object)")
    saved_format = raw.pop("format", None)
    if saved_format != FORMAT:
        raise UsageError(f"--plan {path}: saved by another envpipe (plan format {saved_format!r}, expected "
                         f"{FORMAT}); plan again with this one")
    known = {item.name: item for item in fields(SavedPlan)}
    unknown = sorted(set(raw) - set(known))
    missing = sorted(name for name, item in known.items()
                     if name not in raw and item.default is MISSING and item.default_factory is MISSING)
    if unknown or missing:
        what = "; ".join(part for part in (f"unknown fields {', '.join(unknown)}" if unknown else "",
                                           f"missing fields {', '.join(missing)}" if missing else "") if part)
        raise UsageError(f"--plan {path}: saved by another envpipe ({what}); plan again with this one")
    plan = SavedPlan(**raw)
    wrong = [name for name in _TEXT_FIELDS if not isinstance(getattr(plan, name), str)]
    if wrong:
        raise UsageError(f"--plan {path}: not a plan saved by 'envpipe plan --out' ({', '.join(wrong)} not text)")
    return plan, tool_plan


def check(plan: SavedPlan, path: Path, project: str, environment: str, tool: str, tool_plan: Optional[bytes]) -> None:
    """Refuse a plan made for another project, environment or tool (before anything runs),
    or one that lacks the tool's plan (``tool_plan``, Terraform's)."""
    if (tool == "terraform" and tool_plan is None) or (tool == "cloudformation" and plan.tool_plan is None):
        raise UsageError(f"--plan {path}: holds no {tool} plan; pass the file 'envpipe plan ENV --out FILE' wrote")
    for what, saved, wanted in (("project", plan.project, project), ("environment", plan.environment, environment),
                                ("tool", plan.tool, tool)):
        if saved != wanted:
            raise Refused(f"--plan {path} was made for {what} {saved}, not {wanted}: apply it where it was planned, "
                          f"or plan {environment} again")


def check_holds(plan: SavedPlan, path: Path, environment: str, version: str, digest: str) -> None:
    """Refuse a plan of another version, or of other content under the same version,
    than ``environment`` holds now: what was approved is what is applied."""
    if plan.version != version:
        raise Refused(f"--plan {path} is a plan of version {plan.version}, but {environment} holds version {version}: "
                      f"it was not what was approved; plan {version} ('envpipe plan {environment} --version {version} "
                      f"--out FILE'), have it approved, and apply that")
    if plan.digest != digest:
        raise Refused(f"--plan {path} was made from other content than version {version} in {environment} now "
                      f"({plan.digest} vs {digest}): plan it again and have it approved")
