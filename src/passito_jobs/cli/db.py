"""`passito-jobs db start | stop | url`: the embedded PostgreSQL (when PASSITO_DATABASE_URL is unset)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from passito_jobs.cli.options import CommandError
from passito_jobs.config import Settings
from passito_jobs.localdb import LocalDatabase
from passito_jobs.queue.conninfo import describe_target


def add_commands(sub: Any) -> None:
    p = sub.add_parser("db", help="the embedded PostgreSQL used when PASSITO_DATABASE_URL is unset")
    p.add_argument(
        "action",
        choices=["start", "stop", "url"],
        metavar="ACTION",
        help="start: start it (if not running) and print its URL; stop: stop it; url: print its URL",
    )
    p.set_defaults(func=cmd_db)


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    if settings.database.url:
        print(
            f"PASSITO_DATABASE_URL is set ({describe_target(settings.database.url)}); "
            "the embedded PostgreSQL is not used",
            file=sys.stderr,
        )
        return 1 if args.action in {"start", "stop"} else 0
    db = LocalDatabase(settings.local_database.data_dir)
    if args.action == "start":
        print(db.start())
    elif args.action == "stop":
        print("stopped" if db.stop() else "not running")
    elif args.action == "url":
        port = db.running_port()
        if port is None:
            raise CommandError("the embedded PostgreSQL is not running (start it: passito-jobs db start)")
        print(db.url(port))
    return 0
