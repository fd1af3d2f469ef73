"""`passito-jobs jobs list | show | retry | cancel | prune`: inspect and manage jobs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from passito_jobs.cli.options import (
    MAX_LIST,
    PROG,
    CommandError,
    DeprecatedFlag,
    Flag,
    add_flags,
    apply_flags,
    duration,
    int_between,
    job_id,
    open_store,
    print_json,
    table,
    utf8_text,
    when,
)
from passito_jobs.config import Settings
from passito_jobs.queue import limits
from passito_jobs.queue.limits import printable
from passito_jobs.queue.maintenance import Maintenance
from passito_jobs.queue.models import Job, JobFlow, JobState
from passito_jobs.queue.store import Store

PRUNE_FLAGS = (
    Flag(
        "--keep-completed",
        "maintenance",
        "keep_completed",
        "how long completed jobs are kept",
        duration,
        "DURATION",
    ),
    Flag(
        "--keep-failed",
        "maintenance",
        "keep_failed",
        "how long failed and cancelled jobs are kept",
        duration,
        "DURATION",
    ),
)


def add_commands(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="inspect and manage jobs")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION", parser_class=type(jobs))
    p = jsub.add_parser("list", help="list jobs, newest first")
    states = [s.value for s in JobState]
    p.add_argument("--state", dest="state", choices=states, help="only jobs in this state (default: any)")
    p.add_argument(
        "--status", dest="state", choices=states, action=DeprecatedFlag, use="--state", help=argparse.SUPPRESS
    )
    p.add_argument("--type", type=utf8_text, help="only jobs of this job type (default: any)")
    p.add_argument("--queue", type=utf8_text, help="only jobs in this queue (default: any)")
    p.add_argument(
        "--limit",
        type=int_between(1, MAX_LIST),
        default=50,
        metavar="N",
        help="most jobs listed (default 50)",
    )
    p.add_argument("--tag", type=utf8_text, help="only jobs carrying this tag (dispatch --tag; default: any)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)
    p = jsub.add_parser("show", help="show one job")
    p.add_argument("id", type=job_id, metavar="ID", help="the job id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)
    p = jsub.add_parser("retry", help="replay failed or cancelled jobs with their attempts reset")
    p.add_argument("ids", type=job_id, nargs="*", metavar="ID", help="job ids to retry")
    p.add_argument("--all-failed", action="store_true", help="every failed job (the dead-letter set)")
    p.add_argument(
        "--type", type=utf8_text, help="with --all-failed: only this job type (default: every type)"
    )
    p.set_defaults(func=cmd_retry)
    p = jsub.add_parser("cancel", help="cancel blocked, pending or processing jobs")
    p.add_argument("ids", type=job_id, nargs="+", metavar="ID", help="job ids to cancel")
    p.set_defaults(func=cmd_cancel)
    p = jsub.add_parser("prune", help="delete finished jobs older than their retention")
    add_flags(p, PRUNE_FLAGS)
    p.set_defaults(func=cmd_prune)


def _job_row(job: Job) -> list[str]:
    moment = job.finished_at or job.run_at
    error = (job.last_error or "").splitlines()[0] if job.last_error else ""
    return [
        str(job.id),
        job.state.value,
        printable(job.type, limits.MAX_NAME_LENGTH),
        printable(job.queue, limits.MAX_NAME_LENGTH),
        f"{job.attempts}/{job.max_attempts}",
        when(moment, "%Y-%m-%d %H:%M:%S"),
        printable(error, 60),
    ]


def _job_dict(job: Job) -> dict[str, Any]:
    data = {name: getattr(job, name) for name in job.__dataclass_fields__}
    data["state"] = job.state.value
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = when(value)
    return data


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        jobs = store.list_jobs(
            state=args.state, type=args.type, queue=args.queue, tag=args.tag, limit=args.limit
        )
    if args.json:
        print_json([_job_dict(job) for job in jobs])
        return 0
    if not jobs:
        print("no jobs match")
        return 0
    print(
        table(["ID", "STATE", "TYPE", "QUEUE", "ATTEMPTS", "WHEN", "LAST ERROR"], [_job_row(j) for j in jobs])
    )
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        job = store.get_job(args.id)
        flow = None if job is None else store.job_flow(job)
    if job is None or flow is None:
        raise CommandError(f"no job #{args.id}")
    if args.json:
        print_json({**_job_dict(job), "flow": flow.to_json()})
        return 0
    data = _job_dict(job)
    for key in ("payload", "result", "progress", "last_error", "tags", "metadata"):
        data.pop(key)
    width = max(len(k) for k in data)
    for key, value in data.items():
        if value in (None, [], "") or (key == "snoozes" and not value):
            continue
        shown = printable(value) if isinstance(value, str) else value
        print(f"{key.replace('_', ' ').ljust(width)}  {shown}")
    if job.tags:
        print(f"{'tags'.ljust(width)}  {', '.join(printable(tag) for tag in job.tags)}")
    if job.metadata:
        print(f"{'metadata'.ljust(width)}  {printable(json.dumps(job.metadata, ensure_ascii=False))}")
    print(f"{'payload'.ljust(width)}  {json.dumps(job.payload, ensure_ascii=False)}")
    if job.result is not None:
        print(f"{'result'.ljust(width)}  {json.dumps(job.result, ensure_ascii=False)}")
    if job.progress is not None:
        print(f"{'progress'.ljust(width)}  {json.dumps(job.progress, ensure_ascii=False)}")
    if job.last_error:
        print("last error:")
        for line in job.last_error.splitlines():
            print(f"  {line}")
    _print_flow(flow)
    return 0


def _print_flow(flow: JobFlow) -> None:
    """The parents, then the descendants nearest first (each after the job it waits on)."""
    if not flow.parents and not flow.descendants:
        return
    rows = [["parent", f"#{p.id}", p.state.value, printable(p.type, 60), ""] for p in flow.parents]
    rows += [
        ["descendant", f"#{d.id}", d.state.value, printable(d.type, 60), f"after #{d.parent_id}"]
        for d in flow.descendants
    ]
    lines = table(["", "JOB", "STATE", "TYPE", ""], rows).splitlines()[1:]
    print("flow:")
    for line in lines[: len(flow.parents)]:
        print(f"  {line}")
    if flow.more_parents:
        print(f"  and {flow.more_parents} more parent(s)")
    for line in lines[len(flow.parents) :]:
        print(f"  {line}")
    if flow.more_descendants:
        at_least = "at least " if flow.capped else ""
        print(f"  and {at_least}{flow.more_descendants} more descendant(s)")


def _report_unmatched(
    store: Store,
    asked: Sequence[int],
    done: Sequence[int],
    verb: str,
    states: str,
    *,
    dead_parents: dict[int, tuple[int, str]] | None = None,
) -> int:
    """Say why each job asked for was not changed; the exit code: 2 when a job was refused
    (it has a failed or cancelled parent: an error line, after the others), 1 when one was not
    in a state that allows it."""
    skipped = list(dict.fromkeys(i for i in asked if i not in set(done)))
    if not skipped:
        return 0
    dead = dead_parents or {}
    known = store.existing_ids(skipped)
    refused = []
    for job in skipped:
        if job in dead:
            parent, state = dead[job]
            refused.append(
                f"{PROG}: error: job #{job} not {verb}: its parent job #{parent} is {state}, so it "
                f"could never run (retry both: {PROG} jobs retry {parent} {job})"
            )
        elif job in known:
            found = store.get_job(job)
            state = found.state.value if found else "gone"
            print(f"job #{job} not {verb}: it is {state} (only {states} jobs can be {verb})", file=sys.stderr)
        else:
            print(f"job #{job} not {verb}: no such job", file=sys.stderr)
    for line in refused:
        print(line, file=sys.stderr)
    return 2 if refused else 1


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    if args.type and not args.all_failed:
        raise CommandError(
            "--type goes with --all-failed: "
            f"`{PROG} jobs retry --all-failed --type {printable(args.type, 40)}`",
            code=2,
        )
    if bool(args.ids) == bool(args.all_failed):
        raise CommandError("give job ids or --all-failed (not both)", code=2)
    with open_store(settings) as store:
        ids = args.ids or store.failed_ids(type=args.type)
        if not ids:
            print("no failed jobs to retry")
            return 0
        requeued = store.retry(ids)
        if requeued:
            print(f"requeued {len(requeued)} job(s): {', '.join(f'#{i}' for i in requeued)}")
        refused = store.dead_parents([i for i in ids if i not in set(requeued)])
        return _report_unmatched(store, ids, requeued, "retried", "failed or cancelled", dead_parents=refused)


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        cancelled = store.cancel(args.ids)
        if cancelled:
            print(f"cancelled {len(cancelled)} job(s): {', '.join(f'#{i}' for i in cancelled)}")
        return _report_unmatched(store, args.ids, cancelled, "cancelled", "blocked, pending or processing")


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    maintenance = apply_flags(args, settings).maintenance
    with open_store(settings) as store:
        result = Maintenance(store, "jobs prune", maintenance.config()).prune(until_done=True)
    print(f"pruned {result.pruned} finished job(s)")
    return 0
