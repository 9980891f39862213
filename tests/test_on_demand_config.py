"""on_demand: in envpipe.yml (SPEC §9), and what a name resolves to."""
from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from envpipe_agent.config import load_config
from envpipe_agent.errors import ConfigError, UsageError
from envpipe_agent.instances import check_instance_name, path_owner, resolve
from envpipe_agent.registrations import list_instances, new_registration, read_registration, write_registration
from envpipe_agent.repository import open_repository

BASE = """\
project: our-project
repository: repo
environments:
  - name: test
    vars: {size: small, instance_count: 1}
  - name: staging
    vars: {size: medium}
    role_arn: arn:aws:iam::123456789012:role/deployer
    account_id: "123456789012"
  - name: production
    approval: manual
"""


def write(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "envpipe.yml"
    path.write_text(BASE + textwrap.dedent(extra))
    return path


def test_defaults_apply_when_the_section_is_absent(tmp_path):
    settings = load_config(write(tmp_path)).on_demand
    assert settings.like == "test"
    assert dict(settings.vars) == {}
    assert (settings.ttl, settings.max_ttl, settings.max) == (dt.timedelta(hours=8), dt.timedelta(days=7), 10)


def test_section_is_read_with_durations_in_minutes_hours_days(tmp_path):
    settings = load_config(write(tmp_path, """\
        on_demand:
          like: staging
          vars: {instance_count: 1}
          ttl: 30m
          max_ttl: 2d
          max: 3
        """)).on_demand
    assert (settings.like, dict(settings.vars)) == ("staging", {"instance_count": 1})
    assert (settings.ttl, settings.max_ttl, settings.max) == (dt.timedelta(minutes=30), dt.timedelta(days=2), 3)


@pytest.mark.parametrize("extra, where, expected", [
    ("on_demand: {size: 2}", "on_demand.size", "unknown key; allowed here: like, vars, ttl, max_ttl, max"),
    ("on_demand: {like: qa}", "on_demand.like", "no environment named 'qa'"),
    ("on_demand: {ttl: 8 hours}", "on_demand.ttl", "'8 hours' is not"),
    ("on_demand: {max_ttl: 0m}", "on_demand.max_ttl", "no time at all"),
    ("on_demand: {ttl: 2d, max_ttl: 1d}", "on_demand.ttl", "longer than on_demand.max_ttl"),
    ("on_demand: {max: 0}", "on_demand.max", "expected an integer >= 1"),
    ("on_demand: {max: many}", "on_demand.max", "expected an integer >= 1"),
    ("on_demand: {vars: [a]}", "on_demand.vars", "expected a mapping of variables"),
    ("on_demand: [like]", "on_demand", "expected a mapping"),
])
def test_bad_section_names_file_key_path_and_expectation(tmp_path, extra, where, expected):
    path = write(tmp_path, extra + "\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path.resolve()}: {where}: ")
    assert expected in message


@pytest.mark.parametrize("name, owner", [
    ("staging", "staging"), ("production-blue", "production"), ("test-green", "test"), ("staging-router", "staging"),
    ("review-42", None), ("staging-2", None), ("sandbox-alice", None), ("qa-blue", None),
])
def test_names_taken_by_the_path_and_its_blue_green_instances(tmp_path, name, owner):
    config = load_config(write(tmp_path))
    assert path_owner(config, name) == owner
    if owner is None:
        assert check_instance_name(config, name) == name
    else:
        with pytest.raises(UsageError, match="choose another name"):
            check_instance_name(config, name)


@pytest.mark.parametrize("name", ["Review", "1st", "a_b", "x" * 64, "", "../x"])
def test_invalid_instance_names_are_usage_errors(tmp_path, name):
    with pytest.raises(UsageError, match="invalid name"):
        check_instance_name(load_config(write(tmp_path)), name)


def test_a_registered_name_resolves_to_an_instance_like_its_environment(tmp_path):
    config = load_config(write(tmp_path, "on_demand: {like: staging, vars: {instance_count: 1}}\n"))
    repository = open_repository(str(tmp_path / "repo"), {})
    now = dt.datetime(2026, 11, 29, 18, tzinfo=dt.timezone.utc)
    write_registration(repository, new_registration("review-42", "env", "alice", "staging", now, dt.timedelta(hours=1)))
    review = resolve(config, repository, "review-42")
    assert (review.name, review.like, review.on_path) == ("review-42", "staging", False)
    assert dict(review.vars) == {"size": "medium", "instance_count": 1}
    assert (review.role_arn, review.account_id) == ("arn:aws:iam::123456789012:role/deployer", "123456789012")
    assert (review.approval, review.soak, review.windows) == ("auto", None, ())
    assert resolve(config, repository, "staging") is config.environment("staging")
    with pytest.raises(UsageError, match="or an on-demand environment or sandbox"):
        resolve(config, repository, "review-43")


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"kind": "env", "owner": "bob"}',
                                  b'{"kind": "env", "owner": "bob", "created": "x", "expires": "soon", "like": "test"}'])
def test_an_unreadable_registration_counts_as_long_expired(tmp_path, body):
    repository = open_repository(str(tmp_path / "repo"), {})
    repository.write(".envpipe/on-demand/left-over.json", body)
    repository.write(".envpipe/on-demand/Not A Name.json", b"{}")

    listed = list_instances(repository)

    assert [(i.name, i.expired, i.owner) for i in listed] == [("left-over", True, "unknown (unreadable registration)")]
    assert read_registration(repository, "left-over").expired(dt.datetime(1971, 1, 1, tzinfo=dt.timezone.utc))
