"""publish: immutable, idempotent, resumable, and never a secret in an artefact (SPEC §3, §7)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import list_repository, read_repository_file
from envpipe_agent.context import StageContext
from envpipe_agent.errors import UnsafeSource
from envpipe_agent.repository.base import MULTIPART_SIZE
from envpipe_agent.source import read_definition
from envpipe_agent.stages.publish import publish

FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"
CERTIFICATE = "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIE\n-----END CERTIFICATE-----\n"
JENKINS = {"JENKINS_URL": "https://jenkins.example.com/", "BUILD_NUMBER": "42", "JOB_NAME": "our-project",
           "BUILD_URL": "https://jenkins.example.com/job/our-project/42/", "BUILD_USER_ID": "alice",
           "GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567"}


def manifest_of(project, folder: str) -> dict:
    raw = read_repository_file(project.repository, f"{folder}/.envpipe/manifest.json")
    assert raw is not None, f"{folder} has no manifest"
    return json.loads(raw)


# --- end to end -------------------------------------------------------------------


def test_publish_prints_the_version_and_stores_bytes_and_manifest(project):
    project.write("main.tf", 'resource "terraform_data" "a" {}\n')
    project.write("modules/net/net.tf", "# net\n")
    result = project.envpipe("publish", "--version", "1.0.1", check=0)
    assert result.stdout.strip() == "1.0.1"
    stored = list_repository(project.repository, "1.0.1/")
    assert stored["main.tf"] == b'resource "terraform_data" "a" {}\n'
    assert stored["modules/net/net.tf"] == b"# net\n"
    manifest = manifest_of(project, "1.0.1")
    assert manifest["version"] == "1.0.1" and manifest["project"] == "our-project"
    for path in ("main.tf", "modules/net/net.tf"):
        assert manifest["files"][path]["sha256"] == hashlib.sha256(stored[path]).hexdigest()
        assert manifest["files"][path]["size"] == len(stored[path])
    assert set(manifest["files"]) == {"main.tf", "modules/net/net.tf"}
    assert manifest["digest"].startswith("sha256:")
    assert manifest["published"]["server"] == "local"


def test_republishing_identical_content_succeeds_and_changes_nothing(project):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    before = read_repository_file(project.repository, "1.0.1/.envpipe/manifest.json")
    again = project.envpipe("--json", "publish", "--version", "1.0.1", check=0)
    outcome = json.loads(again.stdout)
    assert outcome["already_published"] is True and outcome["uploaded"] == 0
    assert read_repository_file(project.repository, "1.0.1/.envpipe/manifest.json") == before


def test_republishing_different_content_is_refused_and_keeps_the_version(project):
    project.envpipe("publish", "--version", "1.0.1", check=0)
    before = list_repository(project.repository, "1.0.1/")
    project.write("main.tf", "# changed\n")
    result = project.envpipe("publish", "--version", "1.0.1", check=3)
    assert "already published" in result.stderr and "other content" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list_repository(project.repository, "1.0.1/") == before


def test_outside_ci_publish_without_version_asks_for_version(project):
    result = project.envpipe("publish", check=2)
    assert "pass --version" in result.stderr
    assert list_repository(project.repository, "") == {}


@FOLDER_ONLY
def test_jenkins_build_number_names_the_version_and_provenance_is_recorded(project):
    result = project.envpipe("publish", env=JENKINS, check=0)
    assert result.stdout.strip() == "1.0.42"
    published = manifest_of(project, "1.0.42")["published"]
    assert published["server"] == "jenkins"
    assert published["build_url"] == JENKINS["BUILD_URL"]
    assert published["user"] == "alice" and published["commit"] == JENKINS["GIT_COMMIT"]


@FOLDER_ONLY
def test_gocd_label_template_names_the_version(project):
    config = project.root / "envpipe.yml"
    config.write_text(config.read_text().replace('version: "1.0.{build}"', 'version: "2.{label}"'))
    gocd = {"GO_SERVER_URL": "https://gocd.example.com/go", "GO_PIPELINE_NAME": "our-project",
            "GO_PIPELINE_COUNTER": "9", "GO_PIPELINE_LABEL": "9.3", "GO_STAGE_NAME": "publish",
            "GO_STAGE_COUNTER": "1", "GO_JOB_NAME": "publish", "GO_TRIGGER_USER": "bob"}
    assert project.envpipe("publish", env=gocd, check=0).stdout.strip() == "2.9.3"
    published = manifest_of(project, "2.9.3")["published"]
    assert published["build_url"] == "https://gocd.example.com/go/tab/build/detail/our-project/9/publish/1/publish"
    assert published["user"] == "bob"


SECRETS = [
    ("terraform.tfstate", '{"version": 4}\n'),
    ("envs/x.tfstate.backup", '{"version": 4}\n'),
    (".terraform/providers/registry/aws", "binary\n"),
    ("id_rsa", PRIVATE_KEY),
    ("certs/server.pem", CERTIFICATE + PRIVATE_KEY),
    ("keys/deploy.key", "\x00\x01binary DER\n"),
    ("variables.tf", 'variable "k" { default = "AKIAZZZZZZZZZZZZ7QXT" }\n'),
    ("modules/app/user-data.sh", "export KEY=" + PRIVATE_KEY),
    (".env", "DB_PASSWORD=hunter22\n"),
    ("config/.env.production", "DB_PASSWORD=hunter22\n"),
]


@FOLDER_ONLY
@pytest.mark.parametrize(("path", "content"), SECRETS, ids=[p for p, _ in SECRETS])
def test_secret_or_state_in_the_definition_is_refused_naming_it(project, path, content):
    project.write(path, content)
    result = project.envpipe("publish", "--version", "1.0.1", check=3)
    assert path in result.stderr and "refusing to publish" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list_repository(project.repository, "1.0.1/") == {}


@FOLDER_ONLY
def test_envpipeignore_excludes_a_file_on_purpose(project):
    project.write("terraform.tfstate", "{}\n")
    project.write(".terraform/modules/m.json", "{}\n")
    project.write(".envpipeignore", "*.tfstate\n.terraform/\n")
    project.envpipe("publish", "--version", "1.0.1", check=0)
    stored = list_repository(project.repository, "1.0.1/")
    assert "terraform.tfstate" not in stored and not any(k.startswith(".terraform/") for k in stored)
    assert "main.tf" in stored


# SIGKILLs itself once KILL_AFTER_UPLOADS uploads are complete: a CD agent killed mid-publish.
KILLED_PUBLISH = """
import os, signal, sys, threading
from envpipe_agent.repository import local, s3
done, guard = [0], threading.Lock()
def wrap(cls):
    original = cls.upload
    def upload(self, key, path, size):
        tag = original(self, key, path, size)
        with guard:
            done[0] += 1
            if done[0] >= int(os.environ["KILL_AFTER_UPLOADS"]):
                os.kill(os.getpid(), signal.SIGKILL)
        return tag
    cls.upload = upload
wrap(local.LocalRepository)
wrap(s3.S3Repository)
from envpipe_agent.main import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_interrupted_publish_leaves_no_version_and_a_rerun_uploads_only_the_rest(project):
    for n in range(60):
        project.write(f"modules/m{n:02d}/main.tf", f"# module {n}\n" * 50)
    killed = subprocess.run([sys.executable, "-c", KILLED_PUBLISH, "publish", "--version", "1.0.1"],
                            cwd=project.root, env=dict(os.environ, KILL_AFTER_UPLOADS="10"),
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    # A folder repository may also hold the temporary file of a copy cut short;
    # it is never listed, so it is not part of what the re-run finds.
    partial = {k: v for k, v in list_repository(project.repository, "1.0.1/").items() if ".envpipe-tmp-" not in k}
    assert ".envpipe/manifest.json" not in partial
    assert json.loads(partial.pop(".envpipe/claim.json"))["version"] == "1.0.1"  # taken before any upload
    assert 10 <= len(partial) < 61

    assert "1.0.1" not in project.envpipe("status", check=0).stdout
    assert "not published" in project.envpipe("promote", "1.0.1", "--to", "test", check=2).stderr
    project.envpipe("verify", "1.0.1", check=2)

    # Listed again: a PUT the server had fully received when the client died may
    # have landed after the first listing.
    partial = {k for k in list_repository(project.repository, "1.0.1/")
               if ".envpipe-tmp-" not in k and k != ".envpipe/claim.json"}
    rerun = json.loads(project.envpipe("--json", "publish", "--version", "1.0.1", check=0).stdout)
    assert rerun["files"] == 61
    assert rerun["uploaded"] == 61 - len(partial)
    stored = {k: v for k, v in list_repository(project.repository, "1.0.1/").items() if ".envpipe-tmp-" not in k}
    assert stored["modules/m59/main.tf"] == b"# module 59\n" * 50
    assert set(manifest_of(project, "1.0.1")["files"]) == set(stored) - {".envpipe/manifest.json",
                                                                          ".envpipe/claim.json"}
    project.envpipe("verify", "1.0.1", check=0)


# --- the source rules, in process ---------------------------------------------------


def definition(tmp_path: Path, files: dict) -> Path:
    root = tmp_path / "definition"
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


@pytest.mark.parametrize(
    "files",
    [
        {"certs/ca.pem": CERTIFICATE},
        {"certs/server.crt": CERTIFICATE},
        {"keys/signing.pem": "-----BEGIN PUBLIC KEY-----\nMFkwEwYH\n-----END PUBLIC KEY-----\n"},
        {"certs/req.pem": "-----BEGIN CERTIFICATE REQUEST-----\nMIIC\n-----END CERTIFICATE REQUEST-----\n"},
        {"id_rsa.pub": "ssh-rsa AAAAB3NzaC1yc2E user@host\n"},
        {".env.example": "DB_PASSWORD=\n"},
        {".env.sample": "DB_PASSWORD=\n"},
        {".terraform.lock.hcl": 'provider "registry.terraform.io/hashicorp/aws" {}\n'},
        {"docs.md": "Use keys like AKIAIOSFODNN7EXAMPLE in examples.\n"},
        {"environment.tf": 'variable "env" {}\n'},
        {".envrc.md": "notes\n"},
    ],
    ids=lambda files: next(iter(files)),
)
def test_public_material_and_lookalikes_pass(tmp_path, files):
    files = {"main.tf": "# main\n", **files}
    published = {f.path for f in read_definition(definition(tmp_path, files))}
    assert published == set(files)


@pytest.mark.parametrize(
    ("relative", "content"),
    [
        ("deploy.ppk", "PuTTY-User-Key-File-3: ssh-ed25519\nPrivate-Lines: 1\n"),
        ("release.asc", "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQ\n-----END PGP PRIVATE KEY BLOCK-----\n"),
        ("id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n"),
        ("enc.pem", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n-----END ENCRYPTED PRIVATE KEY-----\n"),
        ("store.p12", b"\x30\x82\x0a\x00binary"),
        ("terraform.tfstate.d/dev/terraform.tfstate", "{}\n"),
        ("main.tfstate.1712345678.backup", "{}\n"),
        (".terraform.tfstate.lock.info", "{}\n"),
        ("nested/.env.local", "A=1\n"),
        ("creds.json", '{"aws_access_key_id": "ASIAQWERTYUIOPASDFGH"}\n'),
    ],
)
def test_secret_material_is_refused(tmp_path, relative, content):
    root = definition(tmp_path, {"main.tf": "# main\n", relative: content})
    with pytest.raises(UnsafeSource) as caught:
        read_definition(root)
    assert relative in str(caught.value)


def test_a_key_straddling_two_read_chunks_is_found(tmp_path):
    from envpipe_agent.repository.base import CHUNK_SIZE

    content = b"#" * (CHUNK_SIZE - 10) + PRIVATE_KEY.encode()
    with pytest.raises(UnsafeSource, match="big.tf"):
        read_definition(definition(tmp_path, {"big.tf": content}))


def test_multipart_etag_of_a_large_file_is_computed_while_hashing(tmp_path):
    content = os.urandom(MULTIPART_SIZE + 5)
    [source] = read_definition(definition(tmp_path, {"big.bin": content}))
    parts = [hashlib.md5(content[:MULTIPART_SIZE]).digest(), hashlib.md5(content[MULTIPART_SIZE:]).digest()]
    assert source.multipart_etag == hashlib.md5(b"".join(parts)).hexdigest() + "-2"
    assert source.md5 == hashlib.md5(content).hexdigest()


def test_rerun_after_an_interrupted_large_upload_does_not_upload_it_again(s3_bucket, tmp_path):
    """The multipart ETag is recognised, so a 16 MiB+ file already stored is kept."""
    work = tmp_path / "work"
    (work / "infra").mkdir(parents=True)
    (work / "envpipe.yml").write_text(
        f"project: our-project\nsource: infra\nrepository: s3://{s3_bucket}/p\nenvironments: [{{name: test}}]\n")
    big = work / "infra" / "big.bin"
    big.write_bytes(os.urandom(MULTIPART_SIZE + 1024))
    (work / "infra" / "main.tf").write_text("# main\n")
    ctx = StageContext.load(work / "envpipe.yml", environ=dict(os.environ))
    ctx.repository.upload("1.0.1/big.bin", big, big.stat().st_size)  # what the killed run left
    result = publish(ctx, version="1.0.1")
    assert (result.files, result.uploaded) == (2, 1)


def test_publish_when_the_manifest_vanishes_between_listing_and_reading(project, monkeypatch):
    """A version deleted while we looked is published afresh, not a crash."""
    from envpipe_agent.stages import publish as publish_module

    ctx = project.context()
    publish(ctx, version="1.0.1")
    real_read = publish_module.read_manifest
    calls = []

    def vanishing(repository, folder):
        calls.append(folder)
        if len(calls) == 1:
            repository.delete([f"{folder}/.envpipe/manifest.json"])
        return real_read(repository, folder)

    monkeypatch.setattr(publish_module, "read_manifest", vanishing)
    result = publish(ctx, version="1.0.1")
    assert result.already_published is False and result.uploaded == 0
    assert read_repository_file(project.repository, "1.0.1/.envpipe/manifest.json") is not None


def test_symlinked_module_folders_inside_the_source_are_published_and_loops_are_not_followed(tmp_path):
    root = definition(tmp_path, {"main.tf": "# main\n", "shared/net/net.tf": "# shared\n"})
    (root / "modules").symlink_to(root / "shared", target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "dangling.tf").symlink_to(tmp_path / "nowhere.tf")
    assert [f.path for f in read_definition(root)] == ["main.tf", "modules/net/net.tf", "shared/net/net.tf"]


def test_a_source_file_vanishing_mid_publish_is_a_clear_error(project, monkeypatch):
    from envpipe_agent import source as source_module
    from envpipe_agent.errors import UsageError

    real = source_module.read_definition

    def then_delete(root):
        files = real(root)
        (root / "main.tf").unlink()
        return files

    monkeypatch.setattr("envpipe_agent.stages.publish.read_definition", then_delete)
    ctx = project.context()
    with pytest.raises(UsageError, match="main.tf disappeared while publishing"):
        publish(ctx, version="1.0.1")
    assert read_repository_file(project.repository, "1.0.1/.envpipe/manifest.json") is None


# --- claims: one version, one content, whoever publishes first ------------------------


def two_sources(project) -> dict:
    """Two definitions with the same paths but other bytes, and a few paths of their own."""
    sources = {}
    for name in ("big1", "big2"):
        root = project.root / name
        files = {f"modules/m{n:02d}/main.tf": f"# {name} module {n}\n" * 40 for n in range(40)}
        files.update({f"only-{name}/f{n}.tf": f"# {name} only {n}\n" for n in range(5)})
        for relative, text in files.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(text)
        sources[name] = {relative: text.encode() for relative, text in files.items()}
    return sources


def test_concurrent_publishes_of_one_version_with_other_content_never_mix_it(project):
    """Jenkins multibranch jobs share BUILD_NUMBER: one wins, the other is refused
    having written nothing into the version, and the version verifies."""
    sources = two_sources(project)
    for attempt in range(1, 4):  # a few rounds, so the claim race itself is hit, not only the manifest's
        version = f"3.0.{attempt}"
        runs = {name: subprocess.Popen([sys.executable, "-m", "envpipe_agent", "publish", "--source", name,
                                        "--version", version], cwd=project.root, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
                for name in ("big1", "big2")}
        outcomes = {name: (run.wait(timeout=120), run.communicate()[1]) for name, run in runs.items()}
        assert sorted(code for code, _ in outcomes.values()) == [0, 3], outcomes
        winner = next(name for name, (code, _) in outcomes.items() if code == 0)
        refusal = next(stderr for code, stderr in outcomes.values() if code == 3)
        assert "other content" in refusal and "new version" in refusal
        assert refusal.strip().splitlines()[-1].startswith("envpipe: error: version ")
        project.envpipe("verify", version, check=0)
        stored = {k: v for k, v in list_repository(project.repository, f"{version}/").items()
                  if ".envpipe-tmp-" not in k}
        assert json.loads(stored.pop(".envpipe/claim.json"))["digest"] == manifest_of(project, version)["digest"]
        del stored[".envpipe/manifest.json"]
        assert stored == sources[winner]  # not one file, nor one byte, of the other source


class InterruptedAtFirstUpload(Exception):
    pass


def test_a_version_claimed_by_an_interrupted_publish_refuses_other_content_until_that_one_completes(project):
    ctx = project.context()
    real_upload = ctx.repository.upload

    def killed(*args, **kwargs):
        raise InterruptedAtFirstUpload

    ctx.repository.upload = killed
    with pytest.raises(InterruptedAtFirstUpload):
        publish(ctx, version="1.0.1")
    ctx.repository.upload = real_upload
    claim = read_repository_file(project.repository, "1.0.1/.envpipe/claim.json")
    assert json.loads(claim)["project"] == "our-project"
    assert set(list_repository(project.repository, "1.0.1/")) == {".envpipe/claim.json"}

    original = (project.source / "main.tf").read_text()
    project.write("main.tf", "# other content\n")
    refused = project.envpipe("publish", "--version", "1.0.1", check=3)
    assert "1.0.1" in refused.stderr and "taken by other content" in refused.stderr
    assert "re-running it with its own source completes it" in refused.stderr
    assert set(list_repository(project.repository, "1.0.1/")) == {".envpipe/claim.json"}
    project.envpipe("verify", "1.0.1", check=2)  # a claim is not a version

    project.write("main.tf", original)
    rerun = json.loads(project.envpipe("--json", "publish", "--version", "1.0.1", check=0).stdout)
    assert (rerun["already_published"], rerun["uploaded"]) == (False, 1)
    assert read_repository_file(project.repository, "1.0.1/.envpipe/claim.json") == claim  # the same claim
    project.envpipe("verify", "1.0.1", check=0)


@FOLDER_ONLY
def test_an_unreadable_claim_is_refused_rather_than_overwritten(project):
    path = Path(project.repository, "1.0.1", ".envpipe", "claim.json")
    path.parent.mkdir(parents=True)
    path.write_text("[1]\n")
    result = project.envpipe("publish", "--version", "1.0.1", check=3)
    assert "claim.json is unreadable" in result.stderr
    assert path.read_text() == "[1]\n"
    assert not path.with_name("manifest.json").exists()


@pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
def test_a_source_that_is_a_file_or_missing_is_named_as_such(project):
    result = project.envpipe("publish", "--version", "1.0.1", "--source", "infra/main.tf", check=2)
    assert "source folder infra/main.tf is a file, not a folder" in result.stderr
    result = project.envpipe("publish", "--version", "1.0.1", "--source", "infra/gone", check=2)
    assert "source folder infra/gone does not exist" in result.stderr
    assert not Path(project.repository).exists()
