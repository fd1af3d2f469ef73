"""The queue's own errors. Database errors leave the queue package as one of these (the
original psycopg error as `__cause__`), so the layers above never import psycopg:

- `DatabaseUnavailableError`: the database cannot be reached (connect), and its subclass
  `ConnectionLostError`: a connection broke during an operation (reconnect and try again);
- `JobDataError`: the database refused a statement because of the data of a job (SQLSTATE
  classes 22, 23 and 54, a trigger of yours): it belongs to that job, not to the connection;
- `QueryTimeoutError`: a statement ran past its statement timeout;
- `SchemaMissingError`: the passito_jobs schema is not installed, or older than this code;
- `DatabaseError`: anything else the database said (permissions, a damaged schema).

`first_line` is the one way an error becomes a line of a log or a message; `clean_text` makes
any text (an error a handler raised) something a text column takes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg import errors as pg_errors


class QueueError(Exception):
    """Base class of the queue's own errors. One made from a database error keeps its
    `sqlstate` (and the original as `__cause__`)."""

    sqlstate: str | None = None


class InvalidJobError(QueueError, ValueError):
    """A dispatch request breaks a rule (payload not an object, negative delay, ...)."""


class FlowControlError(QueueError, ValueError):
    """A queue setting that is refused: a limit out of range, a malformed rate (flow.py)."""


class InvalidDatabaseUrlError(QueueError, ValueError):
    """A connection string cannot be parsed; the message says why, with the password masked."""


class DatabaseUnavailableError(QueueError):
    """The database cannot be reached; the message names the host and the cause."""


class ConnectionLostError(DatabaseUnavailableError):
    """A connection broke during an operation: reconnect and send the same again."""


class JobDataError(QueueError):
    """The database refused a statement because of a job's data; `sqlstate` says how."""


class QueryTimeoutError(QueueError):
    """A statement did not finish within its statement timeout."""


class SchemaMissingError(QueueError):
    """The database has no (or an outdated) passito_jobs schema."""


class DatabaseError(QueueError):
    """The database refused an operation for another reason (permissions, a damaged schema)."""


def clean_text(text: str, max_chars: int) -> str:
    """Text a text column takes: NUL written as `\\x00`, an unpaired surrogate as `\\udXXX`,
    cut to `max_chars` (ending in "...")."""
    if len(text) > 2 * max_chars:
        text = text[: 2 * max_chars]  # escapes below at most lengthen it; no need to clean it all
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        # Only surrogates cannot be encoded as UTF-8; backslashreplace writes them as \udXXX.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def safe_str(value: object) -> str:
    """str(value), or a placeholder when its __str__ raises (a hostile exception)."""
    try:
        return str(value)
    except Exception:  # anything may come out of user code
        return f"<{type(value).__name__} whose str() failed>"


def first_line(exc: BaseException, *, sqlstate: bool = True) -> str:
    """The first line of an error (with its SQLSTATE), cleaned (it may quote a job's data) and
    bounded: how errors appear in log lines and one-line messages."""
    text = safe_str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    code = getattr(exc, "sqlstate", None) if sqlstate else None
    if code:
        line = f"{line} (SQLSTATE {code})"
    return clean_text(line, 500)


# Server-side errors that mean the connection is gone or going: reconnect and send again.
_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})  # admin/crash shutdown, cannot connect now
# Refused because of the data: values out of range, constraints, program limits.
_DATA_CLASSES = ("22", "23", "54")


def is_connection_error(
    exc: BaseException, conn: psycopg.Connection[object] | psycopg.AsyncConnection[object] | None = None
) -> bool:
    """Whether `exc` means the connection is lost (reconnect and send again), rather than that
    the database refused one statement because of its data (SQLSTATE classes 22, 23, 54 and
    the like), which belongs to the jobs of that statement."""
    if isinstance(exc, OSError | DatabaseUnavailableError):
        return True
    if conn is not None and (conn.closed or conn.broken):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    sqlstate = exc.sqlstate
    if sqlstate is None:
        return isinstance(exc, psycopg.OperationalError)
    return sqlstate.startswith("08") or sqlstate in _CONNECTION_SQLSTATES


def translate(
    exc: BaseException, conn: psycopg.Connection[object] | psycopg.AsyncConnection[object] | None = None
) -> BaseException:
    """The queue error for a database (or socket) error; any other exception as it is."""
    if isinstance(exc, QueueError) or not isinstance(exc, psycopg.Error | OSError):
        return exc
    error = _classify(exc, conn)
    error.sqlstate = getattr(exc, "sqlstate", None)
    return error


def _classify(
    exc: psycopg.Error | OSError, conn: psycopg.Connection[object] | psycopg.AsyncConnection[object] | None
) -> QueueError:
    line = first_line(exc, sqlstate=False)
    if is_connection_error(exc, conn):
        return ConnectionLostError(f"lost the database connection: {line}")
    assert isinstance(exc, psycopg.Error)
    if isinstance(exc, pg_errors.QueryCanceled):
        return QueryTimeoutError(line)
    if isinstance(exc, pg_errors.UndefinedTable | pg_errors.UndefinedFunction | pg_errors.InvalidSchemaName):
        return SchemaMissingError(
            f"the passito_jobs schema is missing or outdated ({line}): run `passito-jobs migrate`"
        )
    if (exc.sqlstate or "").startswith(_DATA_CLASSES) or isinstance(exc, psycopg.DataError):
        return JobDataError(line)
    return DatabaseError(line)


def cause(exc: BaseException) -> str:
    """The database's own words for a queue error: the first line of the error it wraps."""
    return first_line(exc.__cause__ or exc, sqlstate=False)


_P = ParamSpec("_P")
_T = TypeVar("_T")
_S = TypeVar("_S")


def translated(method: Callable[Concatenate[_S, _P], _T]) -> Callable[Concatenate[_S, _P], _T]:
    """A store method whose database errors leave as the queue's own (its object has `conn`)."""

    @functools.wraps(method)
    def call(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(self, *args, **kwargs)
        except (psycopg.Error, OSError) as exc:
            raise translate(exc, getattr(self, "conn", None)) from exc

    return call
