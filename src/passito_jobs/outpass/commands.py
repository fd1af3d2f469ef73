"""Passito's commands of `passito-jobs`: `outpass dispatch`, `approval verify` and
`cleanup-expired-files`. The CLI loads this module only when one of them runs
(cli.PLUGIN_COMMANDS), so the engine's commands never import Passito's package."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from passito_jobs.cli.options import CommandError, connection, int_between
from passito_jobs.config import Settings
from passito_jobs.outpass.settings import MAX_FILE_RETENTION_DAYS, OutpassSettings
from passito_jobs.queue import limits
from passito_jobs.queue.dispatch import dispatch
from passito_jobs.queue.errors import InvalidJobError
from passito_jobs.queue.limits import printable
from passito_jobs.queue.models import Job, JobState
from passito_jobs.queue.store import Store

MAX_INPUT_BYTES = 16 * 1024 * 1024
"""The most `outpass dispatch --json` reads: tens of thousands of outpasses (one is at most a
few KiB), dispatched in one transaction. Beyond it the input is refused rather than read
without end (`--json /dev/zero`)."""


def add_command(sub: Any, name: str) -> None:
    """Add the command `name` (one of cli.PLUGIN_COMMANDS) to the subparsers `sub`."""
    {"outpass": _add_outpass, "approval": _add_approval, "cleanup-expired-files": _add_cleanup}[name](sub)


def _add_outpass(sub: Any) -> None:
    p = sub.add_parser("outpass", help="dispatch the jobs of outpasses (QR code, PDF, emails)")
    osub = p.add_subparsers(dest="outpass_command", required=True, metavar="ACTION", parser_class=type(p))
    p = osub.add_parser(
        "dispatch",
        help="dispatch QR code -> PDF -> email (+ parent approval) for each outpass, in one transaction",
    )
    p.add_argument(
        "--json",
        required=True,
        metavar="FILE",
        help=(
            "a JSON outpass object or an array of them (docs/jobs.md), at most "
            f"{MAX_INPUT_BYTES // (1024 * 1024)} MiB; - reads standard input"
        ),
    )
    p.set_defaults(func=cmd_outpass_dispatch)


def _add_approval(sub: Any) -> None:
    p = sub.add_parser("approval", help="parent-approval tokens")
    asub = p.add_subparsers(dest="approval_command", required=True, metavar="ACTION", parser_class=type(p))
    p = asub.add_parser("verify", help="print a token's decision, or why it is invalid (exit 1)")
    p.add_argument("token", metavar="TOKEN", help="the token from the approval link")
    p.add_argument(
        "--decision",
        choices=["approve", "deny"],
        default=None,
        help="also require this decision (default: either)",
    )
    p.set_defaults(func=cmd_approval_verify)


def _add_cleanup(sub: Any) -> None:
    p = sub.add_parser(
        "cleanup-expired-files",
        help="dispatch CleanupExpiredFiles and print its job id (the cleanup CronJob's command)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the expired files in the result, delete none")
    p.add_argument(
        "--retention-days",
        type=int_between(1, MAX_FILE_RETENTION_DAYS),
        default=None,
        metavar="DAYS",
        help=(
            "delete files older than this (default: PASSITO_FILE_RETENTION_DAYS when it is set for "
            "this command, else the worker's PASSITO_FILE_RETENTION_DAYS, 30 unless set)"
        ),
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="when a pending sweep has other options, cancel it and dispatch this one",
    )
    p.set_defaults(func=cmd_cleanup_expired_files)


def cmd_approval_verify(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.outpass.tokens import (  # noqa: PLC0415
        PURPOSE_APPROVAL,
        InvalidTokenError,
        signing_key,
        verify_token,
    )

    key = signing_key(OutpassSettings.from_env())
    try:
        claims = verify_token(args.token, key, purpose=PURPOSE_APPROVAL, decision=args.decision)
    except InvalidTokenError as exc:
        raise CommandError(f"invalid token: {exc}") from None
    # printable: a token signed with the development key may carry any text as the outpass id.
    shown = printable(claims.outpass_id)
    print(f"{claims.decision} outpass {shown} (valid until {claims.expires_at.isoformat()})")
    return 0


def _read_json_input(source: str) -> Any:
    if not source:  # Path("") is the current directory
        raise CommandError("--json: the path is empty (give a file, or - for standard input)", code=2)
    where = "standard input" if source == "-" else printable(source, 200)
    limit = MAX_INPUT_BYTES + 1  # one byte more tells a file of exactly the limit from a larger one
    try:
        if source != "-":
            with Path(source).open("rb") as file:
                data = file.read(limit)
        elif hasattr(sys.stdin, "buffer"):
            data = sys.stdin.buffer.read(limit)
        else:  # a text stream put in place of standard input
            data = sys.stdin.read(limit).encode("utf-8", "surrogateescape")
    except OSError as exc:
        raise CommandError(f"cannot read {where}: {exc.strerror or exc}", code=2) from None
    except ValueError as exc:  # a path with a NUL byte
        raise CommandError(f"cannot read {where}: {exc}", code=2) from None
    if len(data) > MAX_INPUT_BYTES:
        raise CommandError(
            f"{where} is larger than {MAX_INPUT_BYTES} bytes ({MAX_INPUT_BYTES // (1024 * 1024)} MiB): "
            "split the outpasses into several runs",
            code=2,
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CommandError(
            f"{where} is not UTF-8 text (byte {exc.start} cannot be decoded)", code=2
        ) from None
    try:
        return limits.load_json(text)
    except limits.RepeatedKeyError as exc:
        raise CommandError(f"{where}: {exc}", code=2) from None
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{where} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", code=2
        ) from None
    except ValueError as exc:  # a number of more than 4,300 digits
        raise CommandError(f"{where} is not valid JSON ({exc})", code=2) from None
    except RecursionError:
        raise CommandError(f"{where} is nested too deeply to be an outpass", code=2) from None


def cmd_outpass_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.outpass.flow import dispatch_outpass_flows  # noqa: PLC0415
    from passito_jobs.outpass.model import InvalidOutpassError, Outpass  # noqa: PLC0415

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
    with connection(settings) as conn:
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


def _retention_days(args: argparse.Namespace) -> int | None:
    """--retention-days, else PASSITO_FILE_RETENTION_DAYS when this command's environment sets
    it; None: the worker's setting decides. The variable, when set, is checked by the worker's
    rules even under the flag (a bad value is a ConfigError, exit 2), as every setting is."""
    variable = OutpassSettings.env_name("file_retention_days")
    given = None
    if variable in os.environ:
        given = OutpassSettings.from_env({variable: os.environ[variable]}).file_retention_days
    return given if args.retention_days is None else int(args.retention_days)


def cmd_cleanup_expired_files(args: argparse.Namespace, settings: Settings) -> int:
    payload: dict[str, Any] = {"dry_run": args.dry_run}
    retention_days = _retention_days(args)
    if retention_days is not None:
        payload["retention_days"] = retention_days
    with connection(settings) as conn, conn.transaction():
        # One sweep at a time: while one is unfinished, a second CronJob run gets its id.
        job = _dispatch_sweep(conn, payload)
        unfinished = Store(conn).get_job(job)
        if unfinished is not None and unfinished.payload != payload:
            if not args.replace or unfinished.state != JobState.PENDING:
                raise CommandError(_other_sweep(unfinished, args.replace))
            Store(conn).cancel([job])
            job = _dispatch_sweep(conn, payload)
    print(job)
    return 0


def _dispatch_sweep(conn: Any, payload: dict[str, Any]) -> int:
    return dispatch(
        "CleanupExpiredFiles", payload, queue="maintenance", unique_key="CleanupExpiredFiles", conn=conn
    )


def _other_sweep(job: Job, replace: bool) -> str:
    options = json.dumps(job.payload, sort_keys=True, ensure_ascii=False)
    if replace:
        return f"cleanup sweep #{job.id} {options} is already {job.state.value}: wait for it to finish"
    return (
        f"a cleanup sweep with other options is {job.state.value}: #{job.id} {options}; "
        "these options were not applied (--replace cancels it and dispatches this one)"
    )
