"""Cron expressions: the syntax, the next tick, daylight saving changes, bad expressions."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from tukio.flow import CronError, CronExpression

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def ticks(expression: str, start: datetime, end: datetime, tz: ZoneInfo | timezone = UTC) -> list[str]:
    return [t.isoformat() for t in CronExpression.parse(expression).ticks_between(start, end, tz)]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("*/15 * * * *", ["00:15", "00:30", "00:45", "01:00"]),
        ("5,10-12 * * * *", ["00:05", "00:10", "00:11", "00:12"]),
        ("50/5 0 * * *", ["00:50", "00:55"]),
        ("0-30/10 1 * * *", ["01:00", "01:10", "01:20", "01:30"]),
        ("@hourly", ["01:00"]),
    ],
)
def test_fields_lists_ranges_and_steps(expression: str, expected: list[str]) -> None:
    start = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    found = ticks(expression, start, datetime(2026, 1, 5, 1, 30, tzinfo=UTC))
    assert [t[11:16] for t in found][: len(expected)] == expected


def test_names_of_months_and_days_and_sunday_as_seven() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert ticks("0 9 * feb MON", start, datetime(2026, 2, 28, tzinfo=UTC))[0] == "2026-02-02T09:00:00+00:00"
    sundays = ticks("0 0 * * 7", start, datetime(2026, 1, 31, tzinfo=UTC))
    assert sundays == ticks("0 0 * * sun", start, datetime(2026, 1, 31, tzinfo=UTC))
    assert [t[:10] for t in sundays] == ["2026-01-04", "2026-01-11", "2026-01-18", "2026-01-25"]
    assert ticks("0 0 * * mon-fri", start, datetime(2026, 1, 6, tzinfo=UTC))[0][:10] == "2026-01-02"


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # The 13th, or any Friday (Vixie cron).
    found = ticks("0 0 13 * fri", datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC))
    assert [t[:10] for t in found] == ["2026-02-06", "2026-02-13", "2026-02-20", "2026-02-27"]


@pytest.mark.parametrize(
    ("alias", "first"),
    [
        ("@yearly", "2027-01-01T00:00:00+00:00"),
        ("@annually", "2027-01-01T00:00:00+00:00"),
        ("@monthly", "2026-02-01T00:00:00+00:00"),
        ("@weekly", "2026-01-11T00:00:00+00:00"),
        ("@daily", "2026-01-06T00:00:00+00:00"),
        ("@midnight", "2026-01-06T00:00:00+00:00"),
    ],
)
def test_aliases(alias: str, first: str) -> None:
    after = datetime(2026, 1, 5, 12, tzinfo=UTC)
    assert CronExpression.parse(alias).next_after(after).isoformat() == first


def test_next_tick_is_strictly_after_and_in_the_zone() -> None:
    cron = CronExpression.parse("0 2 * * *")
    tick = cron.next_after(datetime(2026, 1, 5, 1, 0, tzinfo=UTC), PARIS)  # 02:00 Paris, 01:00 UTC
    assert tick.isoformat() == "2026-01-06T02:00:00+01:00"
    assert cron.next_after(tick, PARIS).isoformat() == "2026-01-07T02:00:00+01:00"
    assert str(cron) == "0 2 * * *"


def test_a_tick_in_the_spring_gap_fires_once_at_its_end() -> None:
    # 2026-03-29 in Paris: 02:00 -> 03:00.
    found = ticks("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=PARIS), datetime(2026, 3, 30, 12, tzinfo=PARIS), PARIS)
    assert found == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    # Several ticks in the gap fire once, together.
    found = ticks(
        "*/20 2-3 * * *", datetime(2026, 3, 29, 1, tzinfo=PARIS), datetime(2026, 3, 29, 3, 30, tzinfo=PARIS), PARIS
    )
    assert found == ["2026-03-29T03:00:00+02:00", "2026-03-29T03:20:00+02:00"]


def test_a_repeated_local_time_fires_once_at_its_first_occurrence() -> None:
    # 2026-11-01 in New York: 02:00 EDT -> 01:00 EST; 01:30 happens twice.
    found = ticks(
        "30 1 * * *", datetime(2026, 10, 31, 12, tzinfo=NEW_YORK), datetime(2026, 11, 2, 12, tzinfo=NEW_YORK), NEW_YORK
    )
    assert found == ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    hourly = ticks(
        "0 * * * *",
        datetime(2026, 11, 1, 0, 30, tzinfo=NEW_YORK),
        datetime(2026, 11, 1, 3, 30, tzinfo=NEW_YORK),
        NEW_YORK,
    )
    assert hourly == ["2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00", "2026-11-01T03:00:00-05:00"]


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("61 * * * *", "minute 61 out of range 0-59"),
        ("* 24 * * *", "hour 24 out of range 0-23"),
        ("* * 0 * *", "day of month 0 out of range 1-31"),
        ("* * * 13 *", "month 13 out of range 1-12"),
        ("* * * * 8", "day of week 8 out of range 0-7"),
        ("* * * foo *", "month 'foo' is not a number or a name"),
        ("x * * * *", "minute 'x' is not a number"),
        ("*/0 * * * *", "minute step '0' must be a positive number"),
        ("*/x * * * *", "minute step 'x' must be a positive number"),
        ("5-1 * * * *", "minute range '5-1' goes backwards"),
        ("* * * *", "expected 5 fields"),
        ("* * * * * *", "expected 5 fields"),
        ("", "expected 5 fields"),
        ("@reboot", "unknown alias '@reboot'"),
        ("0 0 30 2 *", "would never fire"),
        ("0 0 31 apr,jun *", "would never fire"),
    ],
)
def test_bad_expressions_say_why(expression: str, reason: str) -> None:
    with pytest.raises(CronError, match=re.escape(f"cannot parse '{expression}': ") + ".*" + re.escape(reason)) as info:
        CronExpression.parse(expression)
    assert isinstance(info.value, ValueError)
    assert info.value.expression == expression


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="must be a string, got int"):
        CronExpression.parse(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aware"):
        CronExpression.parse("* * * * *").next_after(datetime(2026, 1, 1))


def test_a_day_that_comes_once_in_years_is_found() -> None:
    # 29 February that is a Sunday... with '*' day of week: every leap year.
    cron = CronExpression.parse("0 0 29 2 *")
    assert cron.next_after(datetime(2026, 1, 1, tzinfo=UTC)).isoformat() == "2028-02-29T00:00:00+00:00"
