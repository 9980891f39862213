"""Terraform providers: a persistent plugin cache and the definition's lock file.

Providers cannot be downloaded here, so this checks what envpipe controls: what
Terraform is started with (a recording wrapper in front of the real Terraform), the
publish warning, a lock file that passes ``init -lockfile=readonly``, and a provider
from a local filesystem mirror that the second stage takes from the cache."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Project
from envpipe_agent.tools import tf_launcher
from envpipe_agent.tools.terraform_providers import required_providers

FOLDER_ONLY = pytest.mark.parametrize("repository_url", ["folder"], indirect=True)
# What `terraform init` writes at the top of a lock file; with only built-in providers
# there is nothing else in it.
LOCK_FILE = ("# This file is maintained automatically by \"terraform init\".\n"
             "# Manual edits may be lost in future updates.\n")


@pytest.fixture
def recording_terraform(tmp_path: Path) -> Path:
    """An executable that logs each call's arguments and plugin settings, then runs the real Terraform."""
    calls = tmp_path / "calls.jsonl"
    script = tmp_path / "terraform-recorded"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(calls)!r}, 'a') as log:\n"
        "    log.write(json.dumps({'args': sys.argv[1:], 'cache': os.environ.get('TF_PLUGIN_CACHE_DIR'),\n"
        "                          'cli_config': os.environ.get('TF_CLI_CONFIG_FILE')}) + '\\n')\n"
        f"os.execv({sys.executable!r}, [{sys.executable!r}, {tf_launcher.__file__!r}, *sys.argv[1:]])\n")
    script.chmod(0o755)
    return script


def calls_of(recorder: Path, command: str) -> list:
    lines = (recorder.parent / "calls.jsonl").read_text().splitlines()
    return [call for call in map(json.loads, lines) if call["args"][:1] == [command]]


@FOLDER_ONLY
def test_init_uses_the_per_user_plugin_cache_and_the_published_lock_file_read_only(
        project: Project, recording_terraform: Path, tmp_path: Path) -> None:
    project.write(".terraform.lock.hcl", LOCK_FILE)
    published = project.envpipe("publish", "--version", "1.0.1", check=0)
    assert "lock.hcl" not in published.stderr  # no warning: it has one
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    env = {"ENVPIPE_TERRAFORM": str(recording_terraform), "XDG_CACHE_HOME": str(tmp_path / "cache")}

    project.envpipe("apply", "test", env=env, check=0)
    project.envpipe("apply", "test", env=env, check=0)

    cache = tmp_path / "cache" / "envpipe" / "terraform-plugins"
    inits = calls_of(recording_terraform, "init")
    assert len(inits) == 2 and all(call["cache"] == str(cache) for call in inits)
    assert all("-lockfile=readonly" in call["args"] for call in inits)
    assert cache.is_dir()
    assert (Path(project.repository) / "1.0.1" / ".terraform.lock.hcl").read_text() == LOCK_FILE


@FOLDER_ONLY
def test_a_users_own_cache_and_provider_mirror_are_kept(project: Project, recording_terraform: Path,
                                                       tmp_path: Path) -> None:
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    cli_config = tmp_path / "terraformrc"
    cli_config.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n')
    base = {"ENVPIPE_TERRAFORM": str(recording_terraform), "TF_CLI_CONFIG_FILE": str(cli_config),
            "XDG_CACHE_HOME": str(tmp_path / "cache")}

    project.envpipe("plan", "test", env={**base, "TF_PLUGIN_CACHE_DIR": str(tmp_path)}, check=0)
    cli_config.write_text(cli_config.read_text() + f'plugin_cache_dir = "{tmp_path}"\n')
    project.envpipe("plan", "test", env=base, check=0)

    first, second = calls_of(recording_terraform, "init")
    assert first["cache"] == str(tmp_path) and second["cache"] is None  # the config's own cache applies
    assert first["cli_config"] == second["cli_config"] == str(cli_config)  # the mirror stays configured
    assert "-lockfile=readonly" not in first["args"]  # no lock file in this definition
    assert not (tmp_path / "cache").exists()


@FOLDER_ONLY
def test_publish_warns_when_a_definition_needing_providers_has_no_lock_file(project: Project) -> None:
    project.write("bucket.tf", 'resource "aws_s3_bucket" "site" {\n  bucket = "x"\n}\n')
    warned = project.envpipe("publish", "--version", "1.0.1", check=0)
    assert ("warning: the definition needs providers (aws) but has no .terraform.lock.hcl: every stage resolves "
            "and downloads them again") in warned.stderr
    project.write(".terraform.lock.hcl", LOCK_FILE)
    assert "lock.hcl" not in project.envpipe("publish", "--version", "1.0.2", check=0).stderr


def test_only_providers_other_than_terraforms_own_count() -> None:
    assert required_providers(['resource "terraform_data" "a" {}\n']) == set()
    assert required_providers(['data "aws_caller_identity" "me" {}\nprovider "random" {}\n']) == {"aws", "random"}
    assert required_providers(['terraform {\n  required_providers {\n  }\n}\n']) == {"(required_providers)"}
    assert required_providers(['# resource "aws_s3_bucket" "commented" {}\n']) == set()


def _platform() -> str:
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    if arch is None:
        pytest.skip(f"no Terraform platform name for {platform.machine()}")
    return f"{platform.system().lower()}_{arch}"


@FOLDER_ONLY
def test_a_second_stage_takes_a_provider_from_the_cache_not_from_its_source(project: Project, tmp_path: Path) -> None:
    """A provider from a local filesystem mirror (nothing is downloaded): the first stage
    installs it into envpipe's cache, the next one takes it from there."""
    mirror = tmp_path / "mirror"
    binary = mirror / "example.com" / "test" / "fake" / "1.0.0" / _platform() / "terraform-provider-fake_v1.0.0"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 1\n")  # installed, never started: `output` needs no provider
    binary.chmod(0o755)
    cli_config = tmp_path / "terraformrc"
    cli_config.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n')
    project.write("main.tf", 'terraform {\n  required_providers {\n    fake = {\n      source = "example.com/test/fake"\n'
                             '    }\n  }\n}\nresource "terraform_data" "a" {}\n')
    env = {"TF_CLI_CONFIG_FILE": str(cli_config), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    locked = subprocess.run([sys.executable, tf_launcher.__file__, "providers", "lock", f"-fs-mirror={mirror}"],
                            cwd=project.source, env={**os.environ, **env}, capture_output=True, text=True)
    assert locked.returncode == 0, locked.stderr + locked.stdout
    project.envpipe("publish", "--version", "1.0.1", check=0)
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)

    first = project.envpipe("terraform", "test", "--", "output", env=env, check=0)
    second = project.envpipe("terraform", "test", "--", "output", env=env, check=0)

    assert "Installed example.com/test/fake v1.0.0" in first.stderr
    assert "Using example.com/test/fake v1.0.0 from the shared cache directory" in second.stderr
    assert (tmp_path / "cache" / "envpipe" / "terraform-plugins" / "example.com" / "test" / "fake" / "1.0.0").is_dir()
