"""The `passito-jobs` command: the parser assembled from one module per command family, the
settings, logging and signals set up once, and every failure mapped to an exit code.

Exit codes: 0 success; 1 the operation failed (unknown job id, unhealthy queue, ...);
2 bad input, bad configuration or an unreachable database (one line on stderr, no traceback).

Each command family's parsers sit next to their handlers (`add_commands(sub)` in queue.py,
queues.py, jobs.py, worker.py, operator.py, health.py, web.py, db.py, demo.py). A plug-in
contributes commands the same way (`PLUGIN_COMMANDS`): Passito's module is imported only when
one of its commands runs, so the engine's commands never load it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from passito_jobs import logs
from passito_jobs.cli.options import PROG, CommandError, open_store
from passito_jobs.config import Settings
from passito_jobs.localdb import LocalDatabaseError
from passito_jobs.queue.conninfo import Redactor
from passito_jobs.queue.errors import QueueError, SchemaMissingError
from passito_jobs.queue.limits import printable
from passito_jobs.queue.migrate import schema_problem
from passito_jobs.settings import ConfigError, FieldError

__all__ = ["PROG", "CommandError", "build_parser", "main", "stop_on_signals"]

log = logging.getLogger("passito_jobs.cli")

COMMAND_MODULES = (
    "passito_jobs.cli.queue",
    "passito_jobs.cli.queues",
    "passito_jobs.cli.worker",
    "passito_jobs.cli.jobs",
    "passito_jobs.cli.schedules",
    "passito_jobs.cli.operator",
    "passito_jobs.cli.health",
    "passito_jobs.cli.web",
    "passito_jobs.cli.db",
    "passito_jobs.cli.demo",
)
PLUGIN_COMMANDS = {
    "outpass": ("passito_jobs.outpass.commands", "dispatch the jobs of outpasses (QR code, PDF, emails)"),
    "approval": ("passito_jobs.outpass.commands", "parent-approval tokens"),
    "cleanup-expired-files": (
        "passito_jobs.outpass.commands",
        "dispatch CleanupExpiredFiles and print its job id (the cleanup CronJob's command)",
    ),
}
"""Commands of plug-ins: name -> (module with `add_command(sub, name)`, help)."""
ROLES = {
    "worker": "Worker",
    "supervise": "Supervisor",
    "health": "Health",
    "operator": "Operator",
    "web": "Dashboard",
}
"""The log prefix of each long-running command: `[Worker host:pid][INFO] ...`."""

Handler = Callable[[argparse.Namespace, Settings], int]


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line (and exit code 2), not a usage dump, and point at the help of
    the command they are about."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Commands)

    def error(self, message: str) -> NoReturn:
        # printable: an argument argparse quotes may hold a line break (`-\x1e`) or an escape sequence.
        self.exit(2, f"{self.prog}: error: {printable(message)} (see `{self.prog} --help`)\n")


class _Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands whose one-line help is also their description (`COMMAND --help` says what
    it does), and whose unknown arguments are reported by the subcommand that got them."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if kwargs.get("help") and "description" not in kwargs:
            text = str(kwargs["help"])
            kwargs["description"] = text[0].upper() + text[1:] + "."
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        return parser

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        super().__call__(parser, namespace, values, option_string)
        unknown = getattr(namespace, argparse._UNRECOGNIZED_ARGS_ATTR, None)
        if unknown:
            self._name_parser_map[values[0]].error(f"unrecognized arguments: {' '.join(unknown)}")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The whole parser. A plug-in's commands are loaded when `argv` runs one of them; otherwise
    they are listed by name and help only."""
    parser = _Parser(
        prog=PROG,
        description="Postgres-backed job queue, workers and autoscaling for Passito.",
        epilog="Settings come from PASSITO_* environment variables (docs/configuration.md).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module, help_text) in PLUGIN_COMMANDS.items():
        if name == chosen:
            importlib.import_module(module).add_command(sub, name)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("passito-jobs")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree without installing
        return "(not installed)"


def stop_on_signals(first: Callable[[int], None], second: Callable[[int], None] | None = None) -> None:
    """On SIGTERM or SIGINT call `first`; on a second signal call `second` (default `first`)."""
    seen = 0

    def on_signal(signum: int, frame: object) -> None:
        nonlocal seen
        seen += 1
        (first if seen == 1 or second is None else second)(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)


def _fail(message: str, code: int) -> NoReturn:
    # printable: the one line stays one line whatever value it quotes (`web --host $'a\nb'`).
    print(f"{PROG}: error: {printable(message)}", file=sys.stderr)
    sys.exit(code)


def _schema_line(settings: Settings, exc: SchemaMissingError) -> str:
    """What is wrong with the schema, in one line: the database is asked, since a missing
    table or function may mean "not installed" or "older than this code"."""
    try:
        with open_store(settings) as store:
            return schema_problem(store.schema_version()) or str(exc)
    except (QueueError, LocalDatabaseError):
        return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure the user can cause ends in one line and exit code 1 or 2."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(arguments).parse_args(arguments)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        _fail(str(exc), 2)
    masked = Redactor(settings.database.url)
    logs.setup(
        role=ROLES.get(args.command, PROG),
        instance=f"{settings.worker.name}:{os.getpid()}",
        level=settings.logging.level,
        fmt=settings.logging.format,
        redact=masked,
    )
    for warning in settings.warnings:
        log.warning(warning)
    handler: Handler = args.func
    try:
        return handler(args, settings)
    except CommandError as exc:
        _fail(masked(str(exc)), exc.code)
    except SchemaMissingError as exc:  # before `migrate`, whichever command ran
        _fail(masked(_schema_line(settings, exc)), 2)
    except (FieldError, QueueError, LocalDatabaseError) as exc:  # ConfigError is a FieldError
        _fail(masked(str(exc)), 2)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `passito-jobs jobs list | head`: stop quietly.
        sys.stderr.close()
        return 0
