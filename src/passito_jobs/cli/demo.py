"""`passito-jobs demo`: the whole system on this machine with a sample workload (`make run`)."""

from __future__ import annotations

import argparse
from typing import Any

from passito_jobs.cli.options import int_between
from passito_jobs.config import Settings
from passito_jobs.settings import MAX_WORKERS

MAX_DEMO_JOBS = 1_000_000


def add_commands(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the system locally with a demo workload (`make run`)")
    p.add_argument(
        "--jobs",
        type=int_between(1, MAX_DEMO_JOBS),
        default=200,
        help="sample outpasses to dispatch, 3-4 jobs each (default 200)",
    )
    p.add_argument(
        "--workers", type=int_between(1, MAX_WORKERS), default=4, help="most worker processes (default 4)"
    )
    p.add_argument("--until-drained", action="store_true", help="exit 0 once every demo job is done")
    p.add_argument(
        "--clear-leftovers",
        action="store_true",
        help="first cancel the unfinished demo jobs an interrupted run left (tag 'demo'), "
        "unless another demo run shares the database",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.demo import run_demo  # noqa: PLC0415 - Passito's sample workload

    return run_demo(
        settings,
        jobs=args.jobs,
        until_drained=args.until_drained,
        workers=args.workers,
        clear_leftovers=args.clear_leftovers,
    )
