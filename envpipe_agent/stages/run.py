"""run: the whole path locally, stage by stage, as the generated pipelines run it.

Publish once, then for each environment in path order: promote, apply, test (a
blue-green environment: ``bluegreen``). What
would stop every test stage (nothing to test, no pytest) is refused before anything
is published. A failing stage stops the run with that stage's error, the stage
named; once publish has run a usage error is a stage failure (exit 1), since exit 2
would say nothing changed. An
``approval: manual`` environment stops it unless the person running it approved
that environment by name. Each stage logs one line with its timing.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

from envpipe_agent.approval import APPROVER_VARIABLE
from envpipe_agent.context import StageContext
from envpipe_agent.errors import EnvpipeError, StageFailed, UsageError
from envpipe_agent.stages.apply import apply
from envpipe_agent.stages.bluegreen import bluegreen
from envpipe_agent.stages.promote import promote
from envpipe_agent.stages.publish import publish
from envpipe_agent.stages.testing import check_prerequisites, run_tests

log = logging.getLogger(__name__)


@dataclass
class Step:
    stage: str
    environment: Optional[str]
    seconds: float
    detail: str


@dataclass
class RunResult:
    version: str
    steps: List[Step] = field(default_factory=list)
    completed: List[str] = field(default_factory=list)  # environments promoted, applied and tested
    waiting_for: Optional[str] = None  # the manual environment the run stopped before
    seconds: float = 0.0

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        done = ", ".join(self.completed) or "no environment"
        text = f"version {self.version}: {done} done in {self.seconds:.1f}s"
        if self.waiting_for:
            text += (f"; {self.waiting_for} waits for approval "
                     f"(rerun with --approve {self.waiting_for} to go on)")
        return text


def _apply_detail(outcome: Any) -> str:
    summary = getattr(outcome, "summary", "")
    return summary() if callable(summary) else str(summary or "")


def _stage(result: RunResult, stage: str, environment: Optional[str], action: Callable[[], Any],
           describe: Callable[[Any], str]) -> Any:
    label = f"{environment or '':<12} {stage:<10}"
    started = time.monotonic()
    try:
        outcome = action()
    except EnvpipeError as exc:
        log.info("%s FAILED after %.1fs", label, time.monotonic() - started)
        if stage == "publish":
            raise  # nothing of the run's has changed anything yet
        raise _stage_error(exc, stage, environment) from exc
    seconds = time.monotonic() - started
    detail = describe(outcome)
    result.steps.append(Step(stage, environment, round(seconds, 3), detail))
    log.info("%s %-60s %6.1fs", label, detail, seconds)
    return outcome


def _stage_error(exc: EnvpipeError, stage: str, environment: Optional[str]) -> EnvpipeError:
    """``exc`` with the stage named. A usage error (exit 2: "nothing changed") becomes
    a stage failure: the version is published and maybe promoted by now. Other errors
    keep their kind and exit code (a guard's refusal is still exit 3)."""
    message = f"run stopped at {stage} of {environment}: {exc}" if environment else f"run stopped at {stage}: {exc}"
    if isinstance(exc, UsageError):
        return StageFailed(message)
    return exc.reworded(message)


def run_pipeline(ctx: StageContext, version: Optional[str] = None, through: Optional[str] = None,
                 approve: Iterable[str] = (), junit_dir: Optional[Path] = None) -> RunResult:
    """Publish ``version`` and take it along the path, up to and including ``through``."""
    started = time.monotonic()
    names = ctx.config.environment_names
    approved = {ctx.config.environment(name).name for name in approve}  # unknown names fail here
    last = ctx.config.environment(through).name if through else names[-1]
    version = ctx.resolve_version(version)
    # Before publishing: a run that cannot test must change nothing.
    check_prerequisites(ctx, source=ctx.config.source)
    result = RunResult(version=version)

    _stage(result, "publish", None, lambda: publish(ctx, version=version),
           lambda r: f"{r.version}: {r.files} files, {r.uploaded} uploaded"
                     + (" (already published)" if r.already_published else ""))
    for env in ctx.config.environments:
        if env.manual and env.name not in approved:
            result.waiting_for = env.name
            log.info("%-12s %-10s approval: manual; rerun with --approve %s", env.name, "waiting", env.name)
            break
        # --approve ENV is the approval a pipeline's step gives: the person running this
        # (ENVPIPE_APPROVER when set) is recorded as the approver.
        approver = (ctx.environ.get(APPROVER_VARIABLE) or ctx.ci.user or "unknown") if env.name in approved else None
        junit = Path(junit_dir) / f"{env.name}.xml" if junit_dir else None
        if env.bluegreen:
            # New instance, its tests, the swap, the old one destroyed (SPEC §9); a failing
            # test raises, traffic untouched.
            _stage(result, "bluegreen", env.name,
                   lambda: bluegreen(ctx, env.name, version, approved_by=approver, junit=junit),
                   lambda r: f"{r.version} live on {r.environment}-{r.live}"
                             + (f", {r.old_destroyed} destroyed" if r.old_destroyed else ""))
            result.completed.append(env.name)
            if env.name == last:
                break
            continue
        _stage(result, "promote", env.name, lambda: promote(ctx, env.name, version, approved_by=approver),
               lambda r: f"{r.version} ({r.describe()})")
        _stage(result, "apply", env.name, lambda: apply(ctx, env.name, approved_by=approver), _apply_detail)
        tested = _stage(result, "test", env.name, lambda: run_tests(ctx, env.name, junit=junit),
                        lambda r: f"{r.result}: {r.counts()}")
        if not tested.passed:
            raise StageFailed(f"{env.name}: version {version} failed its tests "
                              f"({', '.join(tested.failed[:3])}); the run stops here")
        result.completed.append(env.name)
        if env.name == last:
            break
    result.seconds = time.monotonic() - started
    return result
