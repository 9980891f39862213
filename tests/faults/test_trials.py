"""Seeded trials of publish and promote against an S3 that throttles, fails, drops
connections, loses answers and cuts bodies short, a few faults at random per trial.

Each trial either completes despite its faults or stops with one of envpipe's own
errors (never anything else: that would be exit 4); then the same commands without
faults complete it. After every trial: no version visible that does not verify, no
environment folder that verifies as anything but a whole version (or is marked as cut
short, which apply refuses), no lock left behind, no record written twice. The counts
are what README's "What envpipe guarantees" quotes.
"""
from __future__ import annotations

import collections
import json
import os
import random

import pytest

from envpipe_agent.context import StageContext
from envpipe_agent.errors import EnvpipeError, IntegrityError
from envpipe_agent.locking import read_lock
from envpipe_agent.manifest import check_folder, read_manifest
from envpipe_agent.stages.promote import promote
from envpipe_agent.stages.publish import publish
from fault_proxy import FaultProxy

TRIALS = 40
FAULTS = ("slowdown", "internal", "reset", "lose", "truncate")
# (method, key pattern): every kind of request publish and promote make
TARGETS = (
    ("PUT", r"/1\.0\.\d+/[^.]"),                       # uploads of a version's files
    ("PUT", r"/1\.0\.\d+/\.envpipe/(claim|manifest)\.json$"),
    ("PUT", r"/test/[^.]"),                            # copies into the environment
    ("PUT", r"/test/\.envpipe/manifest\.json$"),
    ("PUT", r"/\.envpipe/locks/test\.json$"),
    ("PUT", r"/\.envpipe/(records|summary)/test/"),
    ("GET", r"manifest\.json$"),
    ("GET", r"/\.envpipe/locks/test\.json$"),
    ("GET", r"^/our-project-repository$"),             # listings
    ("POST", r"^/our-project-repository$"),            # DeleteObjects (stale files, the lock)
)


@pytest.mark.parametrize("repository_url", ["s3"], indirect=True)
def test_seeded_fault_trials_keep_every_invariant(project, moto_server, monkeypatch, capsys):
    outcomes = collections.Counter()
    with FaultProxy(moto_server) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        # Fewer attempts than the default 5, so that faults also surface as errors.
        faulty = StageContext.load(project.root / "envpipe.yml", environ={**os.environ, "AWS_MAX_ATTEMPTS": "3"})
        clean = project.context()
        for trial in range(TRIALS):
            rng = random.Random(trial)
            version = f"1.0.{trial}"
            project.write("main.tf", f'resource "terraform_data" "t{trial % 3}" {{}}\n')
            project.write(f"trial{trial % 4}.tf", f"# trial {trial}\n")
            proxy.rules.clear()
            for _ in range(rng.randint(1, 3)):
                method, pattern = rng.choice(TARGETS)
                proxy.add(method, pattern, rng.choice(FAULTS), times=rng.randint(1, 4))
            before = len(proxy.faults_applied())
            for stage, run in (("publish", lambda: publish(faulty, version=version)),
                               ("promote", lambda: promote(faulty, "test", version))):
                try:
                    run()
                    outcomes[f"{stage} completed"] += 1
                except EnvpipeError as exc:  # anything else fails the test: that is exit 4
                    outcomes[f"{stage} stopped with a clear error (exit {exc.exit_code})"] += 1
                    assert "\n" not in str(exc).strip()
                    break
            outcomes["faults injected"] += len(proxy.faults_applied()) - before

            proxy.rules.clear()  # the invariants, read without faults
            published = read_manifest(clean.repository, version)
            if published is not None:
                check_folder(clean.repository, version)  # a visible version is whole
            held = read_manifest(clean.repository, "test")
            if held is not None:
                try:
                    check_folder(clean.repository, "test")
                except IntegrityError:
                    assert held.promoting, "a mixed folder not marked as cut short"
                    outcomes["promote cut short, marked"] += 1
            if read_lock(clean.repository, "test") is not None:
                outcomes["lock left behind"] += 1
                clean.repository.delete([".envpipe/locks/test.json"])
            # and without faults the same commands complete
            publish(clean, version=version)
            promote(clean, "test", version)
            manifest, _ = check_folder(clean.repository, "test")
            assert manifest.version == version and not manifest.promoting
        keys = [key for key, *_ in proxy.requests]
    records = [info.key for info in clean.repository.list(".envpipe/records/test/")]
    bodies = collections.Counter(clean.repository.read(key) for key in records)
    assert max(bodies.values()) == 1, "a record written twice"
    outcomes["trials"] = TRIALS
    outcomes["requests"] = len(keys)
    with capsys.disabled():
        print("\nfault trials: " + json.dumps(dict(sorted(outcomes.items())), indent=1))
    assert outcomes["lock left behind"] == 0
    assert outcomes["faults injected"] >= TRIALS
