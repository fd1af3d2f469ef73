"""How a failed attempt is described: in `last_error`, in log lines, across a process boundary.

A handler may raise anything: an exception whose message holds NUL characters or unpaired
surrogates, one whose `__str__` raises, a `SystemExit`. Each is turned into text the database
takes (cleaned, bounded), so a failure is always recorded for its own job.
"""

from __future__ import annotations

import traceback

from passito_jobs.queue.errors import clean_text, safe_str
from passito_jobs.registry import PermanentError

ERROR_TAIL_LINES = 12
ERROR_MAX_CHARS = 4000
LOG_MAX_CHARS = 1000


class AttemptTimeoutError(TimeoutError):
    """An attempt ran longer than its job type's timeout."""


class OutcomeRefusedError(Exception):
    """The worker cannot store what an attempt produced (a result that is not storable, a
    payload it cannot read): the job fails permanently with this message, without retries."""


class RemoteError(Exception):
    """A handler's exception in a child process, carried back as text (its type name, message
    and formatted traceback)."""

    def __init__(self, type_name: str, message: str, formatted: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.formatted = formatted


class RemotePermanentError(RemoteError, PermanentError):
    """A PermanentError raised in a child process: it stays permanent."""


def describe(exc: BaseException) -> str:
    """`Type: message`, cleaned and of bounded length, for log lines."""
    name = exc.type_name if isinstance(exc, RemoteError) else type(exc).__name__
    return clean_text(f"{name}: {safe_str(exc)}", LOG_MAX_CHARS)


def format_error(exc: BaseException) -> str:
    """`Type: message` and the tail of the traceback, cleaned and bounded for `last_error`.

    An exception made by the worker rather than raised (a timeout, a refused outcome) has no
    traceback worth keeping: the first line says it all.
    """
    if isinstance(exc, RemoteError):
        return clean_text(exc.formatted, ERROR_MAX_CHARS)
    message = safe_str(exc)
    head = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    try:  # a hostile exception's __traceback__ may be a property that raises
        if exc.__traceback__ is None:
            return clean_text(head, ERROR_MAX_CHARS)
        lines = traceback.format_exception(exc)
    except Exception:  # a hostile exception can break the formatting too
        lines = []
    tail = "".join(lines[-ERROR_TAIL_LINES:]).rstrip()
    return clean_text(f"{head}\n{tail}" if tail else head, ERROR_MAX_CHARS)
