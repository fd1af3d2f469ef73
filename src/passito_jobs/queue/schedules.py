"""Periodic jobs: a schedule's definition, its slots, and one round of dispatching them.

A schedule names a job type and when to run it: a cron expression (croniter) in a time zone, or
a fixed period (`every`, slots at whole multiples of it since the Unix epoch, so every worker
computes the same ones). The holder of the maintenance lease runs the rounds
(worker/scheduler.py). Each slot is dispatched once across the fleet: the jobs of a slot and the
schedule's `last_slot` mark are written in one transaction under the schedule row's lock, and a
job carries the unique key `schedule:<name>:<slot>` besides.

Slots that came due while nobody watched (no holder looked at the schedule for longer than
MISSED_AFTER: workers stopped, a lease handover, the schedule paused) follow `catch_up`:
`latest` runs the latest of them once, `none` skips them, `all` runs each (at most the latest
CATCH_UP_LIMIT).
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from croniter import CroniterError, croniter

from passito_jobs.queue import limits
from passito_jobs.queue.errors import InvalidJobError
from passito_jobs.queue.models import JobRequest
from passito_jobs.settings import format_duration, parse_duration, printable

if TYPE_CHECKING:
    from passito_jobs.queue.store import Store

CATCH_UP = ("latest", "none", "all")
CATCH_UP_LIMIT = 100
"""The most slots `catch_up="all"` dispatches for one gap (the latest ones)."""
MISSED_AFTER = 5.0
"""Seconds without a look by a lease holder after which due slots count as missed."""
MIN_EVERY = 1.0
MAX_CRON_LENGTH = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ScheduleError(InvalidJobError):
    """A schedule's definition is wrong; the message names the schedule and the field."""


@dataclass(frozen=True)
class Schedule:
    """A periodic job, validated when made (ScheduleError names what is wrong)."""

    name: str
    type: str
    cron: str | None = None
    every: float | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    queue: str = "default"
    timezone: str = "UTC"
    catch_up: str = "latest"

    def __post_init__(self) -> None:
        try:
            limits.check_name("schedule name", self.name)
        except InvalidJobError as exc:
            raise ScheduleError(str(exc)) from None
        what = f"schedule {printable(self.name, 60)!r}"
        try:
            limits.check_name("type", self.type)
            limits.check_name("queue", self.queue)
            limits.encode_payload(self.payload)
        except InvalidJobError as exc:
            raise ScheduleError(f"{what}: {exc}") from None
        if (self.cron is None) == (self.every is None):
            raise ScheduleError(f"{what}: give exactly one of cron and every")
        if self.catch_up not in CATCH_UP:
            got = printable(str(self.catch_up), 40)
            raise ScheduleError(f"{what}: catch_up must be one of {', '.join(CATCH_UP)}, got {got!r}")
        object.__setattr__(self, "every", _check_every(what, self.every))
        _check_cron(what, self.cron)
        object.__setattr__(self, "payload", dict(self.payload))
        self.zone  # noqa: B018 - checks the time zone now

    @classmethod
    def of(cls, **fields: Any) -> Schedule:
        """A schedule of loosely typed fields (`every` as `"30s"`, a number or a timedelta; the
        schedules file), checked like any other; a field it does not have is an error."""
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            name = fields.get("name")
            what = f"schedule {printable(name, 60)!r}" if isinstance(name, str) else "a schedule"
            raise ScheduleError(f"{what}: unknown field {printable(unknown[0], 40)!r}")
        for required in ("name", "type"):
            if required not in fields:
                raise ScheduleError(f"a schedule needs a {required}")
        return cls(**fields)

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return _zone(f"schedule {printable(self.name, 60)!r}", self.timezone)

    @property
    def when(self) -> str:
        """How it is spelled in `schedules list`: the cron expression, or `every 30s`."""
        if self.cron is not None:
            return self.cron if self.timezone == "UTC" else f"{self.cron} ({self.timezone})"
        assert self.every is not None
        return f"every {_seconds(self.every)}"

    def slots(self, after: datetime, now: datetime, limit: int) -> list[datetime]:
        """The slots in (after, now], oldest first; only the latest `limit` of them."""
        found: list[datetime] = []
        if self.every is not None:
            period = round(self.every * 1_000_000)
            tick = (_micros(now) // period) * period
            while tick > _micros(after) and len(found) < limit:
                found.append(_EPOCH + timedelta(microseconds=tick))
                tick -= period
        else:
            assert self.cron is not None
            it = croniter(self.cron, now.astimezone(self.zone) + timedelta(microseconds=1))
            while len(found) < limit:
                slot = it.get_prev(datetime).astimezone(UTC)
                if slot <= after:
                    break
                found.append(slot)
        return found[::-1]

    def next_slot(self, now: datetime) -> datetime:
        """The first slot after `now`."""
        if self.every is not None:
            period = round(self.every * 1_000_000)
            return _EPOCH + timedelta(microseconds=(_micros(now) // period + 1) * period)
        assert self.cron is not None
        nxt: datetime = croniter(self.cron, now.astimezone(self.zone)).get_next(datetime)
        return nxt.astimezone(UTC)

    def row(self) -> dict[str, Any]:
        """The definition as the schedules table holds it."""
        return {
            "name": self.name,
            "type": self.type,
            "queue": self.queue,
            "payload": limits.encode_payload(self.payload),
            "cron": self.cron,
            "every": self.every,
            "timezone": self.timezone,
            "catch_up": self.catch_up,
        }

    def unique_key(self, slot: datetime) -> str:
        return f"schedule:{self.name}:{slot.isoformat()}"


def parse_every(value: object) -> float:
    """A period: a duration text (`30s`, `5m`), a number of seconds or a timedelta."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s or 5m")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError("must be a duration such as 30s or 5m")


def _check_every(what: str, every: object) -> float | None:
    if every is None:
        return None
    try:
        seconds = parse_every(every)
    except ValueError as exc:
        raise ScheduleError(f"{what}: every {exc}") from None
    if not math.isfinite(seconds) or seconds < MIN_EVERY:
        raise ScheduleError(f"{what}: every must be at least {_seconds(MIN_EVERY)}, got {seconds!r}")
    if seconds > 36500 * 86400:
        raise ScheduleError(f"{what}: every must be at most 36500d (100 years)")
    return seconds


_RANDOM_FIELD = re.compile(r"(?<![A-Za-z])[Rr](?![A-Za-z])")


def _check_cron(what: str, cron: object) -> None:
    if cron is None:
        return
    if not isinstance(cron, str) or not cron.strip():
        raise ScheduleError(f"{what}: cron must be a non-empty string")
    if len(cron) > MAX_CRON_LENGTH or not cron.isprintable():
        raise ScheduleError(f"{what}: cron must be printable text of at most {MAX_CRON_LENGTH} characters")
    if _RANDOM_FIELD.search(cron):  # croniter draws it anew for each next slot: many runs a day
        raise ScheduleError(f"{what}: cron {printable(cron, 60)!r} uses R (a random time): not supported")
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ScheduleError(
            f"{what}: cron {printable(cron, 60)!r} is not a cron expression "
            "(five fields: minute hour day-of-month month day-of-week, e.g. '*/5 * * * *')"
        )
    try:
        croniter(cron, _EPOCH).get_next(datetime)
    except CroniterError:
        raise ScheduleError(
            f"{what}: cron {printable(cron, 60)!r} never matches a date (30 February?)"
        ) from None


def _zone(what: str, name: object) -> zoneinfo.ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > 100 or not name.isprintable():
        raise ScheduleError(f"{what}: timezone must be an IANA time zone name such as Europe/Berlin")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(
            f"{what}: unknown timezone {printable(name, 60)!r} (an IANA name such as Europe/Berlin)"
        ) from None


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _seconds(value: float) -> str:
    return format_duration(value)


# --------------------------------------------------------------------------- one round


@dataclass
class ScheduleRound:
    """What one round did: job ids dispatched per schedule, slots skipped by the catch-up rule."""

    dispatched: dict[str, list[int]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # the database refused the job: why
    took_lease: bool = True


def choose(schedule: Schedule, due: Sequence[datetime], missed: bool) -> list[datetime]:
    """The due slots to dispatch: all of them when someone watched, else by `catch_up`."""
    if not due or not missed or schedule.catch_up == "all":
        return list(due)
    if schedule.catch_up == "latest":
        return [due[-1]]
    return []


def run_round(store: Store, schedules: Sequence[Schedule]) -> ScheduleRound:
    """Dispatch the due slots of `schedules` (the caller holds the lease); one transaction each."""
    result = ScheduleRound()
    states = {row["name"]: row for row in store.schedule_states([s.name for s in schedules])}
    for schedule in schedules:
        state = states.get(schedule.name)
        if state is None or state["paused"]:
            continue
        after = state["last_slot"] or state["created_at"]
        if schedule.slots(after, state["now"], 1):
            try:
                _dispatch_due(store, schedule, result)
            except InvalidJobError as exc:  # one schedule's refused job stops no other schedule
                result.refused[schedule.name] = str(exc)
    if states:
        now = next(iter(states.values()))["now"]
        store.touch_schedules({s.name: s.next_slot(now) for s in schedules if s.name in states})
    return result


def _dispatch_due(store: Store, schedule: Schedule, result: ScheduleRound) -> None:
    """Under the schedule row's lock: read the mark again, dispatch, move the mark."""
    with store.conn.transaction():
        state = store.lock_schedule(schedule.name)
        if state is None or state["paused"]:
            return
        now = state["now"]
        after = state["last_slot"] or state["created_at"]
        due = schedule.slots(after, now, CATCH_UP_LIMIT + 1)
        if not due:
            return
        checked = state["checked_at"]
        missed = checked is None or (now - checked).total_seconds() > MISSED_AFTER
        chosen = choose(schedule, due[-CATCH_UP_LIMIT:], missed)
        ids = _dispatch_slots(store, schedule, chosen)
        store.mark_schedule(schedule.name, due[-1], ids[-1] if ids else None, schedule.next_slot(now))
    if ids:
        result.dispatched[schedule.name] = ids
    if len(due) > len(chosen):
        result.skipped[schedule.name] = len(due) - len(chosen)


def _dispatch_slots(store: Store, schedule: Schedule, slots: Sequence[datetime]) -> list[int]:
    """The jobs of a schedule's slots, each with the slot's unique key."""
    requests = [
        JobRequest(schedule.type, schedule.payload, schedule.queue, unique_key=schedule.unique_key(slot))
        for slot in slots
    ]
    return store.dispatch_many(requests) if requests else []
