"""Jenkinsfile.example, examples/gocd/ and examples/jenkins-library/ are what
examples/envpipe.yml renders (SPEC §8).

Regenerate them with `make examples` after changing the templates or the example config.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from envpipe_agent.config import load_config
from envpipe_agent.generate import render, render_library

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "examples" / "envpipe.yml"

# file (relative to the project root) → how it is rendered (target, full); the Makefile's
# `examples` target writes the same files.
GOLDEN = {
    "Jenkinsfile.example": ("jenkins", False),
    "examples/gocd/pipelines.xml": ("gocd-xml", False),
    "examples/gocd/cruise-config.xml": ("gocd-xml", True),
    "examples/gocd/our-project.gocd.yaml": ("gocd-yaml", False),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_example_file_is_what_the_example_config_renders(name):
    target, full = GOLDEN[name]
    expected = render(load_config(EXAMPLE_CONFIG), target, full=full)
    path = ROOT / name
    assert path.is_file(), f"{name} is missing: run 'make examples'"
    assert path.read_text(encoding="utf-8") == expected, f"{name} is out of date: run 'make examples'"


def test_makefile_regenerates_every_golden_file():
    makefile = (ROOT / "Makefile").read_text()
    for name, (target, full) in GOLDEN.items():
        assert f"generate {target}{' --full' if full else ''} -o {name}" in makefile


# The on-demand jobs beside the path (SPEC §9): file → (target, job).
ON_DEMAND_GOLDEN = {
    "examples/on-demand/Jenkinsfile.reap": ("jenkins", "reap"),
    "examples/on-demand/Jenkinsfile.environments": ("jenkins", "environments"),
    "examples/on-demand/our-project-reap.gocd.yaml": ("gocd-yaml", "reap"),
    "examples/on-demand/our-project-environments.gocd.yaml": ("gocd-yaml", "environments"),
}


@pytest.mark.parametrize("name", sorted(ON_DEMAND_GOLDEN))
def test_on_demand_example_is_what_the_example_config_renders(name):
    target, job = ON_DEMAND_GOLDEN[name]
    path = ROOT / name
    assert path.is_file(), f"{name} is missing: run 'make examples'"
    assert path.read_text(encoding="utf-8") == render(load_config(EXAMPLE_CONFIG), target, job=job), \
        f"{name} is out of date: run 'make examples'"
    assert f"generate {target} --job {job} -o {name}" in (ROOT / "Makefile").read_text()


# Pipeline templates and the Shared Library: file → (target, render options), and the
# Makefile line that writes it.
TEMPLATE_GOLDEN = {
    "examples/gocd/cruise-config-template.xml": ("gocd-xml", {"full": True, "template": True}, "--full --template"),
    "examples/gocd/our-project-template.gocd.yaml": ("gocd-yaml", {"template": True}, "--template"),
    "examples/jenkins-library/Jenkinsfile": ("jenkins", {"library": "envpipe"}, "--use-library envpipe"),
}


@pytest.mark.parametrize("name", sorted(TEMPLATE_GOLDEN))
def test_template_and_library_examples_are_what_the_example_config_renders(name):
    target, options, flags = TEMPLATE_GOLDEN[name]
    path = ROOT / name
    assert path.is_file(), f"{name} is missing: run 'make examples'"
    assert path.read_text(encoding="utf-8") == render(load_config(EXAMPLE_CONFIG), target, **options), \
        f"{name} is out of date: run 'make examples'"
    assert f"generate {target} {flags} -o {name}" in (ROOT / "Makefile").read_text()


def test_jenkins_library_example_is_what_the_example_config_renders():
    folder = ROOT / "examples" / "jenkins-library"
    files = render_library(load_config(EXAMPLE_CONFIG))
    for name, text in files.items():
        assert (folder / name).is_file() and (folder / name).read_text(encoding="utf-8") == text, \
            f"examples/jenkins-library/{name} is out of date: run 'make examples'"
    assert sorted(str(p.relative_to(folder)) for p in (folder / "vars").iterdir()) == sorted(files)
    assert "generate jenkins-library -o examples/jenkins-library" in (ROOT / "Makefile").read_text()
