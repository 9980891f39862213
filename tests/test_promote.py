"""promote: an environment folder ends up holding exactly one version's bytes (SPEC §3, §6)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import boto3
import pytest

from conftest import REGION, list_repository, read_repository_file
from envpipe_agent.ci_context import detect
from envpipe_agent.context import StageContext
from envpipe_agent.records import RecordWriter
from envpipe_agent.redact import Redactor
from envpipe_agent.repository import open_repository
from envpipe_agent.stages.promote import promote
from envpipe_agent.stages.publish import publish

MANIFEST = ".envpipe/manifest.json"
JENKINS = {"JENKINS_URL": "https://jenkins.example.com/", "BUILD_NUMBER": "7", "JOB_NAME": "our-project",
           "BUILD_URL": "https://jenkins.example.com/job/our-project/7/", "BUILD_USER_ID": "alice"}

FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)


def repo_of(project):
    return open_repository(project.repository, dict(os.environ))


def files_of(project, folder: str) -> dict:
    """The folder's files without envpipe's own."""
    return {k: v for k, v in list_repository(project.repository, f"{folder}/").items()
            if not k.startswith(".envpipe/")}


def record_test(project, environment: str, version: str, result: str = "passed") -> None:
    RecordWriter(repo_of(project), detect({}), Redactor()).write(environment, "test", version, result)


def records_of(project, environment: str, action: str) -> list:
    stored = list_repository(project.repository, f".envpipe/records/{environment}/")
    return [json.loads(body) for key, body in sorted(stored.items()) if f"-{action}-" in key]


def publish_in_process(project, version: str) -> None:
    ctx = project.context()
    publish(ctx, version=version)


@pytest.fixture
def two_versions(project):
    """1.0.1 and 1.0.2 whose main.tf has the SAME size and different bytes (published in
    process to keep the suite fast; publish itself is tested end to end elsewhere)."""
    project.write("main.tf", 'resource "terraform_data" "a" {}\n')
    project.write("old.tf", "# only in 1.0.1\n")
    project.write("modules/legacy/legacy.tf", "# only in 1.0.1\n")
    project.write("shared.tf", "# same in both\n")
    publish_in_process(project, "1.0.1")
    project.write("main.tf", 'resource "terraform_data" "b" {}\n')
    (project.source / "old.tf").unlink()
    (project.source / "modules/legacy/legacy.tf").unlink()
    project.write("new.tf", "# only in 1.0.2\n")
    publish_in_process(project, "1.0.2")
    v1, v2 = files_of(project, "1.0.1"), files_of(project, "1.0.2")
    assert len(v1["main.tf"]) == len(v2["main.tf"]) and v1["main.tf"] != v2["main.tf"]
    record_test(project, "test", "1.0.1")
    record_test(project, "test", "1.0.2")
    return v1, v2


def test_rollback_restores_exactly_the_older_versions_bytes(project, two_versions):
    v1, v2 = two_versions
    for version, expected in (("1.0.1", v1), ("1.0.2", v2), ("1.0.1", v1)):
        project.envpipe("promote", version, "--to", "staging", check=0)
        assert files_of(project, "staging") == expected
        manifest = json.loads(read_repository_file(project.repository, f"staging/{MANIFEST}"))
        assert manifest["version"] == version and manifest["environment"] == "staging"
        project.envpipe("verify", "staging", check=0)


def test_out_of_order_promotion_gives_exactly_the_chosen_version(project, two_versions):
    v1, v2 = two_versions
    project.envpipe("promote", "1.0.2", "--to", "staging", check=0)
    assert files_of(project, "staging") == v2
    result = json.loads(project.envpipe("promote", "1.0.1", "--to", "staging", "--json", check=0).stdout)
    assert files_of(project, "staging") == v1
    assert (result["previous_version"], result["copied"], result["deleted"], result["unchanged"]) == (
        "1.0.2", 3, 1, 1)


def test_stale_files_are_deleted_and_emptied_folders_go(project, two_versions):
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    assert "modules/legacy/legacy.tf" in files_of(project, "test")
    project.envpipe("promote", "1.0.2", "--to", "test", check=0)
    assert set(files_of(project, "test")) == {"main.tf", "new.tf", "shared.tf"}
    if not project.repository.startswith("s3://"):
        assert not (Path(project.repository) / "test" / "modules").exists()


def test_environment_manifest_lists_the_tags_of_the_objects_it_holds(project, two_versions):
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    project.envpipe("promote", "1.0.2", "--to", "test", check=0)
    manifest = json.loads(read_repository_file(project.repository, f"test/{MANIFEST}"))
    listed = {i.key[len("test/"):]: i for i in repo_of(project).list("test/") if not i.key.endswith(MANIFEST)}
    assert set(manifest["files"]) == set(listed)
    for path, entry in manifest["files"].items():
        assert entry["etag"] == listed[path].etag
        assert entry["size"] == listed[path].size
    assert manifest["promoted"]["at"]


def test_unchanged_files_are_left_untouched(project, two_versions):
    if project.repository.startswith("s3://"):
        client = boto3.client("s3", region_name=REGION)
        client.put_bucket_versioning(Bucket="our-project-repository",
                                     VersioningConfiguration={"Status": "Enabled"})
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    local_shared = Path(project.repository) / "test" / "shared.tf"
    before = None if project.repository.startswith("s3://") else local_shared.stat()
    result = json.loads(project.envpipe("--json", "promote", "1.0.2", "--to", "test", check=0).stdout)
    assert (result["copied"], result["deleted"], result["unchanged"]) == (2, 2, 1)
    if project.repository.startswith("s3://"):
        versions = client.list_object_versions(Bucket="our-project-repository",
                                               Prefix="pipelines/test/shared.tf")["Versions"]
        assert len(versions) == 1  # never rewritten
    else:
        after = local_shared.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_promoting_the_version_already_there_is_a_recordless_no_op(project, two_versions):
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    manifest_before = read_repository_file(project.repository, f"test/{MANIFEST}")
    result = json.loads(project.envpipe("promote", "1.0.1", "--to", "test", "--json", check=0).stdout)
    assert (result["copied"], result["deleted"]) == (0, 0)
    assert read_repository_file(project.repository, f"test/{MANIFEST}") == manifest_before
    assert len(records_of(project, "test", "promote")) == 1


def test_a_no_op_promote_takes_no_lock_and_a_needed_one_waits_for_it(project, two_versions):
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    lock = {"id": "other", "environment": "test", "action": "apply", "holder": "carol@agent-2",
            "acquired": "2026-11-29T20:00:00Z", "expires": "2999-01-01T00:00:00Z"}
    repo_of(project).write(".envpipe/locks/test.json", json.dumps(lock).encode())
    again = json.loads(project.envpipe("promote", "1.0.1", "--to", "test", "--json", check=0).stdout)
    assert (again["copied"], again["deleted"], again["previous_version"]) == (0, 0, "1.0.1")
    assert json.loads(read_repository_file(project.repository, ".envpipe/locks/test.json"))["id"] == "other"
    refused = project.envpipe("promote", "1.0.2", "--to", "test", check=3)
    assert "carol@agent-2" in refused.stderr
    assert files_of(project, "test") == two_versions[0]


def test_gate_refuses_a_version_not_tested_in_the_previous_environment(project):
    publish_in_process(project, "1.0.1")
    result = project.envpipe("promote", "1.0.1", "--to", "staging", check=3)
    assert "has not passed its tests in test" in result.stderr and "--force --reason" in result.stderr
    record_test(project, "test", "1.0.1", result="failed")
    project.envpipe("promote", "1.0.1", "--to", "staging", check=3)
    assert files_of(project, "staging") == {}
    record_test(project, "test", "1.0.1", result="passed")
    project.envpipe("promote", "1.0.1", "--to", "staging", check=0)
    assert files_of(project, "staging") == files_of(project, "1.0.1")


@FOLDER_ONLY
def test_the_gate_without_configured_tests_points_at_the_config_not_at_envpipe_test(project):
    publish_in_process(project, "1.0.1")
    refused = project.envpipe("promote", "1.0.1", "--to", "staging", check=3)
    assert "envpipe.yml configures none: set tests.path or tests.http" in refused.stderr
    assert "--force --reason" in refused.stderr
    config = project.root / "envpipe.yml"
    config.write_text(config.read_text() + "tests:\n  http: [{url: 'http://127.0.0.1:9/health'}]\n")
    refused = project.envpipe("promote", "1.0.1", "--to", "staging", check=3)
    assert "run 'envpipe test test' first" in refused.stderr and "configures none" not in refused.stderr


@FOLDER_ONLY
def test_force_with_reason_overrides_the_gate_on_the_record(project):
    publish_in_process(project, "1.0.1")
    project.envpipe("promote", "1.0.1", "--to", "staging", "--force", "--reason", "hotfix INC-42",
                    env=JENKINS, check=0)
    [override] = records_of(project, "staging", "override")
    assert override["reason"] == "hotfix INC-42" and override["gate"] == "test"
    assert override["ci"]["build_url"] == JENKINS["BUILD_URL"] and override["ci"]["user"] == "alice"
    [promoted] = records_of(project, "staging", "promote")
    assert promoted["forced"] is True and promoted["version"] == "1.0.1"
    manifest = json.loads(read_repository_file(project.repository, f"staging/{MANIFEST}"))
    assert manifest["promoted"]["forced"] is True and manifest["promoted"]["reason"] == "hotfix INC-42"


@FOLDER_ONLY
def test_promote_record_carries_ci_provenance(project):
    publish_in_process(project, "1.0.1")
    project.envpipe("promote", "1.0.1", "--to", "test", env=JENKINS, check=0)
    [record] = records_of(project, "test", "promote")
    assert record["ci"]["server"] == "jenkins" and record["ci"]["build"] == "7"
    assert record["ci"]["build_url"] == JENKINS["BUILD_URL"]
    assert record["copied"] == 1 and record["digest"].startswith("sha256:")


@FOLDER_ONLY
def test_version_defaults_to_the_ci_builds(project):
    project.envpipe("publish", env=JENKINS, check=0)
    project.envpipe("promote", "--to", "test", env=JENKINS, check=0)
    assert json.loads(read_repository_file(project.repository, f"test/{MANIFEST}"))["version"] == "1.0.7"


@FOLDER_ONLY
def test_unpublished_version_and_unknown_environment_are_usage_errors(project):
    assert "not published" in project.envpipe("promote", "9.9.9", "--to", "test", check=2).stderr
    publish_in_process(project, "1.0.1")
    assert "choose one of test, staging, production" in project.envpipe(
        "promote", "1.0.1", "--to", "qa", check=2).stderr


def test_a_version_missing_a_file_is_refused_not_a_crash(project):
    publish_in_process(project, "1.0.1")
    repo_of(project).delete(["1.0.1/main.tf"])
    result = project.envpipe("promote", "1.0.1", "--to", "test", check=3)
    assert "1.0.1/main.tf" in result.stderr and "missing" in result.stderr
    assert read_repository_file(project.repository, f"test/{MANIFEST}") is None


@FOLDER_ONLY
def test_a_manifest_copied_under_another_version_is_refused(project):
    publish_in_process(project, "1.0.1")
    repo = repo_of(project)
    repo.write("1.0.2/main.tf", repo.read("1.0.1/main.tf"))
    repo.write(f"1.0.2/{MANIFEST}", repo.read(f"1.0.1/{MANIFEST}"))
    assert "holds the manifest of version 1.0.1" in project.envpipe(
        "promote", "1.0.2", "--to", "test", check=3).stderr


def test_promote_repairs_a_tampered_environment(project, two_versions):
    v1, _ = two_versions
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    repo = repo_of(project)
    repo.write("test/main.tf", b"x" * len(v1["main.tf"]))  # same size, other bytes
    repo.write("test/planted.tf", b"# not in any version\n")
    repo.write(f"test/{MANIFEST}", b"{not json")
    project.envpipe("verify", "test", check=3)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    assert files_of(project, "test") == v1
    project.envpipe("verify", "test", check=0)


@pytest.mark.parametrize("repository_url", ["s3"], indirect=True)
def test_large_file_round_trips_through_publish_promote_and_verify_on_s3(project):
    big = project.source / "artefacts" / "lambda.zip"
    big.parent.mkdir(parents=True)
    with open(big, "wb") as out:
        for _ in range(40):
            out.write(os.urandom(1024 * 1024))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    project.envpipe("publish", "--version", "1.0.1", check=0)
    client = boto3.client("s3", region_name=REGION)
    head = client.head_object(Bucket="our-project-repository", Key="pipelines/1.0.1/artefacts/lambda.zip")
    assert head["ContentLength"] == 40 * 1024 * 1024 and head["ETag"].strip('"').endswith("-3")  # multipart
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    stored = client.get_object(Bucket="our-project-repository", Key="pipelines/test/artefacts/lambda.zip")
    assert hashlib.sha256(stored["Body"].read()).hexdigest() == digest
    project.envpipe("verify", "test", check=0)
    project.envpipe("verify", "1.0.1", check=0)
    again = json.loads(project.envpipe("--json", "promote", "1.0.1", "--to", "test", check=0).stdout)
    assert again["copied"] == 0  # the copy's own tag is remembered: no second 40 MB copy


def test_s3_request_counts_stay_close_to_what_a_sync_needs(s3_bucket, tmp_path):
    """Counted, not timed: the benchmark holds these against `aws s3 sync`."""
    import collections

    work = tmp_path / "counted"
    (work / "infra").mkdir(parents=True)
    for n in range(20):
        (work / "infra" / f"f{n}.tf").write_text(f"# {n}\n")
    (work / "envpipe.yml").write_text(
        f"project: p\nsource: infra\nrepository: s3://{s3_bucket}/p\nenvironments: [{{name: test}}]\n")
    ctx = StageContext.load(work / "envpipe.yml", environ=dict(os.environ))
    calls = collections.Counter()
    ctx.repository.client.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))

    def count(action) -> collections.Counter:
        calls.clear()
        action()
        return collections.Counter(calls)

    # list, the claim, 20 puts, the manifest: the claim is the one PUT added to a fresh publish
    assert sum(count(lambda: publish(ctx, version="1.0.1")).values()) == 20 + 3
    assert sum(count(lambda: publish(ctx, version="1.0.1")).values()) == 2  # list, read manifest
    # each promote reads the environment's freeze object: one GET (SPEC §10)
    first = count(lambda: promote(ctx, "test", "1.0.1"))
    # an empty folder is listed before the lock and again under it; the lock is read
    # before the manifest is written and before it is released (still ours?)
    assert first["CopyObject"] == 20 and sum(first.values()) <= 20 + 11
    (work / "infra" / "f0.tf").write_text("# changed\n")
    publish(ctx, version="1.0.2")
    one_changed = count(lambda: promote(ctx, "test", "1.0.2"))
    # one more PUT than before: the folder is marked as being promoted before it changes;
    # one more GET: its manifest, read again under the lock to see nobody changed it
    assert one_changed["CopyObject"] == 1 and sum(one_changed.values()) <= 1 + 13
    no_op = count(lambda: promote(ctx, "test", "1.0.2"))
    # the version's manifest, the freeze, the folder's listing and manifest: what awscli's
    # sync needs (two listings of two pages), and no lock taken or released
    assert no_op == {"GetObject": 3, "ListObjectsV2": 1}


def test_a_promote_cut_short_before_its_manifest_leaves_a_folder_that_fails_verification(project, two_versions):
    ctx = project.context()
    promote(ctx, "test", "1.0.1")
    real_write = ctx.repository.write

    def dies_at_the_manifest(key, data, **kwargs):
        # The agent is stopped just before the manifest: the first write of it only
        # marks the folder as being promoted.
        if key == f"test/{MANIFEST}" and b'"promoting"' not in data:
            raise KeyboardInterrupt
        return real_write(key, data, **kwargs)

    ctx.repository.write = dies_at_the_manifest
    with pytest.raises(KeyboardInterrupt):
        promote(ctx, "test", "1.0.2")
    assert read_repository_file(project.repository, ".envpipe/locks/test.json") is None  # released
    result = project.envpipe("verify", "test", check=3)
    assert "main.tf" in result.stderr and "does not match its manifest" in result.stderr
    assert "promote of version 1.0.2" in result.stderr and "was cut short" in result.stderr
    project.envpipe("promote", "1.0.2", "--to", "test", check=0)  # and a re-run completes it
    project.envpipe("verify", "test", check=0)


@FOLDER_ONLY
def test_a_hand_edited_environment_is_repaired_with_the_command_the_refusal_names_without_the_gate(project):
    publish_in_process(project, "1.0.1")
    project.envpipe("promote", "1.0.1", "--to", "staging", "--force", "--reason", "hotfix INC-42",
                    env=JENKINS, check=0)
    repo_of(project).write("staging/main.tf", b"# edited by hand\n")

    refused = project.envpipe("apply", "staging", check=3)
    command = "envpipe promote 1.0.1 --to staging"
    assert f"repair it with '{command}'" in refused.stderr
    # 1.0.1 never passed its tests in 'test', yet the gate is not asked again: staging holds it.
    repaired = project.envpipe(*command.split()[1:], check=0)
    assert "a repair, recorded" in repaired.stdout
    project.envpipe("verify", "staging", check=0)
    latest = records_of(project, "staging", "promote")[-1]
    assert latest["repair"] is True and "forced" not in latest
    assert len(records_of(project, "staging", "override")) == 1  # the first promote's, no new one
    # The version is still the one forced in: the environment's promotion keeps saying so.
    promoted = json.loads(read_repository_file(project.repository, f"staging/{MANIFEST}"))["promoted"]
    assert (promoted["forced"], promoted["reason"], promoted["forced_by"]) == (True, "hotfix INC-42", "alice")


@FOLDER_ONLY
def test_an_environment_whose_manifest_was_deleted_is_repaired_from_its_last_completed_promote(project):
    publish_in_process(project, "1.0.1")
    publish_in_process(project, "1.0.2")
    project.envpipe("promote", "1.0.1", "--to", "staging", "--force", "--reason", "first", check=0)
    repo_of(project).delete([f"staging/{MANIFEST}"])

    project.envpipe("promote", "1.0.1", "--to", "staging", check=0)
    assert records_of(project, "staging", "promote")[-1]["repair"] is True
    # Another version still needs the gate, and so does the held one once a destroy emptied the folder.
    assert "has not passed its tests in test" in project.envpipe("promote", "1.0.2", "--to", "staging",
                                                                 check=3).stderr
    RecordWriter(repo_of(project), detect({}), Redactor()).write("staging", "destroy", "1.0.1", "done")
    repo_of(project).delete([f"staging/{MANIFEST}"])
    assert "has not passed its tests in test" in project.envpipe("promote", "1.0.1", "--to", "staging",
                                                                 check=3).stderr


@FOLDER_ONLY
def test_promote_into_a_manual_environment_needs_an_approver_named_either_way_and_records_it(project):
    publish_in_process(project, "1.0.1")
    record_test(project, "staging", "1.0.1")
    refused = project.envpipe("promote", "1.0.1", "--to", "production", check=3)
    assert "production has approval: manual: promote needs an approver: pass --approved-by WHO, or set " \
           "ENVPIPE_APPROVER (the generated pipelines set it from the approval step's submitter)" in refused.stderr
    assert read_repository_file(project.repository, f"production/{MANIFEST}") is None

    by_variable = project.envpipe("promote", "1.0.1", "--to", "production", env={**JENKINS, "ENVPIPE_APPROVER": "bob"},
                                  check=0)
    assert "approved by bob" in by_variable.stdout
    assert records_of(project, "production", "promote")[-1]["approved_by"] == "bob"
    manifest = json.loads(read_repository_file(project.repository, f"production/{MANIFEST}"))
    assert manifest["promoted"]["approved_by"] == "bob" and manifest["promoted"]["user"] == "alice"
    # --approved-by wins over the variable; a path environment without approval needs none.
    repo_of(project).write("production/main.tf", b"# edited\n")
    project.envpipe("promote", "1.0.1", "--to", "production", "--approved-by", "erin",
                    env={"ENVPIPE_APPROVER": "bob"}, check=0)
    assert records_of(project, "production", "promote")[-1]["approved_by"] == "erin"
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    assert "approved_by" not in records_of(project, "test", "promote")[-1]
