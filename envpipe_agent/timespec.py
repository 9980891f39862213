"""Durations (``30m``, ``1h30m``, ``7d``) and weekly windows
(``Mon-Fri 09:00-16:00 Europe/London``), parsed from envpipe.yml (SPEC §10).

Pure functions of their text and of the moment they are asked about: the clock is
always passed in, so every rule is testable without waiting.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import FrozenSet, Iterable, Optional, Sequence, Tuple, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?\Z")
_TIME_RE = re.compile(r"(\d\d):(\d\d)\Z")
DURATION_HINT = "a duration such as 30m, 2h, 1h30m or 7d (units d, h, m)"
# Longer than any lifetime, soak or freeze means, and short enough that "now + it" is
# still a date (Python's end at year 9999): 99999999999d would otherwise be exit 4.
LONGEST_DURATION = dt.timedelta(days=100 * 366)
WINDOW_HINT = ("'DAYS HH:MM-HH:MM ZONE', days as Mon-Fri, Mon,Wed,Fri or *, a zone such as "
               "Europe/London or UTC (e.g. 'Mon-Fri 09:00-16:00 Europe/London')")
Zone = Union[ZoneInfo, dt.timezone]


class TimeSpecError(ValueError):
    """Text that is no duration or window; the message says what was expected."""


def parse_duration(text: str) -> dt.timedelta:
    """``30m`` → 30 minutes; a positive whole number of d, h and m, in that order."""
    match = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise TimeSpecError(f"{text!r} is not {DURATION_HINT}")
    days, hours, minutes = (int(part or 0) for part in match.groups())
    try:
        duration = dt.timedelta(days=days, hours=hours, minutes=minutes)
    except OverflowError:
        duration = LONGEST_DURATION + LONGEST_DURATION
    if duration <= dt.timedelta(0):
        raise TimeSpecError(f"{text!r} is no time at all: give {DURATION_HINT}")
    if duration > LONGEST_DURATION:
        raise TimeSpecError(f"{text!r} is longer than 100 years: give {DURATION_HINT}")
    return duration


def format_duration(duration: dt.timedelta) -> str:
    """A short human form, rounded up to the minute: ``1h 5m``, ``2d 3h``, ``1m``."""
    minutes = max(1, -(-int(duration.total_seconds()) // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    return " ".join(part for part in parts if part)


def zone(name: str) -> Zone:
    """The IANA zone ``name`` (``UTC`` even where the system has no zone database)."""
    if name.upper() in ("UTC", "Z"):
        return dt.timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TimeSpecError(f"unknown time zone {name!r}: use an IANA name such as Europe/London, "
                            "America/New_York or UTC") from None


def _day(name: str, text: str) -> int:
    for index, day in enumerate(DAY_NAMES):
        if name.lower() == day.lower():
            return index
    raise TimeSpecError(f"{text!r}: {name!r} is not a day; use {', '.join(DAY_NAMES)}")


def _days(spec: str, text: str) -> FrozenSet[int]:
    if spec == "*":
        return frozenset(range(7))
    days = set()
    for part in spec.split(","):
        first, dash, last = part.partition("-")
        start = _day(first, text)
        end = _day(last, text) if dash else start
        # A range may run over the weekend: Fri-Mon is Fri, Sat, Sun and Mon.
        days.update((start + offset) % 7 for offset in range((end - start) % 7 + 1))
    return frozenset(days)


def _time(value: str, text: str, end: bool = False) -> dt.timedelta:
    match = _TIME_RE.match(value)
    hours, minutes = (int(part) for part in match.groups()) if match else (99, 99)
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not end)):
        raise TimeSpecError(f"{text!r}: {value!r} is not a time of day HH:MM (00:00 to 23:59, or 24:00 as an end)")
    return dt.timedelta(hours=hours, minutes=minutes)


@dataclass(frozen=True)
class Window:
    """Weekly opening hours: on each of ``days``, from ``start`` to ``end`` in ``zone``.

    An end before the start runs past midnight (``Fri 22:00-02:00``: Friday night into
    Saturday). Times are wall-clock times of the zone, so a window keeps its hours
    across daylight-saving changes.
    """

    text: str
    days: FrozenSet[int]
    start: dt.timedelta  # since local midnight
    end: dt.timedelta
    zone_name: str

    @property
    def zone(self) -> Zone:
        return zone(self.zone_name)

    def _openings(self, moment: dt.datetime, days_before: int, days_after: int) -> Iterable[Tuple[dt.datetime, dt.datetime]]:
        """(opens, closes) in UTC for the window's days around ``moment``, in order."""
        tz = self.zone
        today = moment.astimezone(tz).date()
        for offset in range(-days_before, days_after + 1):
            day = today + dt.timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            midnight = dt.datetime.combine(day, dt.time(0))
            length = self.end - self.start if self.end > self.start else self.end - self.start + dt.timedelta(days=1)
            opens, closes = midnight + self.start, midnight + self.start + length
            yield (opens.replace(tzinfo=tz).astimezone(dt.timezone.utc),
                   closes.replace(tzinfo=tz).astimezone(dt.timezone.utc))

    def is_open(self, moment: dt.datetime) -> bool:
        return any(opens <= moment < closes for opens, closes in self._openings(moment, 1, 0))

    def next_opening(self, moment: dt.datetime) -> dt.datetime:
        """The first opening after ``moment`` (UTC)."""
        return next(opens for opens, _ in self._openings(moment, 0, 8) if opens > moment)

    def describe_opening(self, opening: dt.datetime) -> str:
        """``Mon 2026-11-30 09:00 Europe/London (09:00 UTC)``."""
        local = opening.astimezone(self.zone)
        utc = opening.astimezone(dt.timezone.utc)
        if local.utcoffset() == dt.timedelta(0) and self.zone is dt.timezone.utc:
            return f"{DAY_NAMES[utc.weekday()]} {utc:%Y-%m-%d %H:%M} UTC"
        same_day = utc.date() == local.date()
        return (f"{DAY_NAMES[local.weekday()]} {local:%Y-%m-%d %H:%M} {self.zone_name} "
                f"({utc:%H:%M} UTC{'' if same_day else utc.strftime(' %Y-%m-%d')})")


def parse_window(text: str) -> Window:
    """``'Mon-Fri 09:00-16:00 Europe/London'`` → a Window; TimeSpecError when it is not one."""
    parts = text.split() if isinstance(text, str) else []
    if len(parts) != 3 or parts[1].count("-") != 1:
        raise TimeSpecError(f"{text!r} is not a window: expected {WINDOW_HINT}")
    days, hours, zone_name = parts
    start_text, end_text = hours.split("-")
    start, end = _time(start_text, text), _time(end_text, text, end=True)
    if start == end:
        raise TimeSpecError(f"{text!r}: the window opens and closes at the same time; for all day use 00:00-24:00")
    zone(zone_name)  # refuse an unknown zone now, not when the window is first asked
    return Window(text=text, days=_days(days, text), start=start, end=end, zone_name=zone_name)


def window_is_open(windows: Sequence[Window], moment: dt.datetime) -> bool:
    """Whether ``moment`` is inside any of ``windows`` (no windows: always open)."""
    return not windows or any(window.is_open(moment) for window in windows)


def next_opening(windows: Sequence[Window], moment: dt.datetime) -> Optional[Tuple[Window, dt.datetime]]:
    """The window that opens first after ``moment``, and when (None without windows)."""
    openings = [(window.next_opening(moment), index) for index, window in enumerate(windows)]
    if not openings:
        return None
    opening, index = min(openings)
    return windows[index], opening
