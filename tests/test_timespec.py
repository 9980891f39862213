"""Durations and promotion windows (SPEC §10), asked about fixed moments: no clock is read."""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from envpipe_agent.config import load_config
from envpipe_agent.errors import ConfigError
from envpipe_agent.timespec import (TimeSpecError, format_duration, next_opening, parse_duration, parse_window,
                                    window_is_open)

UTC = dt.timezone.utc
SUNDAY = dt.datetime(2026, 11, 29, 20, 6, tzinfo=UTC)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize("text, minutes", [("30m", 30), ("2h", 120), ("1h30m", 90), ("7d", 7 * 24 * 60),
                                           ("1d12h", 36 * 60)])
def test_durations(text, minutes):
    assert parse_duration(text) == dt.timedelta(minutes=minutes)


@pytest.mark.parametrize("text", ["30", "30 minutes", "0m", "-5m", "m", "30m1h", "", 30, None])
def test_bad_durations_say_what_is_expected(text):
    with pytest.raises(TimeSpecError, match="30m"):
        parse_duration(text)


def test_durations_print_rounded_up_to_the_minute():
    assert format_duration(dt.timedelta(minutes=29, seconds=1)) == "30m"
    assert format_duration(dt.timedelta(seconds=5)) == "1m"
    assert format_duration(dt.timedelta(days=2, hours=3)) == "2d 3h"
    assert format_duration(dt.timedelta(hours=1, minutes=5)) == "1h 5m"


def test_working_hours_in_london_follow_its_winter_and_summer_time():
    window = parse_window("Mon-Fri 09:00-16:00 Europe/London")
    # Winter: London is on UTC.
    assert window.is_open(at("2026-11-30T09:00:00Z"))          # Monday 09:00 GMT
    assert not window.is_open(at("2026-11-30T08:59:59Z"))
    assert not window.is_open(at("2026-11-30T16:00:00Z"))      # the end is not inside
    # Summer: 08:30 UTC is 09:30 BST.
    assert window.is_open(at("2026-07-01T08:30:00Z"))
    assert not window.is_open(at("2026-07-01T15:30:00Z"))      # 16:30 BST


def test_a_closed_window_says_when_it_next_opens_in_its_zone_and_in_utc():
    window = parse_window("Mon-Fri 09:00-16:00 Europe/London")
    sunday_evening = at("2026-11-29T20:06:00Z")
    assert not window.is_open(sunday_evening)
    opening = window.next_opening(sunday_evening)
    assert opening == at("2026-11-30T09:00:00Z")
    assert window.describe_opening(opening) == "Mon 2026-11-30 09:00 Europe/London (09:00 UTC)"
    friday_evening = at("2026-07-03T17:00:00Z")
    assert window.describe_opening(window.next_opening(friday_evening)) == \
        "Mon 2026-07-06 09:00 Europe/London (08:00 UTC)"


def test_other_zones_name_the_utc_date_when_it_differs():
    window = parse_window("Mon 01:00-02:00 Asia/Tokyo")
    opening = window.next_opening(at("2026-11-29T00:00:00Z"))
    assert window.describe_opening(opening) == "Mon 2026-11-30 01:00 Asia/Tokyo (16:00 UTC 2026-11-29)"


def test_a_utc_window_names_its_opening_once():
    window = parse_window("Mon 09:00-10:00 UTC")
    assert window.describe_opening(window.next_opening(SUNDAY)) == "Mon 2026-11-30 09:00 UTC"


def test_day_lists_stars_and_ranges_over_the_weekend():
    assert parse_window("Mon,Wed,Fri 10:00-11:00 UTC").days == {0, 2, 4}
    assert parse_window("* 00:00-24:00 UTC").days == set(range(7))
    assert parse_window("Fri-Mon 10:00-11:00 UTC").days == {4, 5, 6, 0}
    assert parse_window("mon-wed,sat 10:00-11:00 UTC").days == {0, 1, 2, 5}
    assert parse_window("* 00:00-24:00 UTC").is_open(at("2026-11-29T23:59:59Z"))


def test_a_window_past_midnight_belongs_to_the_day_it_opens():
    window = parse_window("Fri 22:00-02:00 UTC")
    assert window.is_open(at("2026-12-04T23:00:00Z"))      # Friday night
    assert window.is_open(at("2026-12-05T01:59:00Z"))      # early Saturday
    assert not window.is_open(at("2026-12-05T02:00:00Z"))
    assert not window.is_open(at("2026-12-04T01:00:00Z"))  # early Friday belongs to Thursday
    assert window.next_opening(at("2026-12-05T03:00:00Z")) == at("2026-12-11T22:00:00Z")


def test_several_windows_open_when_any_is_open_and_the_first_to_open_is_named():
    windows = (parse_window("Mon-Thu 09:00-16:00 UTC"), parse_window("Fri 09:00-12:00 UTC"))
    assert window_is_open(windows, at("2026-12-03T15:00:00Z"))       # Thursday
    assert not window_is_open(windows, at("2026-12-04T13:00:00Z"))   # Friday afternoon
    window, opening = next_opening(windows, at("2026-12-04T13:00:00Z"))
    assert (window.text, opening) == ("Mon-Thu 09:00-16:00 UTC", at("2026-12-07T09:00:00Z"))
    assert window_is_open((), at("2026-12-04T13:00:00Z"))


@pytest.mark.parametrize("text, complaint", [
    ("Mon-Fry 09:00-16:00 UTC", "'Fry' is not a day"),
    ("Mon-Fri 9-16 UTC", "not a time of day"),
    ("Mon-Fri 09:00-25:00 UTC", "not a time of day"),
    ("Mon-Fri 24:00-10:00 UTC", "not a time of day"),
    ("Mon-Fri 09:60-10:00 UTC", "not a time of day"),
    ("Mon-Fri 16:00-16:00 UTC", "same time"),
    ("Mon-Fri 09:00-16:00 Mars/Olympus_Mons", "unknown time zone"),
    ("Mon-Fri 09:00-16:00 ../../etc/passwd", "unknown time zone"),
    ("Mon-Fri 09:00-16:00", "is not a window"),
    ("Mon-Fri 09:00 16:00 UTC", "is not a window"),
])
def test_bad_windows_say_what_is_wrong(text, complaint):
    with pytest.raises(TimeSpecError, match=complaint):
        parse_window(text)


CONFIG = """\
project: our-project
repository: repo
environments:
  - name: test
  - name: staging
{staging}
  - name: production
    approval: manual
"""


def load(tmp_path: Path, staging: str):
    path = tmp_path / "envpipe.yml"
    path.write_text(CONFIG.format(staging=staging))
    return load_config(path)


def test_soak_and_windows_are_read_from_the_environment(tmp_path):
    config = load(tmp_path, "    soak: 1h30m\n    window: ['Mon-Thu 09:00-16:00 Europe/London', 'Fri 09:00-12:00 UTC']")
    staging = config.environment("staging")
    assert staging.soak == dt.timedelta(minutes=90)
    assert [w.text for w in staging.windows] == ["Mon-Thu 09:00-16:00 Europe/London", "Fri 09:00-12:00 UTC"]
    single = load(tmp_path, "    window: 'Mon-Fri 09:00-16:00 UTC'").environment("staging")
    assert len(single.windows) == 1 and single.soak is None


@pytest.mark.parametrize("staging, where, complaint", [
    ("    soak: 30", "environments[1].soak", "30m"),
    ("    soak: half an hour", "environments[1].soak", "30m"),
    ("    window: 'Mon-Fri 09:00-16:00 Nowhere/Land'", "environments[1].window", "unknown time zone"),
    ("    window: ['Mon-Fri 09:00-16:00 UTC', 'Sat 9-12 UTC']", "environments[1].window[1]", "time of day"),
    ("    window: []", "environments[1].window", "empty list"),
])
def test_bad_policy_settings_are_configuration_errors(tmp_path, staging, where, complaint):
    with pytest.raises(ConfigError, match=re.escape(where) + ".*" + complaint):
        load(tmp_path, staging)


def test_soak_on_the_first_environment_is_refused(tmp_path):
    path = tmp_path / "envpipe.yml"
    path.write_text(CONFIG.format(staging="").replace("  - name: test\n", "  - name: test\n    soak: 30m\n"))
    with pytest.raises(ConfigError, match=r"environments\[0\].soak: the first environment"):
        load_config(path)
