"""The `passito-jobs` command.

Exit codes: 0 success; 1 the operation failed (unknown job id, unhealthy queue, ...);
2 bad input, bad configuration or an unreachable database (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import psycopg

from passito_jobs import logs
from passito_jobs.config import MAX_DURATION, MAX_WORKERS, ConfigError, Settings, parse_duration, parse_list
from passito_jobs.localdb import LocalDatabase, LocalDatabaseError
from passito_jobs.queue import limits
from passito_jobs.queue.conninfo import describe_target, redact
from passito_jobs.queue.dispatch import dispatch
from passito_jobs.queue.limits import printable
from passito_jobs.queue.models import (
    FAR_FUTURE,
    FAR_PAST,
    DatabaseUnavailableError,
    InvalidJobError,
    Job,
    JobState,
)
from passito_jobs.queue.store import Store, connect

log = logging.getLogger("passito_jobs.cli")

PROG = "passito-jobs"


class CommandError(Exception):
    """A command failed in a way the user can act on; `code` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- argument types


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _brief(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _int_between(low: int, high: int) -> Callable[[str], int]:
    """An argument type: a whole number from `low` to `high`."""

    def parse(text: str) -> int:
        value = _int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {_brief(value)}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {_brief(value)}")
        return value

    return parse


MAX_LIST = 1_000_000
MAX_DEMO_JOBS = 1_000_000
MAX_RETENTION_DAYS = int(MAX_DURATION // 86400)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # also a number of more than 4,300 digits
        raise argparse.ArgumentTypeError(f"{_brief(repr(text))} is not a whole number") from None


def _job_id(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"job ids are positive, got {_brief(value)}")
    if value > limits.MAX_JOB_ID:
        raise argparse.ArgumentTypeError(f"job ids are at most {limits.MAX_JOB_ID}, got {_brief(value)}")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(text: str) -> str:
    """Any text that is valid UTF-8 (Python keeps undecodable argument bytes as surrogates)."""
    if _SURROGATE.search(text):
        raise argparse.ArgumentTypeError(f"'{printable(_brief(text))}' is not valid UTF-8 text")
    return text


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0 disables)")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
    except ValueError as exc:  # a number of more than 4,300 digits
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise argparse.ArgumentTypeError(
            f"payload must not be nested more than {limits.MAX_NESTING} levels deep"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object like '{{\"key\": 1}}', got {type(value).__name__}"
        )
    try:  # NaN, 1e999, "\u0000", "\ud800", deep nesting: refused here; the size when dispatched
        limits.encode_payload(value, limits.MAX_PAYLOAD_BYTES_SETTING)
    except InvalidJobError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


# ---------------------------------------------------------------- shared plumbing


def _flag_or_setting(args: argparse.Namespace, settings: Settings, flag: str, setting: str = "") -> Any:
    """A flag's value when given, else the setting behind it (same name unless named)."""
    value = getattr(args, flag)
    return getattr(settings, setting or flag) if value is None else value


def _with_flags(args: argparse.Namespace, settings: Settings, names: Sequence[str]) -> Settings:
    """`settings` with every flag of `names` that was given (flags and settings share names)."""
    return settings.replace(
        **{name: getattr(args, name) for name in names if getattr(args, name) is not None}
    )


def _settings() -> Settings:
    return Settings.from_env()


def _redactor(settings: Settings) -> Callable[[str], str]:
    """Masks the database password in any text: every log line and error message goes through it."""
    url = settings.database_url
    return lambda text: redact(text, url)


def database_url(settings: Settings) -> str:
    """PASSITO_DATABASE_URL, or the embedded PostgreSQL (started if needed) when it is unset."""
    if settings.database_url:
        return settings.database_url
    url = LocalDatabase(settings.data_dir).start()
    log.info(
        "PASSITO_DATABASE_URL is not set: using the embedded PostgreSQL at %s (data in %s)",
        url,
        settings.data_dir / "pgdata",
    )
    return url


@contextlib.contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    """A Store on a connection of its own, closed when the command is done."""
    url = database_url(settings)
    with connect(url, timeout=settings.connect_timeout) as conn:
        yield Store(conn)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def _when(moment: datetime, fmt: str | None = None) -> str:
    """A stored time for people: local time, or infinity for times Python cannot hold."""
    if moment == FAR_FUTURE:
        return "infinity"
    if moment == FAR_PAST:
        return "-infinity"
    if fmt is None:
        return moment.isoformat()
    try:
        return moment.astimezone().strftime(fmt)
    except (OverflowError, ValueError):  # year 9999 in a zone east of UTC
        return moment.strftime(fmt)


# ---------------------------------------------------------------- commands


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        applied = store.migrate()
        if applied:
            for migration in applied:
                print(f"applied {migration.version:04d}_{migration.name}")
        else:
            print(f"schema up to date (migration {store.schema_version():04d})")
    return 0


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
}


def cmd_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    url = database_url(settings)
    with connect(url, timeout=settings.connect_timeout) as conn:
        try:
            job_id = dispatch(
                args.type,
                args.payload,
                queue=args.queue,
                priority=args.priority,
                delay=args.delay,
                depends_on=args.depends_on,
                max_attempts=args.max_attempts,
                unique_key=args.unique_key,
                conn=conn,
            )
        except InvalidJobError as exc:
            message = str(exc)
            flag = next((f for rule, f in _DISPATCH_FLAGS.items() if message.startswith(f"{rule} ")), None)
            raise CommandError(f"argument {flag}: {message}" if flag else message, code=2) from None
    print(job_id)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.worker.cli import run_worker  # noqa: PLC0415 - keeps `dispatch` light

    settings = _with_flags(
        args,
        settings,
        ("queues", "concurrency", "batch_size", "metrics_port", "log_jobs", "shutdown_timeout"),
    )
    if args.imports:
        settings = settings.replace(job_modules=tuple(settings.job_modules) + tuple(args.imports))
    import_job_modules(settings.job_modules)
    return run_worker(settings, database_url(settings))


def import_job_modules(modules: Sequence[str]) -> None:
    """Import the modules that register job types; the current directory is importable."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ConfigError(f"cannot import job module {module!r}: {type(exc).__name__}: {exc}") from None


def _job_row(job: Job) -> list[str]:
    when = job.finished_at or job.run_at
    error = (job.last_error or "").splitlines()[0] if job.last_error else ""
    return [
        str(job.id),
        job.state.value,
        printable(job.type, limits.MAX_NAME_LENGTH),
        printable(job.queue, limits.MAX_NAME_LENGTH),
        f"{job.attempts}/{job.max_attempts}",
        _when(when, "%Y-%m-%d %H:%M:%S"),
        printable(error, 60),
    ]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [header, *rows]
    ]
    return "\n".join(lines)


def _job_dict(job: Job) -> dict[str, Any]:
    data = {name: getattr(job, name) for name in job.__dataclass_fields__}
    data["state"] = job.state.value
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = _when(value)
    return data


def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        jobs = store.list_jobs(state=args.state, type=args.type, queue=args.queue, limit=args.limit)
    if args.json:
        _print_json([_job_dict(job) for job in jobs])
        return 0
    if not jobs:
        print("no jobs match")
        return 0
    print(
        _table(
            ["ID", "STATE", "TYPE", "QUEUE", "ATTEMPTS", "WHEN", "LAST ERROR"],
            [_job_row(job) for job in jobs],
        )
    )
    return 0


def cmd_jobs_show(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        job = store.get_job(args.id)
    if job is None:
        raise CommandError(f"no job #{args.id}")
    if args.json:
        _print_json(_job_dict(job))
        return 0
    data = _job_dict(job)
    for key in ("payload", "result", "progress", "last_error"):
        data.pop(key)
    width = max(len(k) for k in data)
    for key, value in data.items():
        if value in (None, [], ""):
            continue
        shown = printable(value) if isinstance(value, str) else value
        print(f"{key.replace('_', ' ').ljust(width)}  {shown}")
    print(f"{'payload'.ljust(width)}  {json.dumps(job.payload, ensure_ascii=False)}")
    if job.result is not None:
        print(f"{'result'.ljust(width)}  {json.dumps(job.result, ensure_ascii=False)}")
    if job.progress is not None:
        print(f"{'progress'.ljust(width)}  {json.dumps(job.progress, ensure_ascii=False)}")
    if job.last_error:
        print("last error:")
        for line in job.last_error.splitlines():
            print(f"  {line}")
    return 0


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
    (it has a failed or cancelled parent), 1 when one was not in a state that allows it."""
    skipped = list(dict.fromkeys(i for i in asked if i not in set(done)))
    if not skipped:
        return 0
    code = 1
    dead = dead_parents or {}
    known = store.existing_ids(skipped)
    for job_id in skipped:
        if job_id in dead:
            parent, state = dead[job_id]
            print(
                f"job #{job_id} not {verb}: its parent job #{parent} is {state}, so it could never run "
                f"(retry both: {PROG} jobs retry {parent} {job_id})",
                file=sys.stderr,
            )
            code = 2
        elif job_id in known:
            job = store.get_job(job_id)
            state = job.state.value if job else "gone"
            print(
                f"job #{job_id} not {verb}: it is {state} (only {states} jobs can be {verb})",
                file=sys.stderr,
            )
        else:
            print(f"job #{job_id} not {verb}: no such job", file=sys.stderr)
    return code


def cmd_jobs_retry(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.ids) == bool(args.all_failed):
        raise CommandError("give job ids or --all-failed (not both)", code=2)
    if args.type and not args.all_failed:
        raise CommandError("--type goes with --all-failed", code=2)
    with _store(settings) as store:
        ids = args.ids or store.failed_ids(type=args.type)
        if not ids:
            print("no failed jobs to retry")
            return 0
        requeued = store.retry(ids)
        if requeued:
            print(f"requeued {len(requeued)} job(s): {', '.join(f'#{i}' for i in requeued)}")
        refused = store.dead_parents([i for i in ids if i not in set(requeued)])
        return _report_unmatched(store, ids, requeued, "retried", "failed or cancelled", dead_parents=refused)


def cmd_jobs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        cancelled = store.cancel(args.ids)
        if cancelled:
            print(f"cancelled {len(cancelled)} job(s): {', '.join(f'#{i}' for i in cancelled)}")
        return _report_unmatched(store, args.ids, cancelled, "cancelled", "blocked, pending or processing")


def cmd_jobs_prune(args: argparse.Namespace, settings: Settings) -> int:
    keep_completed = settings.keep_completed if args.keep_completed is None else args.keep_completed
    keep_failed = settings.keep_failed if args.keep_failed is None else args.keep_failed
    total = 0
    with _store(settings) as store:
        while True:
            deleted = store.prune(keep_completed, keep_failed, settings.prune_batch_size)
            total += deleted
            if deleted < settings.prune_batch_size:
                break
    print(f"pruned {total} finished job(s)")
    return 0


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    if settings.database_url:
        print(
            f"PASSITO_DATABASE_URL is set ({describe_target(settings.database_url)}); "
            "the embedded PostgreSQL is not used",
            file=sys.stderr,
        )
        return 1 if args.action in {"start", "stop"} else 0
    db = LocalDatabase(settings.data_dir)
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


_SUPERVISE_FLAGS = {
    "minReplicas": "--min-workers",
    "maxReplicas": "--max-workers",
    "scaleUpThreshold": "--scale-up-threshold",
    "scaleDownThreshold": "--scale-down-threshold",
    "cooldownPeriod": "--cooldown",
}


def cmd_supervise(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.supervisor.local import LocalSupervisor  # noqa: PLC0415
    from passito_jobs.supervisor.policy import ScalingPolicy  # noqa: PLC0415

    def pick(name: str) -> Any:
        return _flag_or_setting(args, settings, name)

    try:
        policy = ScalingPolicy(
            min_replicas=pick("min_workers"),
            max_replicas=pick("max_workers"),
            scale_up_threshold=pick("scale_up_threshold"),
            scale_down_threshold=pick("scale_down_threshold"),
            cooldown=pick("cooldown"),
        )
    except ValueError as exc:
        # The policy speaks the WorkerAutoscaler's field names; here the user gave flags.
        message = str(exc)
        for field, flag in _SUPERVISE_FLAGS.items():
            message = message.replace(field, flag)
        raise CommandError(message, code=2) from None
    queues = _flag_or_setting(args, settings, "queues")
    modules = tuple(settings.job_modules) + tuple(args.imports)
    import_job_modules(modules)  # fail here, once, rather than in every worker
    _require_signing_key(settings)
    worker_args = [arg for module in modules for arg in ("--import", module)]
    if args.concurrency:
        worker_args += ["--concurrency", str(args.concurrency)]
    supervisor = LocalSupervisor(
        policy,
        database_url=database_url(settings),
        check_interval=pick("check_interval"),
        queues=queues,
        worker_args=worker_args,
        shutdown_timeout=settings.shutdown_timeout,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return supervisor.run(stop)


def cmd_operator(args: argparse.Namespace, settings: Settings) -> int:
    settings = _with_flags(
        args, settings, ("operator_namespaces", "operator_metrics_port", "operator_liveness_port")
    )
    if not settings.database_url:
        raise CommandError(
            "PASSITO_DATABASE_URL must be set: the operator reads the queue from it "
            "(it never starts an embedded PostgreSQL)",
            code=2,
        )
    from passito_jobs.supervisor.operator import run_operator  # noqa: PLC0415 - kopf is heavy

    logs.setup(
        role="Operator",
        identity=f"{settings.worker_host}:{os.getpid()}",
        level=settings.log_level,
        fmt=settings.log_format,
        redact=_redactor(settings),
    )
    return run_operator(settings)


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.health.checks import HealthCheckError, Thresholds, run_checks  # noqa: PLC0415
    from passito_jobs.health.report import render_text, to_json  # noqa: PLC0415

    def pick(flag: str, setting: str) -> Any:
        return _flag_or_setting(args, settings, flag, setting)

    try:
        thresholds = Thresholds(
            stale_after=pick("stale_after", "health_stale_after"),
            stuck_after=pick("stuck_after", "stuck_timeout"),
            max_failure_rate=pick("max_failure_rate", "health_max_failure_rate"),
            window=pick("window", "health_window"),
        )
    except ValueError as exc:
        raise CommandError(str(exc), code=2) from None
    try:
        with _store(settings) as store:
            report = run_checks(
                store,
                thresholds,
                timeout=settings.health_query_timeout,
                recover=args.recover,
                holder=f"health:{settings.worker_host}:{os.getpid()}",
            )
    except HealthCheckError as exc:
        raise CommandError(str(exc), code=2) from None
    if args.json:
        _print_json(to_json(report))
    else:
        print(render_text(report))
    return 1 if args.exit_code_on_failure and not report.healthy else 0


def cmd_health_serve(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.health.exporter import serve  # noqa: PLC0415

    port = settings.health_port if args.port is None else args.port
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        return serve(settings, database_url(settings), port, stop)
    except OSError as exc:
        raise CommandError(f"cannot serve metrics on port {port}: {exc.strerror or exc}", code=2) from None


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.web.command import run_web  # noqa: PLC0415 - the web extra only when serving

    return run_web(settings, host=args.host, port=args.port, database_url=lambda: database_url(settings))


def cmd_web_hash_password(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.web.command import hash_secret  # noqa: PLC0415

    print(hash_secret(token=args.token))
    return 0


def _failure_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (0.10 is 10%), got {text}")
    return value


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.demo import run_demo  # noqa: PLC0415

    return run_demo(settings, jobs=args.jobs, until_drained=args.until_drained, workers=args.workers)


# ---------------------------------------------------------------- outpass jobs


def _require_signing_key(settings: Settings) -> bytes:
    from passito_jobs.jobs.tokens import signing_key  # noqa: PLC0415

    return signing_key(settings)


def cmd_approval_verify(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.jobs.tokens import PURPOSE_APPROVAL, InvalidTokenError, verify_token  # noqa: PLC0415

    try:
        claims = verify_token(
            args.token, _require_signing_key(settings), purpose=PURPOSE_APPROVAL, decision=args.decision
        )
    except InvalidTokenError as exc:
        raise CommandError(f"invalid token: {exc}") from None
    print(f"{claims.decision} outpass {claims.outpass_id} (valid until {claims.expires_at.isoformat()})")
    return 0


def _read_json_input(source: str) -> Any:
    where = "standard input" if source == "-" else printable(source)
    try:
        if source != "-":
            data = Path(source).read_bytes()
        elif hasattr(sys.stdin, "buffer"):
            data = sys.stdin.buffer.read()
        else:  # a text stream put in place of standard input
            data = sys.stdin.read().encode("utf-8", "surrogateescape")
    except OSError as exc:
        raise CommandError(f"cannot read {where}: {exc.strerror or exc}", code=2) from None
    except ValueError as exc:  # a path with a NUL byte
        raise CommandError(f"cannot read {where}: {exc}", code=2) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CommandError(
            f"{where} is not UTF-8 text (byte {exc.start} cannot be decoded)", code=2
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{where} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", code=2
        ) from None
    except ValueError as exc:  # a number of more than 4,300 digits
        raise CommandError(f"{where} is not valid JSON ({exc})", code=2) from None
    except RecursionError:
        raise CommandError(f"{where} is nested too deeply to be an outpass", code=2) from None


def cmd_outpass_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.jobs.flow import dispatch_outpass_flows  # noqa: PLC0415
    from passito_jobs.jobs.outpass import InvalidOutpassError, Outpass  # noqa: PLC0415

    data = _read_json_input(args.json)
    items = data if isinstance(data, list) else [data]
    outpasses = []
    for index, item in enumerate(items):
        try:
            outpasses.append(Outpass.from_payload(item))
        except InvalidOutpassError as exc:
            where = "" if len(items) == 1 else f"outpass {index}: "
            raise CommandError(f"{where}{exc}", code=2) from None
    if not outpasses:
        raise CommandError("no outpasses in the input (an empty JSON array)", code=2)
    with connect(database_url(settings), timeout=settings.connect_timeout) as conn:
        try:
            flows = dispatch_outpass_flows(outpasses, conn=conn)
        except InvalidJobError as exc:
            raise CommandError(str(exc), code=2) from None
    for flow in flows:
        line = (
            f"outpass {flow.outpass_id}: GenerateQrCode #{flow.qr_code}, GenerateOutpassPdf #{flow.pdf}, "
            f"SendOutpassEmail #{flow.student_email}"
        )
        if flow.parent_approval is not None:
            line += f", SendParentApproval #{flow.parent_approval}"
        print(line)
    return 0


def cmd_cleanup_expired_files(args: argparse.Namespace, settings: Settings) -> int:
    payload: dict[str, Any] = {"dry_run": args.dry_run}
    if args.retention_days is not None:
        payload["retention_days"] = args.retention_days
    with connect(database_url(settings), timeout=settings.connect_timeout) as conn:
        # One sweep at a time: while one is unfinished, a second CronJob run gets its id.
        job_id = dispatch(
            "CleanupExpiredFiles", payload, queue="maintenance", unique_key="CleanupExpiredFiles", conn=conn
        )
    print(job_id)
    return 0


# ---------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line (and exit code 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Postgres-backed job queue, workers and autoscaling for Passito.",
        epilog="Settings come from PASSITO_* environment variables (docs/configuration.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("migrate", help="install or upgrade the queue schema (safe to run concurrently)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("dispatch", help="dispatch one job and print its id")
    p.add_argument("type", metavar="TYPE", help="job type, e.g. GenerateQrCode")
    p.add_argument(
        "--payload",
        type=_json_object,
        default={},
        metavar="JSON",
        help="the job's payload, a JSON object (default {})",
    )
    p.add_argument("--queue", default="default", help="queue name (default: default)")
    p.add_argument(
        "--priority",
        type=_int_between(limits.MIN_PRIORITY, limits.MAX_PRIORITY),
        default=0,
        help="higher runs first (default 0)",
    )
    p.add_argument(
        "--delay",
        type=_non_negative_seconds,
        default=None,
        metavar="SECONDS",
        help="run no earlier than this many seconds from now",
    )
    p.add_argument(
        "--depends-on",
        type=_job_id,
        nargs="+",
        default=[],
        metavar="ID",
        help="parent job ids: run only after all of them completed",
    )
    p.add_argument(
        "--max-attempts",
        type=_int_between(1, limits.MAX_ATTEMPTS),
        default=3,
        metavar="N",
        help=f"attempts before the job fails for good (default 3, at most {limits.MAX_ATTEMPTS})",
    )
    p.add_argument(
        "--unique-key",
        default=None,
        metavar="KEY",
        help="while an unfinished job has this key, print its id instead",
    )
    p.set_defaults(func=cmd_dispatch)

    p = sub.add_parser("worker", help="run a worker process")
    p.add_argument(
        "--queues",
        type=parse_list,
        default=None,
        metavar="A,B",
        help="queues to take jobs from (default: all; PASSITO_QUEUES)",
    )
    p.add_argument(
        "--concurrency",
        type=_int_between(1, MAX_WORKERS),
        default=None,
        metavar="N",
        help="jobs run at once (PASSITO_CONCURRENCY, default 10)",
    )
    p.add_argument(
        "--batch-size",
        type=_int_between(1, limits.MAX_CLAIM_BATCH),
        default=None,
        metavar="N",
        help="most jobs claimed per round trip (PASSITO_BATCH_SIZE, default 100)",
    )
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module that registers job types (repeatable; PASSITO_JOB_MODULES)",
    )
    p.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="HTTP port for /metrics, /healthz, /readyz; 0 disables (PASSITO_METRICS_PORT, 9100)",
    )
    p.add_argument(
        "--log-jobs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log a line per job start and end (PASSITO_LOG_JOBS, default on)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="on SIGTERM, time for in-flight jobs to finish (PASSITO_SHUTDOWN_TIMEOUT, 30s)",
    )
    p.set_defaults(func=cmd_worker)

    jobs = sub.add_parser("jobs", help="inspect and manage jobs")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION", parser_class=_Parser)
    p = jsub.add_parser("list", help="list jobs, newest first")
    p.add_argument("--state", "--status", dest="state", choices=[s.value for s in JobState])
    p.add_argument("--type", type=_text)
    p.add_argument("--queue", type=_text)
    p.add_argument("--limit", type=_int_between(1, MAX_LIST), default=50)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_jobs_list)
    p = jsub.add_parser("show", help="show one job")
    p.add_argument("id", type=_job_id)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_jobs_show)
    p = jsub.add_parser("retry", help="requeue failed or cancelled jobs with attempts reset")
    p.add_argument("ids", type=_job_id, nargs="*", metavar="ID")
    p.add_argument("--all-failed", action="store_true", help="every failed job (the dead-letter set)")
    p.add_argument("--type", type=_text, help="with --all-failed: only this job type")
    p.set_defaults(func=cmd_jobs_retry)
    p = jsub.add_parser("cancel", help="cancel blocked, pending or processing jobs")
    p.add_argument("ids", type=_job_id, nargs="+", metavar="ID")
    p.set_defaults(func=cmd_jobs_cancel)
    p = jsub.add_parser("prune", help="delete finished jobs older than their retention")
    p.add_argument(
        "--keep-completed",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="PASSITO_KEEP_COMPLETED (default 7d)",
    )
    p.add_argument(
        "--keep-failed",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="PASSITO_KEEP_FAILED (default 30d)",
    )
    p.set_defaults(func=cmd_jobs_prune)

    p = sub.add_parser("supervise", help="run local worker processes scaled to the queue")
    p.add_argument(
        "--min-workers",
        type=_int_between(0, MAX_WORKERS),
        default=None,
        metavar="N",
        help="fewest workers, 0 allowed (PASSITO_MIN_WORKERS, default 1)",
    )
    p.add_argument(
        "--max-workers",
        type=_int_between(1, MAX_WORKERS),
        default=None,
        metavar="N",
        help="most workers (PASSITO_MAX_WORKERS, default 10)",
    )
    p.add_argument(
        "--scale-up-threshold",
        type=_positive_float,
        default=None,
        metavar="JOBS",
        help="jobs per worker above which workers are added (default 5)",
    )
    p.add_argument(
        "--scale-down-threshold",
        type=_non_negative_seconds,
        default=None,
        metavar="JOBS",
        help="jobs per worker below which workers are stopped (default 2)",
    )
    p.add_argument(
        "--check-interval",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="time between load checks (PASSITO_CHECK_INTERVAL, default 10s)",
    )
    p.add_argument(
        "--cooldown",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="least time between a scale and a scale-down (PASSITO_COOLDOWN, default 60s)",
    )
    p.add_argument(
        "--queues",
        type=parse_list,
        default=None,
        metavar="A,B",
        help="queues to count and to work on (default: all)",
    )
    p.add_argument(
        "--concurrency",
        type=_int_between(1, MAX_WORKERS),
        default=None,
        metavar="N",
        help="jobs each worker runs at once (PASSITO_CONCURRENCY)",
    )
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="module that registers job types, passed to each worker (repeatable)",
    )
    p.set_defaults(func=cmd_supervise)

    p = sub.add_parser(
        "operator",
        help="run the Kubernetes operator that scales worker Deployments (WorkerAutoscaler)",
        description="Scales each WorkerAutoscaler's Deployment to the queue (docs/scaling.md). "
        "Runs as a single replica; needs PASSITO_DATABASE_URL.",
    )
    p.add_argument(
        "--namespaces",
        dest="operator_namespaces",
        type=parse_list,
        default=None,
        metavar="A,B",
        help="namespaces to serve (default: all; PASSITO_OPERATOR_NAMESPACES)",
    )
    p.add_argument(
        "--metrics-port",
        dest="operator_metrics_port",
        type=_port,
        default=None,
        metavar="PORT",
        help="Prometheus /metrics port, 0 disables (PASSITO_OPERATOR_METRICS_PORT, 9102)",
    )
    p.add_argument(
        "--liveness-port",
        dest="operator_liveness_port",
        type=_port,
        default=None,
        metavar="PORT",
        help="liveness probe /healthz port, 0 disables (PASSITO_OPERATOR_LIVENESS_PORT, 8080)",
    )
    p.set_defaults(func=cmd_operator)

    p = sub.add_parser(
        "health",
        help="check the queue (stale, stuck, failure rate); `health serve` exports queue metrics",
        description="Check stale pending jobs, stuck processing jobs and the failure rate, and print "
        "a report. Exit 0 (1 with --exit-code-on-failure when unhealthy); 2 when the database "
        "cannot be checked.",
    )
    p.add_argument("--json", action="store_true", help="print JSON with a per-queue breakdown")
    p.add_argument(
        "--stale-after",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="ready but not started for this long is stale (PASSITO_HEALTH_STALE_AFTER, default 5m)",
    )
    p.add_argument(
        "--stuck-after",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="processing without a heartbeat for this long is stuck (PASSITO_STUCK_TIMEOUT, default 60s)",
    )
    p.add_argument(
        "--max-failure-rate",
        type=_failure_rate,
        default=None,
        metavar="RATIO",
        help="highest healthy failed/finished ratio (PASSITO_HEALTH_MAX_FAILURE_RATE, default 0.10)",
    )
    p.add_argument(
        "--window",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="history the failure rate covers (PASSITO_HEALTH_WINDOW, default 1h)",
    )
    p.add_argument(
        "--recover",
        action="store_true",
        help="return stuck jobs to pending (as the workers' rescue does)",
    )
    p.add_argument(
        "--exit-code-on-failure",
        action="store_true",
        help="exit 1 when the queue is unhealthy (for a CronJob)",
    )
    p.set_defaults(func=cmd_health)
    hsub = p.add_subparsers(dest="health_command", metavar="[serve]", parser_class=_Parser)
    s = hsub.add_parser("serve", help="serve queue gauges for Prometheus on /metrics")
    s.add_argument(
        "--port",
        type=_port,
        default=None,
        metavar="PORT",
        help="HTTP port for /metrics, /healthz, /readyz; 0 picks a free one (PASSITO_HEALTH_PORT, 9101)",
    )
    s.set_defaults(func=cmd_health_serve)

    p = sub.add_parser(
        "web",
        help="serve the operations dashboard and JSON admin API (docs/dashboard.md)",
        description="The dashboard (/) and the admin API (/api/v1). Without PASSITO_WEB_AUTH it "
        "listens on loopback only.",
    )
    p.add_argument(
        "--host", type=_text, default=None, help="address to listen on (PASSITO_WEB_HOST, 127.0.0.1)"
    )
    p.add_argument("--port", type=_port, default=None, help="0 picks a free one (PASSITO_WEB_PORT, 8080)")
    p.set_defaults(func=cmd_web)
    wsub = p.add_subparsers(dest="web_command", metavar="[hash-password]", parser_class=_Parser)
    s = wsub.add_parser(
        "hash-password",
        help="read a password from standard input; print its argon2 hash for PASSITO_WEB_USERS_FILE",
    )
    s.add_argument("--token", action="store_true", help="hash a bearer token for PASSITO_WEB_TOKENS_FILE")
    s.set_defaults(func=cmd_web_hash_password)

    p = sub.add_parser("db", help="the embedded PostgreSQL used when PASSITO_DATABASE_URL is unset")
    p.add_argument("action", choices=["start", "stop", "url"])
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("demo", help="run the system locally with a demo workload (`make run`)")
    p.add_argument(
        "--jobs",
        type=_int_between(1, MAX_DEMO_JOBS),
        default=200,
        help="sample outpasses to dispatch, 3-4 jobs each (default 200)",
    )
    p.add_argument(
        "--workers", type=_int_between(1, MAX_WORKERS), default=4, help="most worker processes (default 4)"
    )
    p.add_argument("--until-drained", action="store_true", help="exit 0 once every demo job is done")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("outpass", help="dispatch the jobs of outpasses (QR code, PDF, emails)")
    osub = p.add_subparsers(dest="outpass_command", required=True, metavar="ACTION", parser_class=_Parser)
    p = osub.add_parser(
        "dispatch",
        help="dispatch QR code -> PDF -> email (+ parent approval) for each outpass, in one transaction",
    )
    p.add_argument(
        "--json",
        required=True,
        metavar="FILE",
        help="a JSON outpass object or an array of them (docs/jobs.md); - reads standard input",
    )
    p.set_defaults(func=cmd_outpass_dispatch)

    p = sub.add_parser("approval", help="parent-approval tokens")
    asub = p.add_subparsers(dest="approval_command", required=True, metavar="ACTION", parser_class=_Parser)
    p = asub.add_parser("verify", help="print a token's decision, or why it is invalid (exit 1)")
    p.add_argument("token", metavar="TOKEN")
    p.add_argument("--decision", choices=["approve", "deny"], default=None, help="also require this decision")
    p.set_defaults(func=cmd_approval_verify)

    p = sub.add_parser(
        "cleanup-expired-files",
        help="dispatch CleanupExpiredFiles and print its job id (the cleanup CronJob's command)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the expired files in the result, delete none")
    p.add_argument(
        "--retention-days",
        type=_int_between(1, MAX_RETENTION_DAYS),
        default=None,
        metavar="DAYS",
        help="delete files older than this (PASSITO_FILE_RETENTION_DAYS, default 30)",
    )
    p.set_defaults(func=cmd_cleanup_expired_files)
    return parser


def _fail(message: str, code: int) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure the user can cause ends in one line and exit code 1 or 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings()
    except ConfigError as exc:
        _fail(str(exc), 2)
    identity = f"{settings.worker_host}:{os.getpid()}"
    roles = {"worker": "Worker", "supervise": "Supervisor", "health": "Health", "web": "Dashboard"}
    role = roles.get(args.command, "passito-jobs")
    masked = _redactor(settings)
    logs.setup(role=role, identity=identity, level=settings.log_level, fmt=settings.log_format, redact=masked)
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    try:
        return func(args, settings)
    except CommandError as exc:
        _fail(masked(str(exc)), exc.code)
    except (ConfigError, InvalidJobError, DatabaseUnavailableError, LocalDatabaseError) as exc:
        _fail(masked(str(exc)), 2)
    except psycopg.OperationalError as exc:  # the connection broke during the command
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _fail(masked(f"lost the database connection: {first}"), 2)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `passito-jobs jobs list | head`: stop quietly.
        sys.stderr.close()
        return 0
