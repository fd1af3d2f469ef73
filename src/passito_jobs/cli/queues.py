"""`passito-jobs queues list | pause | resume | set`: flow control across the fleet.

The settings live in the database (`passito_jobs.queues`), so every worker obeys them at its
next claim, without a restart; docs/flow-control.md explains each one.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from passito_jobs.cli.options import (
    CommandError,
    open_store,
    print_json,
    utf8_text,
)
from passito_jobs.config import Settings
from passito_jobs.queue import limits
from passito_jobs.queue.errors import FlowControlError, InvalidJobError
from passito_jobs.queue.flow import NO_LIMIT, UNCHANGED, Rate, check_limit, parse_rate, parse_setting
from passito_jobs.queue.limits import printable
from passito_jobs.queue.models import QueueFlow
from passito_jobs.queue.store import Store


def add_commands(sub: Any) -> None:
    queues = sub.add_parser("queues", help="flow control: pause, resume and limit queues for every worker")
    qsub = queues.add_subparsers(
        dest="queues_command", required=True, metavar="ACTION", parser_class=type(queues)
    )
    p = qsub.add_parser("list", help="each queue's settings, processing, ready and held-back jobs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)
    p = qsub.add_parser(
        "pause", help="claim nothing from QUEUE (dispatch still works; jobs in flight finish)"
    )
    p.add_argument("queue", metavar="QUEUE", type=queue_argument, help="the queue's name")
    p.set_defaults(func=cmd_pause)
    p = qsub.add_parser("resume", help="claim from QUEUE again (its workers wake at once)")
    p.add_argument("queue", metavar="QUEUE", type=queue_argument, help="the queue's name")
    p.set_defaults(func=cmd_resume)
    p = qsub.add_parser("set", help="set QUEUE's limits for the whole fleet (`none` removes one)")
    p.add_argument("queue", metavar="QUEUE", type=queue_argument, help="the queue's name")
    p.add_argument(
        "--concurrency",
        type=limit("concurrency"),
        default=UNCHANGED,
        metavar="N|none",
        help="at most N of its jobs processing at once, across all workers (default: unchanged)",
    )
    p.add_argument(
        "--rate",
        type=rate,
        default=UNCHANGED,
        metavar="N/PERIOD|none",
        help="at most N of its jobs started per PERIOD, evenly spaced (50/1s, 600/1m; default: unchanged)",
    )
    p.add_argument(
        "--key-concurrency",
        type=limit("key concurrency"),
        default=UNCHANGED,
        metavar="N|none",
        help="at most N processing jobs per concurrency key (dispatch --concurrency-key; default: unchanged)",
    )
    p.set_defaults(func=cmd_set)


def queue_name(text: str) -> str:
    try:
        return limits.check_name("queue", text)
    except InvalidJobError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def queue_argument(text: str) -> str:
    """A queue named on the command line: bytes that are not UTF-8 are said to be so (Python
    keeps them as surrogates, which the queue rules would call unpaired)."""
    return queue_name(utf8_text(text))


def limit(what: str) -> Any:
    def parse(text: str) -> int | None:
        if text.strip().lower() == NO_LIMIT:
            return None
        stripped = text.strip()
        if not stripped.lstrip("+-").isdigit() or not stripped.isascii() or len(stripped) > 20:
            raise argparse.ArgumentTypeError(f"{printable(stripped, 40)!r} is not a whole number or `none`")
        try:
            return check_limit(what, int(stripped))
        except FlowControlError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def rate(text: str) -> Rate | None:
    if text.strip().lower() == NO_LIMIT:
        return None
    try:
        return parse_rate(text)
    except FlowControlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def queue_settings(text: str) -> dict[str, dict[str, Any]]:
    """`migrate --queue-settings`: a JSON object of queue -> settings, e.g. `{"emails": {"paused":
    false, "concurrency": 4, "rate": "50/1s", "key_concurrency": null}}`. A setting given is
    checked and becomes the keyword of FlowControl (null or "none": no limit); one not given is
    left as it is. Bad input: one line naming the queue and the setting."""
    utf8_text(text)  # its bytes; a "\\ud800" escape in it is a lone surrogate, said so below
    try:
        value = limits.load_json(text)
    except limits.RepeatedKeyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        problem = exc.msg if isinstance(exc, json.JSONDecodeError) else "too large or too deep"
        raise argparse.ArgumentTypeError(f"not valid JSON ({problem})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object of queue names to settings")
    checked: dict[str, dict[str, Any]] = {}
    for name, given in value.items():
        queue = queue_name(name)
        shown = printable(queue, 80)
        if not isinstance(given, dict):
            raise argparse.ArgumentTypeError(f"queue {shown}: settings must be a JSON object")
        try:
            checked[queue] = {key: parse_setting(key, item) for key, item in given.items()}
        except FlowControlError as exc:
            raise argparse.ArgumentTypeError(f"queue {shown}: {exc}") from None
    return checked


def apply_settings(store: Store, settings: dict[str, dict[str, Any]]) -> list[str]:
    """Apply `queue_settings` in one transaction; a line for each queue, as `queues set` prints it."""
    with store.conn.transaction():
        for queue, given in settings.items():
            limits_given = {key: value for key, value in given.items() if key != "paused"}
            if limits_given:
                store.flow.set_limits(queue, **limits_given)
            if "paused" in given:
                (store.flow.pause if given["paused"] else store.flow.resume)(queue)
    return [f"queue {printable(f.queue, 80)}: {_summary(f)}" for f in store.flow.queues(list(settings))]


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        flows = store.flow.queues()
    if args.json:
        print_json([_as_dict(f) for f in flows])
        return 0
    if not flows:
        print("no queues yet (a queue appears with its first job or setting)")
        return 0
    rows = [
        (
            printable(f.queue, 40),
            "paused" if f.paused else "active",
            _shown(f.concurrency),
            _rate_text(f) or "-",
            _shown(f.key_concurrency),
            str(f.processing),
            str(f.ready),
            str(f.held_back),
        )
        for f in flows
    ]
    header = ("QUEUE", "STATE", "CONCURRENCY", "RATE", "KEY CONCURRENCY", "PROCESSING", "READY", "HELD BACK")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        created = store.flow.pause(args.queue)
    print(f"paused queue {printable(args.queue, 80)}: no job of it is claimed until `queues resume`")
    _note_created(created, args.queue)
    return 0


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        created = store.flow.resume(args.queue)
    print(f"resumed queue {printable(args.queue, 80)}")
    _note_created(created, args.queue)
    return 0


def cmd_set(args: argparse.Namespace, settings: Settings) -> int:
    given = {
        name: value
        for name, value in (
            ("concurrency", args.concurrency),
            ("rate", args.rate),
            ("key_concurrency", args.key_concurrency),
        )
        if value is not UNCHANGED
    }
    if not given:
        raise CommandError("give at least one of --concurrency, --rate, --key-concurrency", code=2)
    with open_store(settings) as store:
        created = store.flow.set_limits(args.queue, **given)
        (flow,) = store.flow.queues([args.queue])
    print(f"queue {printable(args.queue, 80)}: {_summary(flow)}")
    _note_created(created, args.queue)
    return 0


def _note_created(created: bool, queue: str) -> None:
    if created:
        print(
            f"note: queue {printable(queue, 80)} had no settings yet; it was created "
            "(check the name if you expected it to exist)",
            file=sys.stderr,
        )


def _summary(flow: QueueFlow) -> str:
    parts = ["paused" if flow.paused else "active"]
    parts.append(f"concurrency {_shown(flow.concurrency)}")
    parts.append(f"rate {_rate_text(flow) or NO_LIMIT}")
    parts.append(f"key concurrency {_shown(flow.key_concurrency)}")
    return ", ".join(parts)


def _shown(value: int | None) -> str:
    return "-" if value is None else str(value)


def _rate_text(flow: QueueFlow) -> str | None:
    if flow.rate_limit is None or flow.rate_period is None:
        return None
    return str(Rate(flow.rate_limit, flow.rate_period))


def _as_dict(flow: QueueFlow) -> dict[str, Any]:
    return {
        "queue": flow.queue,
        "paused": flow.paused,
        "concurrency": flow.concurrency,
        "rate": _rate_text(flow),
        "key_concurrency": flow.key_concurrency,
        "processing": flow.processing,
        "ready": flow.ready,
        "held_back": flow.held_back,
    }
