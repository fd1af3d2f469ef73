"""`passito-jobs schedules list | pause NAME | resume NAME`: the periodic jobs.

The schedules table is written by the worker that holds the maintenance lease, from the
definitions in its code and schedules file: `list` shows what it knows (a schedule no longer
defined there is stale and not dispatched), `pause` and `resume` act on the table at once.
"""

from __future__ import annotations

import argparse
from typing import Any

from passito_jobs.cli.options import CommandError, open_store, print_json, table, utf8_text, when
from passito_jobs.config import Settings
from passito_jobs.queue import limits
from passito_jobs.queue.errors import InvalidJobError
from passito_jobs.queue.limits import printable
from passito_jobs.queue.models import ScheduleRow
from passito_jobs.settings import format_duration


def add_commands(sub: Any) -> None:
    schedules = sub.add_parser("schedules", help="list, pause and resume periodic jobs")
    ssub = schedules.add_subparsers(
        dest="schedules_command", required=True, metavar="ACTION", parser_class=type(schedules)
    )
    p = ssub.add_parser("list", help="every schedule: when it runs, its last and next run")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)
    for action, help_text in (("pause", "stop dispatching a schedule"), ("resume", "dispatch it again")):
        p = ssub.add_parser(action, help=help_text)
        p.add_argument("name", type=schedule_name, metavar="NAME", help="the schedule's name")
        p.set_defaults(func=cmd_pause, paused=action == "pause")


def schedule_name(text: str) -> str:
    try:
        return limits.check_name("schedule name", utf8_text(text))
    except InvalidJobError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _state(row: ScheduleRow) -> str:
    if row.stale:
        return "stale"
    return "paused" if row.paused else "active"


def _when(row: ScheduleRow) -> str:
    if row.every is not None:
        return f"every {format_duration(row.every)}"
    cron = row.cron or ""
    return cron if row.timezone == "UTC" else f"{cron} ({row.timezone})"


def _row(row: ScheduleRow) -> list[str]:
    fmt = "%Y-%m-%d %H:%M:%S"
    return [
        printable(row.name, limits.MAX_NAME_LENGTH),
        _state(row),
        printable(_when(row), 80),
        printable(row.type, limits.MAX_NAME_LENGTH),
        when(row.next_slot, fmt) if row.next_slot and not (row.paused or row.stale) else "-",
        when(row.last_slot, fmt) if row.last_slot else "-",
        f"#{row.last_job_id}" if row.last_job_id else "-",
    ]


def _dict(row: ScheduleRow) -> dict[str, Any]:
    data = {name: getattr(row, name) for name in row.__dataclass_fields__}
    data["state"] = _state(row)
    for key in ("last_slot", "next_slot", "checked_at"):
        if data[key] is not None:
            data[key] = when(data[key])
    return data


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        rows = store.list_schedules()
    if args.json:
        print_json([_dict(row) for row in rows])
        return 0
    if not rows:
        print("no schedules (a worker that holds the maintenance lease writes them)")
        return 0
    header = ["NAME", "STATE", "WHEN", "TYPE", "NEXT RUN", "LAST RUN", "LAST JOB"]
    print(table(header, [_row(row) for row in rows]))
    return 0


def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        found = store.pause_schedule(args.name, paused=args.paused)
    if not found:
        raise CommandError(f"no schedule named {printable(args.name, 60)!r} (see `schedules list`)")
    print(f"{'paused' if args.paused else 'resumed'} schedule {printable(args.name, 60)}")
    return 0
