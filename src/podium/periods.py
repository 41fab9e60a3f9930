"""Board periods in UTC: all-time, day, ISO week, month."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from podium.errors import invalid
from podium.validation import PERIODS, Period

EPOCH = date(1970, 1, 1)


def parse_period(period: str) -> Period:
    """A client-named period, or an `invalid` error naming the periods there are."""
    for known in PERIODS:
        if known == period:
            return known
    raise invalid("unknown period", {"period": f"one of {', '.join(PERIODS)}"})


def period_start(period: Period, day: date) -> date:
    """The first UTC day of the period containing `day`."""
    if period == "all":
        return EPOCH
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown period {period!r}")


def period_end(period: Period, start: date) -> date | None:
    """The first day after the period (exclusive end); None for all-time."""
    if period == "all":
        return None
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    if start.month == 12:
        return date(start.year + 1, 1, 1)
    return date(start.year, start.month + 1, 1)


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def starts_for(moment: datetime) -> dict[Period, date]:
    """The start of each period a write at `moment` lands in."""
    day = utc_day(moment)
    return {p: period_start(p, day) for p in PERIODS}
