"""`passito-jobs migrate` and `passito-jobs dispatch`."""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import Any

from passito_jobs.cli.options import (
    PROG,
    CommandError,
    connection,
    duration,
    int_between,
    job_id,
    json_object,
    metadata_object,
    open_store,
    utf8_text,
)
from passito_jobs.cli.queues import apply_settings, queue_settings
from passito_jobs.config import Settings
from passito_jobs.queue import limits
from passito_jobs.queue.dispatch import dispatch
from passito_jobs.queue.errors import InvalidJobError
from passito_jobs.queue.limits import printable
from passito_jobs.queue.store import Store

# The argument each dispatch rule names, as the command line spells it.
_DISPATCH_FLAGS = {
    "job type": "TYPE",
    "payload": "--payload",
    "queue": "--queue",
    "priority": "--priority",
    "delay": "--delay",
    "run_at": "--delay",
    "max_attempts": "--max-attempts",
    "depends_on": "--depends-on",
    "unique_key": "--unique-key",
    "concurrency_key": "--concurrency-key",
    "tags": "--tag",
    "metadata": "--metadata",
    "unique_for": "--unique-for",
    "unique_mode": "--unique-mode",
    "depends_on_mode": "--depends-on-mode",
}


def add_commands(sub: Any) -> None:
    p = sub.add_parser("migrate", help="install or upgrade the queue schema (safe to run concurrently)")
    p.add_argument(
        "--queue-settings",
        type=queue_settings,
        default={},
        metavar="JSON",
        help=(
            'then set these queues\' flow control, e.g. \'{"emails": {"paused": false, "concurrency": 4, '
            '"rate": "50/1s", "key_concurrency": null}}\' (null: no limit; a setting or queue not '
            "given is left as it is; the chart's `queues:` values; default: none)"
        ),
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("dispatch", help="dispatch one job and print its id")
    p.add_argument("type", metavar="TYPE", type=utf8_text, help="job type, e.g. GenerateQrCode")
    p.add_argument(
        "--payload",
        type=json_object,
        default={},
        metavar="JSON",
        help="the job's payload, a JSON object (default {})",
    )
    p.add_argument("--queue", type=utf8_text, default="default", help="queue name (default: default)")
    p.add_argument(
        "--priority",
        type=int_between(limits.MIN_PRIORITY, limits.MAX_PRIORITY),
        default=0,
        help="higher runs first (default 0)",
    )
    p.add_argument(
        "--delay",
        type=duration,
        default=None,
        metavar="DURATION",
        help="run no earlier than this from now: 30 (seconds), 30s, 5m, 1h (default: at once)",
    )
    p.add_argument(
        "--depends-on",
        type=job_id,
        nargs="+",
        default=[],
        metavar="ID",
        help="parent job ids: run only after all of them completed (default: none)",
    )
    p.add_argument(
        "--max-attempts",
        type=int_between(1, limits.MAX_ATTEMPTS),
        default=3,
        metavar="N",
        help=f"attempts before the job fails for good (default 3, at most {limits.MAX_ATTEMPTS})",
    )
    p.add_argument(
        "--unique-key",
        type=utf8_text,
        default=None,
        metavar="KEY",
        help="while an unfinished job has this key, print its id instead (default: none)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 2) a job type no worker has ever run, instead of warning",
    )
    p.add_argument(
        "--concurrency-key",
        type=utf8_text,
        default=None,
        metavar="KEY",
        help=(
            "the key the queue's key concurrency counts by, e.g. hostel:ganga "
            "(docs/flow-control.md; default: none)"
        ),
    )
    _add_label_arguments(p)
    _add_flow_arguments(p)
    p.set_defaults(func=cmd_dispatch)


def _add_flow_arguments(p: argparse.ArgumentParser) -> None:
    """dispatch's unique modes and dependency mode (docs/dispatching.md, "Unique jobs" and "Flows")."""
    p.add_argument(
        "--unique-for",
        type=duration,
        default=None,
        metavar="DURATION",
        help=(
            "with --unique-key: also print the id of a job of the key that finished less than this "
            "long ago, e.g. 30s, 5m, 1h (default: unfinished jobs only)"
        ),
    )
    p.add_argument(
        "--unique-mode",
        choices=limits.UNIQUE_MODES,
        default="keep",
        help=(
            "keep: leave the unfinished job of --unique-key as it is; replace: give it this payload "
            "and delay if it has not started (default: keep)"
        ),
    )
    p.add_argument(
        "--depends-on-mode",
        choices=limits.DEPENDS_ON_MODES,
        default="completed",
        help=(
            "completed: run once every --depends-on parent completed (fail if one fails); finished: "
            "once every one ended, however (default: completed)"
        ),
    )


def _add_label_arguments(p: argparse.ArgumentParser) -> None:
    """dispatch --tag and --metadata: what finds and describes a job (issue 16)."""
    p.add_argument(
        "--tag",
        dest="tags",
        action="append",
        type=utf8_text,
        default=[],
        metavar="TAG",
        help=(
            f"a label to find the job by (jobs list --tag); repeat for more, at most {limits.MAX_TAGS} "
            "(default: none)"
        ),
    )
    p.add_argument(
        "--metadata",
        type=metadata_object,
        default=None,
        metavar="JSON",
        help=(
            f"a JSON object about the job (at most {limits.MAX_METADATA_BYTES} bytes), shown by jobs "
            "show (default: none)"
        ),
    )


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        applied = store.migrate()
        if applied:
            for migration in applied:
                print(f"applied {migration.version:04d}_{migration.name}")
        else:
            print(f"schema up to date (migration {store.schema_version():04d})")
        for line in apply_settings(store, args.queue_settings) if args.queue_settings else []:
            print(line)
    return 0


def unknown_type_warning(job_type: str, known: list[str]) -> str | None:
    """What to say about a job type no worker ever ran: None when one did."""
    if job_type in known:
        return None
    shown = printable(job_type, 60)
    by_case = [name for name in known if name.lower() == job_type.lower()]
    close = by_case or difflib.get_close_matches(job_type, known, n=3, cutoff=0.6)
    if close:
        return f"no worker runs '{shown}'; did you mean {' or '.join(repr(n) for n in close)}?"
    return f"no worker has ever run '{shown}': start one that imports its module (worker --import MODULE)"


def cmd_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    # One transaction: a bad argument is reported first; --strict undoes the dispatch.
    with connection(settings) as conn, conn.transaction():
        try:
            job = dispatch(
                args.type,
                args.payload,
                queue=args.queue,
                priority=args.priority,
                delay=args.delay,
                depends_on=args.depends_on,
                max_attempts=args.max_attempts,
                unique_key=args.unique_key,
                concurrency_key=args.concurrency_key,
                tags=args.tags,
                metadata=args.metadata,
                unique_for=args.unique_for,
                unique_mode=args.unique_mode,
                depends_on_mode=args.depends_on_mode,
                conn=conn,
            )
        except InvalidJobError as exc:
            message = str(exc)
            flag = next(
                (f for rule, f in _DISPATCH_FLAGS.items() if message.startswith((f"{rule} ", f"{rule}["))),
                None,
            )
            raise CommandError(f"argument {flag}: {message}" if flag else message, code=2) from None
        warning = unknown_type_warning(args.type, Store(conn).known_job_types())
        if warning and args.strict:
            raise CommandError(f"{warning} (--strict: not dispatched)", code=2)
    if warning:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    print(job)
    return 0
