"""Schedules without a database: slots, time zones and DST, and hostile definitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from passito_jobs.queue.schedules import Schedule, ScheduleError, choose
from passito_jobs.registry import Registry, periodic


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_every_slots_are_whole_multiples_of_the_period_since_the_epoch() -> None:
    schedule = Schedule("s", "Noop", every=1.0)
    assert schedule.slots(utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 3, 500), 10) == [
        utc(2026, 1, 1, 0, 0, 1),
        utc(2026, 1, 1, 0, 0, 2),
        utc(2026, 1, 1, 0, 0, 3),
    ]
    assert schedule.next_slot(utc(2026, 1, 1, 0, 0, 3, 500)) == utc(2026, 1, 1, 0, 0, 4)
    # The latest `limit` slots only: a long outage never computes (or dispatches) a year of them.
    assert Schedule("s", "Noop", every="90s").slots(utc(2020, 1, 1), utc(2026, 1, 1), 2) == [  # type: ignore[arg-type]
        utc(2025, 12, 31, 23, 58, 30),
        utc(2026, 1, 1),  # a slot at `now` is due
    ]


def test_cron_follows_its_time_zone_across_daylight_saving_time() -> None:
    nine = Schedule("s", "Noop", cron="0 9 * * *", timezone="Europe/Berlin")
    # 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC from 29 March 2026.
    assert nine.slots(utc(2026, 3, 27), utc(2026, 3, 30, 12), 10) == [
        utc(2026, 3, 27, 8),
        utc(2026, 3, 28, 8),
        utc(2026, 3, 29, 7),
        utc(2026, 3, 30, 7),
    ]
    # 02:30 does not exist on the day the clocks go forward: that day's run is at 03:00 CEST.
    night = Schedule("s", "Noop", cron="30 2 * * *", timezone="Europe/Berlin")
    assert night.next_slot(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    assert night.next_slot(utc(2026, 3, 29, 12)) == utc(2026, 3, 30, 0, 30)
    assert Schedule("s", "Noop", cron="*/5 * * * *").next_slot(utc(2026, 1, 1, 0, 1)) == utc(2026, 1, 1, 0, 5)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "bad"}, "cron 'bad' is not a cron expression"),
        ({"cron": "* * * * * *"}, "is not a cron expression"),
        ({"cron": "61 * * * *"}, "is not a cron expression"),
        ({"cron": "0 0 30 2 *"}, "cron '0 0 30 2 *' never matches a date"),
        # croniter draws R anew for each next slot: a "daily" R R * * * ran 111 times in a day
        ({"cron": "R R * * *"}, "uses R (a random time): not supported"),
        ({"cron": "0 0 * * R"}, "uses R"),
        ({"cron": "R(1-5) 0 * * *"}, "uses R"),
        ({"cron": "* * * * *\x00"}, "cron must be printable text"),
        ({"cron": "*" * 1000}, "cron must be printable text of at most 200 characters"),
        ({"every": "0s"}, "every must be at least 1s"),
        ({"every": 0.5}, "every must be at least 1s"),
        ({"every": -5}, "every must be at least 1s"),
        ({"every": float("nan")}, "every must be at least 1s, got nan"),
        ({"every": float("inf")}, "every must be at least 1s, got inf"),
        ({"every": 10**30}, "every must be at most 36500d"),
        ({"every": "99999999d"}, "every must be at most 36500d (100 years)"),
        ({"every": "soon"}, "every must be a duration like"),
        ({"every": True}, "every must be a duration"),
        ({"every": timedelta(0)}, "every must be at least 1s"),
        ({"every": "1s", "timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"every": "1s", "timezone": "../../etc/passwd"}, "unknown timezone"),
        ({"every": "1s", "timezone": "UTC\x00"}, "timezone must be an IANA time zone name"),
        ({"every": "1s", "timezone": "x" * 5000}, "timezone must be an IANA time zone name"),
        ({"every": "1s", "catch_up": "sometimes"}, "catch_up must be one of latest, none, all"),
        ({"every": "1s", "cron": "* * * * *"}, "give exactly one of cron and every"),
        ({}, "give exactly one of cron and every"),
        ({"every": "1s", "queue": ""}, "queue must be a non-empty string"),
        ({"every": "1s", "payload": {"x": float("nan")}}, "NaN"),
        ({"every": "1s", "payload": ["not", "an", "object"]}, "payload"),
    ],
)
def test_a_bad_schedule_is_refused_with_a_clear_error(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ScheduleError, match=None) as raised:
        periodic("nightly", "Noop", into=Registry(), **fields)  # type: ignore[arg-type]
    assert message in str(raised.value)
    assert str(raised.value).startswith("schedule 'nightly': ")
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("n" * 129, "schedule name must be at most 128 characters, got 129"),
        ("", "schedule name must be a non-empty string"),
        ("a\nb", "must not contain control characters"),
        ("\ud800", "unpaired surrogate"),
        (None, "schedule name must be a non-empty string"),
    ],
)
def test_a_bad_schedule_name_is_refused(name: object, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        periodic(name, "Noop", every="1m", into=Registry())  # type: ignore[arg-type]


def test_a_name_registered_twice_must_mean_the_same_schedule() -> None:
    registry = Registry()
    periodic("report", "Noop", cron="0 6 * * 1", into=registry)
    periodic("report", "Noop", cron="0 6 * * 1", into=registry)  # a module imported twice
    with pytest.raises(ScheduleError, match="already registered with another definition"):
        periodic("report", "Noop", cron="0 7 * * 1", into=registry)
    assert [s.name for s in registry.schedules()] == ["report"]


def test_catch_up_picks_from_missed_slots_only() -> None:
    due = [utc(2026, 1, 1, 0, 0, s) for s in range(1, 11)]
    for rule, missed in (("latest", [due[-1]]), ("none", []), ("all", due)):
        schedule = Schedule("s", "Noop", every=1.0, catch_up=rule)
        assert choose(schedule, due, missed=True) == missed
        assert choose(schedule, due[-1:], missed=False) == due[-1:]  # on time: always run
