"""Generated pipelines checked by outside validators: GoCD's own cruise-config.xsd and
npm-groovy-lint (../shared/validators, see its README)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from envpipe_agent.config import load_config
from envpipe_agent.generate import JOBS, render, render_library
from test_generate import CONFIG, FIRST_WITH_CREDENTIALS, config_from, hostile_config
from test_generate_library import expand_templates

ROOT = Path(__file__).resolve().parents[1]
# beside the checkout, or where ENVPIPE_VALIDATORS points (a worktree elsewhere)
VALIDATORS = Path(os.environ.get("ENVPIPE_VALIDATORS") or ROOT.parent / "shared" / "validators")

needs_validators = pytest.mark.skipif(
    not VALIDATORS.is_dir(), reason=f"validators not found at {VALIDATORS} (expected beside the checkout)"
)


def configs(tmp_path: Path) -> Dict[str, object]:
    """The example, a rich config (every stage with credentials), one full of hostile values, a minimal one."""
    minimal = tmp_path / "minimal"
    minimal.mkdir()
    return {
        "example": load_config(ROOT / "examples" / "envpipe.yml"),
        "rich": config_from(FIRST_WITH_CREDENTIALS, tmp_path),  # publish binds credentials too
        "hostile": hostile_config(tmp_path),
        "minimal": config_from("project: small\nenvironments: [{name: dev}]\n"
                               "ci: {gocd: {git_url: 'https://example.com/small.git'}}\n", minimal),
    }


@pytest.fixture(scope="module")
def jenkins_lint(tmp_path_factory) -> subprocess.CompletedProcess:
    """One validate-jenkinsfile call for every Jenkinsfile (it takes ~5 s per call)."""
    if not VALIDATORS.is_dir():
        pytest.skip(f"validators not found at {VALIDATORS}")
    if shutil.which("node") is None:
        pytest.skip("node is not installed: npm-groovy-lint cannot lint the Jenkinsfiles")
    folder = tmp_path_factory.mktemp("jenkinsfiles")
    files = []
    for name, config in configs(folder).items():
        for job in JOBS:
            path = folder / f"{name}-{job}.Jenkinsfile"
            path.write_text(render(config, "jenkins", job=job))
            files.append(str(path))
        # the Shared Library's steps and the short Jenkinsfile using them
        path = folder / f"{name}-library.Jenkinsfile"
        path.write_text(render(config, "jenkins", library="envpipe"))
        files.append(str(path))
        for step, text in render_library(config).items():
            if step.endswith(".groovy"):
                path = folder / f"{name}-{Path(step).name}"
                path.write_text(text)
                files.append(str(path))
    return subprocess.run([str(VALIDATORS / "validate-jenkinsfile"), *files], capture_output=True, text=True,
                          timeout=600)


def test_generated_jenkinsfiles_pass_npm_groovy_lint(jenkins_lint):
    assert jenkins_lint.returncode == 0, jenkins_lint.stdout + jenkins_lint.stderr
    assert f"{4 * (len(JOBS) + 1 + 5)} linted files" in jenkins_lint.stdout.replace("\n", " ")


@needs_validators
@pytest.mark.parametrize("full", [False, True], ids=["fragment", "cruise"])
def test_generated_gocd_xml_is_valid_against_gocds_schema(tmp_path, full):
    files = []
    for name, config in configs(tmp_path).items():
        for job in JOBS:
            path = tmp_path / f"{name}-{job}.xml"
            path.write_text(render(config, "gocd-xml", full=full, job=job))
            files.append(str(path))
    result = subprocess.run([sys.executable, str(VALIDATORS / "validate-gocd-xml"), "--semantic", *files],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK") == len(files)


@needs_validators
def test_generated_gocd_templates_are_valid_against_gocds_schema(tmp_path):
    """--template: the pipelines using the templates and the templates, in a <cruise>
    document as rendered with --full, and the two fragments placed in one; the
    validator's cross-reference checks do not know templates, so they read the
    pipelines as GoCD expands them."""
    files, expanded = [], []
    for name, config in configs(tmp_path).items():
        full = tmp_path / f"{name}-template-full.xml"
        full.write_text(render(config, "gocd-xml", full=True, template=True))
        fragments = tmp_path / f"{name}-template-fragments.xml"
        fragments.write_text('<cruise schemaVersion="139">\n' + render(config, "gocd-xml", template=True) + "</cruise>\n")
        files += [str(full), str(fragments)]
        path = tmp_path / f"{name}-template-expanded.xml"
        path.write_text(expand_templates(full.read_text()))
        expanded.append(str(path))
    for options, paths in (((), files), (("--semantic",), expanded)):
        result = subprocess.run([sys.executable, str(VALIDATORS / "validate-gocd-xml"), *options, *paths],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count(": OK") == len(paths)


@needs_validators
def test_schema_validation_catches_a_broken_pipeline(tmp_path):
    """The check above can fail: a stage name GoCD refuses is reported."""
    path = tmp_path / "broken.xml"
    path.write_text(render(config_from(CONFIG, tmp_path), "gocd-xml").replace('<stage name="publish">',
                                                                              '<stage name="pub lish">'))
    result = subprocess.run([sys.executable, str(VALIDATORS / "validate-gocd-xml"), str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
