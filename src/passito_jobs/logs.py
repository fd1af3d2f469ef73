"""Log lines: `[Worker host:pid][INFO] Processing Job #12 (Type) job_id=12 ...` or JSON.

The bracketed prefix is what the old supervisor printed (operators grep for it); the
key=value tail makes each line machine-readable. PASSITO_LOG_FORMAT=json emits one JSON object
per line instead. Pass `extra={"tag": "DONE", "kv": {...}}` to set the bracket's tag and the
key=value fields, and `extra={"job": job_fields(...)}` on a job's lines: every job line carries
job_id, job_type, queue, attempt and worker_id, in both formats, and trace_id when the job
carries a trace context. `setup(redact=...)` passes
every line through a function that masks secrets (the database password), so no code path can
log one by accident.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from passito_jobs.settings import SettingsGroup, one_of, parse_lower, parse_upper, setting
from passito_jobs.tracing import current_trace_id

Redact = Callable[[str], str]
JOB_FIELDS = ("job_id", "job_type", "queue", "attempt", "worker_id")


@dataclass(frozen=True)
class LoggingSettings(SettingsGroup):
    GROUP = "Logging"

    level: str = setting(
        "PASSITO_LOG_LEVEL",
        "INFO",
        "DEBUG, INFO, WARNING or ERROR.",
        parse=parse_upper,
        check=one_of("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    format: str = setting(
        "PASSITO_LOG_FORMAT",
        "text",
        "`text` (the classic `[Worker host:pid][INFO] ...` lines) or `json` (one object per line).",
        parse=parse_lower,
        check=one_of("text", "json"),
    )


def job_fields(
    job_id: int, job_type: str, queue: str, attempt: str, worker_id: str, *, trace_id: str | None = None
) -> dict[str, Any]:
    """The fields of every log line about one job (`extra={"job": ...}`); `trace_id` when the
    job carries a trace context (its dispatcher's trace, as 32 hex digits)."""
    fields = {
        "job_id": job_id,
        "job_type": job_type,
        "queue": queue,
        "attempt": attempt,
        "worker_id": worker_id,
    }
    if trace_id is not None:
        fields["trace_id"] = trace_id
    return fields


def _unchanged(text: str) -> str:
    return text


class _Formatter(logging.Formatter):
    """A traceback in a third-party library's line (kopf's "Resource observer has failed",
    aiohttp's) is one `Type: message` unless `tracebacks` (PASSITO_LOG_LEVEL=DEBUG): those
    are the library's retries and failures, told in its message, not bugs of ours."""

    def __init__(self, redact: Redact | None, tracebacks: bool) -> None:
        super().__init__()
        self.redact = redact or _unchanged
        self.tracebacks = tracebacks

    def exception_text(self, record: logging.LogRecord) -> str | None:
        if not record.exc_info:
            return None
        if self.tracebacks or record.name.split(".")[0] == "passito_jobs":
            return self.formatException(record.exc_info)
        exc = record.exc_info[1]
        one_line = " ".join(f"{type(exc).__name__}: {exc}".split())
        return None if str(exc) and str(exc) in record.getMessage() else one_line


class TextFormatter(_Formatter):
    def __init__(
        self, role: str, instance: str, redact: Redact | None = None, *, tracebacks: bool = False
    ) -> None:
        super().__init__(redact, tracebacks)
        self.prefix = f"[{role} {instance}]"

    def format(self, record: logging.LogRecord) -> str:
        tag = getattr(record, "tag", None) or record.levelname
        line = f"{self.prefix}[{tag}] {record.getMessage()}"
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{key}={_value(value)}" for key, value in fields.items())
        exception = self.exception_text(record)
        if exception is not None:
            line += ("\n" if "\n" in exception else ": ") + exception
        return self.redact(line)


class JsonFormatter(_Formatter):
    """One JSON object per line. A worker's lines carry its `worker_id`; other processes name
    themselves as `instance` (both are `<name>:<pid>`)."""

    def __init__(
        self, role: str, instance: str, redact: Redact | None = None, *, tracebacks: bool = False
    ) -> None:
        super().__init__(redact, tracebacks)
        self.role = role
        self.instance_key = "worker_id" if role == "Worker" else "instance"
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "tag": getattr(record, "tag", None) or record.levelname,
            "role": self.role,
            self.instance_key: self.instance,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        exception = self.exception_text(record)
        if exception is not None:
            data["exception"] = exception
        data = {key: self.redact(value) if isinstance(value, str) else value for key, value in data.items()}
        return json.dumps(data, default=lambda value: self.redact(str(value)))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    job: Mapping[str, Any] | None = getattr(record, "job", None)
    if job:
        fields.update(job)
    for key in ("job_id", "job_type"):  # a handler's own lines through ctx.logger (older callers)
        if hasattr(record, key):
            fields[key] = getattr(record, key)
    fields.update(getattr(record, "kv", None) or {})
    if "trace_id" not in fields and (trace_id := current_trace_id()) is not None:
        fields["trace_id"] = trace_id  # a line logged inside an attempt's span (its handler's own)
    return fields


_NEEDS_QUOTES = re.compile(r'[\s"=]')


def _value(value: Any) -> str:
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return json.dumps(text)
    return text


class _WithoutSubsetterNotice(logging.Filter):
    """WeasyPrint warns on every PDF, once per font, when the optional libharfbuzz-subset0 is
    missing ("Using fontTools instead of HarfBuzz-Subset ..."): thousands of lines in a demo.
    Only that message is dropped; `make run` and the README say once that the package makes PDFs
    faster. Every other WeasyPrint warning passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Using fontTools instead of HarfBuzz-Subset")


_SUBSETTER_NOTICE = _WithoutSubsetterNotice()


def setup(
    *, role: str, instance: str, level: str = "INFO", fmt: str = "text", redact: Redact | None = None
) -> None:
    """Send passito_jobs' logs to stderr with the given prefix; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    handler.setFormatter(formatter(role, instance, redact, tracebacks=level.upper() == "DEBUG"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_passito", False):
            root.removeHandler(old)
    handler._passito = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party chatter stays at WARNING unless DEBUG was asked for.
    if level.upper() != "DEBUG":
        for noisy in ("psycopg", "asyncio", "kopf", "aiohttp", "fontTools", "weasyprint"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    weasyprint = logging.getLogger("weasyprint")
    if _SUBSETTER_NOTICE not in weasyprint.filters:
        weasyprint.addFilter(_SUBSETTER_NOTICE)
