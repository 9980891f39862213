"""iam and doctor: least-privilege policies and the repository's safety checks (SPEC §11)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Mapping, Optional

log = logging.getLogger(__name__)


def _repository_url(args: argparse.Namespace, environ: Mapping[str, str], configured: Optional[str]) -> Optional[str]:
    return args.repo or environ.get("ENVPIPE_REPO") or configured


def run_iam(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent import iam
    from envpipe_agent.config import load_config
    from envpipe_agent.errors import UsageError

    config = load_config(Path(args.config))
    url = _repository_url(args, environ, config.repository)
    if args.role_per_environment:
        if args.stage or args.environment:
            raise UsageError("--role-per-environment prints every environment's policy: give no STAGE or ENV")
        result = iam.environment_policies(config, url)
        documents = result.items()
    else:
        if not args.stage:
            raise UsageError(f"give a stage ({', '.join(iam.STAGES)}) or --role-per-environment")
        result = iam.stage_policy(config, url, args.stage, args.environment)
        documents = [(args.stage, result)]
    for name, document in documents:
        size = iam.policy_size(document)
        if size > iam.MANAGED_POLICY_LIMIT:
            log.warning("%s: the policy is %d characters, over IAM's %d for a managed policy: attach it as an "
                        "inline policy or split it", name, size, iam.MANAGED_POLICY_LIMIT)
    # Always JSON: a policy document is what this command prints (--json changes nothing).
    print(json.dumps(result, indent=2))
    sys.stdout.flush()
    return 0


def run_doctor(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from envpipe_agent import iam
    from envpipe_agent.config import load_config
    from envpipe_agent.doctor import OK, doctor
    from envpipe_agent.errors import UsageError

    config = load_config(Path(args.config))
    url = _repository_url(args, environ, config.repository)
    if not url:
        raise UsageError(f"{config.path}: no repository: set 'repository', ENVPIPE_REPO or --repo")
    checks = doctor(config, url, environ, partition=iam.partition(config))
    findings = [check for check in checks if check.status != OK]
    if args.json:
        print(json.dumps({"repository": url, "ok": not findings, "checks": [c.as_dict() for c in checks]},
                         indent=2))
    else:
        print("\n".join(check.line() for check in checks))
    sys.stdout.flush()
    return 1 if findings else 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "iam", parents=[common], help="print the least-privilege IAM policy of a stage (JSON)",
        description="Print the IAM policy document (JSON) a stage needs on the artefact repository and the "
                    "state envpipe manages, derived from envpipe.yml. Attach it to the credentials that stage runs "
                    "with; see the README.")
    parser.add_argument("stage", nargs="?", metavar="STAGE",
                        help="publish, promote, apply (with plan and destroy), test, status, unlock; "
                             "role / state-role: what an environment's role_arn / state role_arn needs")
    parser.add_argument("environment", nargs="?", metavar="ENV",
                        help="the environment, for every stage but publish and status")
    parser.add_argument("--role-per-environment", action="store_true",
                        help="one policy per environment covering all its stages (what generated pipelines bind)")
    parser.set_defaults(handler=run_iam)

    parser = subparsers.add_parser(
        "doctor", parents=[common], help="check the repository bucket's safety settings (read-only)",
        description="Check the artefact repository's bucket: versioning, default encryption, Block Public Access, "
                    "a TLS-only bucket policy, object ownership, and where approval: manual environments keep their "
                    "state. One line per check; exit 1 when anything should change. Never changes the bucket.")
    parser.set_defaults(handler=run_doctor)
