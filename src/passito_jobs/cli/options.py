"""What the commands share: argument types, flags that override settings, and plumbing.

A `Flag` overrides one settings field (`group`, `field` of config.Settings). Its help text ends
with the variable and the default, both read from the field's declaration, so the two never
disagree; `apply_flags` puts the given flags into the settings and validates them, and a
problem is reported with the flag's spelling (`--concurrency must be at least 1`).
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import dataclasses
import importlib
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from passito_jobs.config import Settings, group_class, shown_default
from passito_jobs.config import database_url as resolve_database_url
from passito_jobs.queue import limits
from passito_jobs.queue.connection import Conn, connect
from passito_jobs.queue.errors import InvalidJobError
from passito_jobs.queue.limits import printable
from passito_jobs.queue.migrate import schema_problem
from passito_jobs.queue.models import FAR_FUTURE, FAR_PAST
from passito_jobs.queue.store import Store
from passito_jobs.settings import ConfigError, FieldError, parse_duration

log = logging.getLogger("passito_jobs.cli")

PROG = "passito-jobs"
MAX_LIST = 1_000_000
_SURROGATE = re.compile("[\ud800-\udfff]")


class CommandError(Exception):
    """A command failed in a way the user can act on; `code` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- argument types


def brief(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # also a number of more than 4,300 digits
        raise argparse.ArgumentTypeError(f"{brief(repr(text))} is not a whole number") from None


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argument type: a whole number from `low` to `high`."""

    def parse(text: str) -> int:
        value = whole_number(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {brief(value)}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {brief(value)}")
        return value

    return parse


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def non_negative_number(text: str) -> float:
    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def positive_number(text: str) -> float:
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:  # NaN too
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (0.10 is 10%), got {text}")
    return value


def job_id(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"job ids are positive, got {brief(value)}")
    if value > limits.MAX_JOB_ID:
        raise argparse.ArgumentTypeError(f"job ids are at most {limits.MAX_JOB_ID}, got {brief(value)}")
    return value


def utf8_text(text: str) -> str:
    """Any text that is valid UTF-8 (Python keeps undecodable argument bytes as surrogates)."""
    if _SURROGATE.search(text):
        raise argparse.ArgumentTypeError(f"'{printable(brief(text))}' is not valid UTF-8 text")
    return text


def port(text: str) -> int:
    """A TCP port or 0, which each flag's help explains (web and health serve pick a free port,
    the worker and the operator serve nothing): the message says only the range."""
    value = whole_number(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{brief(value)} is not a port number (0 to 65535)")
    return value


def names(text: str) -> tuple[str, ...]:
    """`a, b,` -> ('a', 'b')."""
    return tuple(item.strip() for item in utf8_text(text).split(",") if item.strip())


def _parsed_object(text: str, what: str) -> dict[str, Any]:
    # Bytes of the argument that are not UTF-8, unlike a "\\ud800" escape in the JSON (a lone
    # surrogate, which the payload rules name).
    utf8_text(text)
    try:
        value = limits.load_json(text)
    except limits.RepeatedKeyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
    except ValueError as exc:  # a number of more than 4,300 digits
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise argparse.ArgumentTypeError(
            f"{what} must not be nested more than {limits.MAX_NESTING} levels deep"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object like '{{\"key\": 1}}', got {type(value).__name__}"
        )
    return value


def json_object(text: str) -> dict[str, Any]:
    value = _parsed_object(text, "payload")
    try:  # NaN, 1e999, "\u0000", "\ud800", deep nesting: refused here; the size when dispatched
        limits.encode_payload(value, limits.MAX_PAYLOAD_BYTES_SETTING)
    except InvalidJobError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def metadata_object(text: str) -> dict[str, Any]:
    """A job's metadata: a JSON object by the rules of limits.encode_metadata."""
    value = _parsed_object(text, "metadata")
    try:
        limits.encode_metadata(value)
    except InvalidJobError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


class DeprecatedFlag(argparse.Action):
    """An old spelling of a flag: it still works, with a one-line warning on stderr."""

    def __init__(self, *args: Any, use: str, **kwargs: Any) -> None:
        self.use = use
        super().__init__(*args, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option: str | None = None,
    ) -> None:
        print(
            f"{PROG}: warning: {option} is deprecated and will be removed in the next release: "
            f"use {self.use}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


# ---------------------------------------------------------------- flags that override settings

_FLAG_OF: dict[str, str] = {}  # "group.field" -> the flag that sets it


@dataclass(frozen=True)
class Flag:
    """A command-line flag that overrides `Settings.<group>.<field>`."""

    flag: str
    group: str
    field: str
    help: str
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    action: builtins.type[argparse.Action] | str | None = None

    @property
    def dest(self) -> str:
        return f"{self.group}.{self.field}"

    def declaration(self) -> dataclasses.Field[Any]:
        kind = group_class(self.group)
        return next(spec for spec in dataclasses.fields(kind) if spec.name == self.field)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        spec = self.declaration()
        _FLAG_OF[self.dest] = self.flag
        help_text = f"{self.help} ({spec.metadata['env']}, default {shown_default(spec)})"
        options: dict[str, Any] = {"dest": self.dest, "default": None, "help": help_text}
        if self.action is not None:
            options["action"] = self.action
        else:
            options.update(type=self.type, metavar=self.metavar)
        parser.add_argument(self.flag, **options)


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    for flag in flags:
        flag.add_to(parser)


def given_flags(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The setting flags given on the command line, by group: {"worker": {"concurrency": 4}}."""
    found: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            group, field = dest.split(".", 1)
            found.setdefault(group, {})[field] = value
    return found


def apply_flags(args: argparse.Namespace, settings: Settings) -> Settings:
    """`settings` with the flags given in `args`, validated; a problem names the flag."""
    given = given_flags(args)
    try:
        groups = {name: getattr(settings, name).replace(**changes) for name, changes in given.items()}
        return settings.replace(**groups)
    except ConfigError as exc:
        raise ConfigError(spelled_for(exc, given)) from None


def spelled_for(error: FieldError, given: dict[str, dict[str, Any]]) -> str:
    """The error with each field spelled as the user gave it: the flag, else the variable."""
    flagged = {field: _FLAG_OF.get(f"{group}.{field}") for group, fields in given.items() for field in fields}
    spelled = getattr(error, "spelled", {})
    return error.render(lambda name: flagged.get(name) or spelled.get(name) or name)


def spelling(given: dict[str, dict[str, Any]], group: str, spelled: dict[str, str]) -> Callable[[str], str]:
    """How to name a field of `group`: its flag when one was given, else its variable."""

    def spell(field: str) -> str:
        if field in given.get(group, {}):
            return _FLAG_OF.get(f"{group}.{field}", field)
        return spelled.get(field, field)

    return spell


# ---------------------------------------------------------------- plumbing


def database_url(settings: Settings) -> str:
    """PASSITO_DATABASE_URL, or the embedded PostgreSQL (started if needed) when it is unset."""
    if settings.database.url:
        return settings.database.url
    data_dir = settings.local_database.data_dir
    url = resolve_database_url(settings.database, settings.local_database)
    log.info(
        "PASSITO_DATABASE_URL is not set: using the embedded PostgreSQL at %s (data in %s)",
        url,
        data_dir / "pgdata",
    )
    return url


def connection(settings: Settings) -> Conn:
    database = settings.database
    return connect(database_url(settings), timeout=database.connect_timeout, prepare=database.prepare)


@contextlib.contextmanager
def open_store(settings: Settings) -> Iterator[Store]:
    """A Store on a connection of its own, closed when the command is done."""
    with connection(settings) as conn:
        yield Store(conn)


def require_schema(settings: Settings) -> None:
    """Stop with one line (exit 2) unless the database answers within the connect timeout and
    has the schema this code needs: for commands that would otherwise start processes that fail."""
    with open_store(settings) as store:
        problem = schema_problem(store.schema_version())
    if problem:
        raise CommandError(problem, code=2)


def import_job_modules(modules: Sequence[str]) -> None:
    """Import the modules that register job types; the current directory is importable."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ConfigError(f"cannot import job module {module!r}: {type(exc).__name__}: {exc}") from None


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def table(header: list[str], rows: list[list[str]]) -> str:
    """Rows in columns under a header, for `jobs list` and `schedules list`."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [header, *rows]
    ]
    return "\n".join(lines)


def when(moment: datetime, fmt: str | None = None) -> str:
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
