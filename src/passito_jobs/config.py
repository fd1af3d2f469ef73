"""Every setting of passito-jobs, read from the environment in one place.

Each setting is an environment variable with a documented default; docs/configuration.md
lists the same names (a test keeps the two in step). Command-line flags override them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from passito_jobs.queue import conninfo, limits
from passito_jobs.queue.models import InvalidJobError


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
MAX_DURATION = 36500 * 86400.0
"""The longest duration anything accepts: 100 years, well within PostgreSQL's intervals and
timestamps (now() minus it is still a date) and Python's timeouts."""
MAX_WORKERS = 10_000
MAX_INT4 = 2**31 - 1


def parse_duration(text: str) -> float:
    """Parse `90`, `1.5s`, `250ms`, `5m`, `1h` or `7d` into seconds (at most 100 years)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (examples: 30, 250ms, 10s, 5m, 1h, 7d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds <= MAX_DURATION:  # also refuses an infinite one ("9" * 400)
        raise ValueError(f"{text.strip()[:40]!r} is longer than the longest duration, 36500d (100 years)")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration: 604800 -> '7d', 90 -> '90s'."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def parse_list(text: str) -> tuple[str, ...]:
    """`a, b,` -> ('a', 'b'): the comma-separated lists of settings and flags."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _parse_int(text: str) -> int:
    return int(text.strip())


def _parse_float(text: str) -> float:
    value = float(text.strip())
    if not math.isfinite(value):
        raise ValueError(f"{text.strip()!r} is not a finite number")
    return value


def _setting(
    env: str,
    default: Any,
    doc: str,
    group: str,
    *,
    secret: bool = False,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    # A secret (or a URL that may carry a password) never shows in a repr, a log line or a traceback.
    metadata = {"env": env, "doc": doc, "group": group, "parse": parse}
    return field(default=default, repr=not secret, metadata=metadata)


setting = _setting
parse_bool = _parse_bool
parse_int = _parse_int
"""`setting` declares a field of a settings group: its environment variable, default, doc line, group
(the heading in docs/configuration.md) and, outside `Settings`, its parser."""


def read_environment(cls: type[Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields of the settings dataclass `cls` given in `environ` (default: os.environ),
    parsed; ConfigError names the variable of a value that does not parse."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):
        raw = env.get(spec.metadata["env"])
        if raw is None:
            continue
        if _SURROGATE.search(raw):  # bytes that are not UTF-8 (Python keeps them as surrogates)
            raise ConfigError(f"{spec.metadata['env']}: is not valid UTF-8 text")
        parser = spec.metadata.get("parse") or _PARSERS[spec.name]
        try:
            values[spec.name] = parser(raw)
        except ValueError as exc:
            raise ConfigError(f"{spec.metadata['env']}: {exc}") from None
    return values


MIN_SECRET_KEY_LENGTH = 32
MAX_FILE_RETENTION_DAYS = 36500  # a century: now minus the retention stays a valid date
SMTP_SECURITY = ("starttls", "tls", "none")


def _has_query(url: str) -> bool:
    return "?" in url or "#" in url


def _is_mailbox(text: str) -> bool:
    """`Name <user@host>` or `user@host`, on one line (it goes into the From header)."""
    if "\r" in text or "\n" in text:
        return False
    _, address = parseaddr(text)
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain and " " not in address)


@dataclass(frozen=True)
class Settings:
    """All settings. `Settings.from_env()` reads them; fields keep their defaults otherwise."""

    # --- database ---
    database_url: str | None = _setting(
        "PASSITO_DATABASE_URL",
        None,
        "PostgreSQL connection URL (`postgresql://user:password@host:5432/dbname`) or key=value "
        "string; its password is masked in every message. Unset: local commands start an embedded "
        "PostgreSQL under PASSITO_DATA_DIR.",
        "Database",
        secret=True,  # it may carry the database password
    )
    data_dir: Path = _setting(
        "PASSITO_DATA_DIR",
        Path(".passito"),
        "Local state: the embedded PostgreSQL's data directory lives here.",
        "Database",
    )
    connect_timeout: float = _setting(
        "PASSITO_CONNECT_TIMEOUT", 5.0, "Seconds to wait for a database connection.", "Database"
    )

    # --- worker ---
    queues: tuple[str, ...] = _setting(
        "PASSITO_QUEUES",
        (),
        "Comma-separated queues a worker takes jobs from; empty means all.",
        "Worker",
    )
    concurrency: int = _setting(
        "PASSITO_CONCURRENCY", 10, "Jobs one worker process runs at the same time.", "Worker"
    )
    batch_size: int = _setting(
        "PASSITO_BATCH_SIZE",
        100,
        "Most jobs claimed in one round trip (never more than the free concurrency).",
        "Worker",
    )
    job_modules: tuple[str, ...] = _setting(
        "PASSITO_JOB_MODULES",
        (),
        "Comma-separated Python modules to import at worker start; they register job types.",
        "Worker",
    )
    poll_interval: float = _setting(
        "PASSITO_POLL_INTERVAL",
        2.0,
        "Seconds between polls when no notification arrives (LISTEN/NOTIFY wakes workers "
        "at once; polling is the guarantee).",
        "Worker",
    )
    heartbeat_interval: float = _setting(
        "PASSITO_HEARTBEAT_INTERVAL",
        10.0,
        "Seconds between heartbeats of in-flight jobs.",
        "Worker",
    )
    shutdown_timeout: float = _setting(
        "PASSITO_SHUTDOWN_TIMEOUT",
        30.0,
        "On SIGTERM, seconds to let in-flight jobs finish before they are returned to pending.",
        "Worker",
    )
    job_timeout: float = _setting(
        "PASSITO_JOB_TIMEOUT",
        900.0,
        "Default limit for one attempt of a job (a job type may set its own).",
        "Worker",
    )
    retry_backoff_base: float = _setting(
        "PASSITO_RETRY_BACKOFF_BASE",
        2.0,
        "Retry delay after the first failed attempt; doubles with each attempt, with jitter.",
        "Worker",
    )
    retry_backoff_cap: float = _setting("PASSITO_RETRY_BACKOFF_CAP", 3600.0, "Longest retry delay.", "Worker")
    max_payload_bytes: int = _setting(
        "PASSITO_MAX_PAYLOAD_BYTES",
        1048576,
        "Largest payload or result of one job, in bytes of JSON text.",
        "Worker",
    )
    metrics_port: int = _setting(
        "PASSITO_METRICS_PORT",
        9100,
        "Port of the worker's HTTP server (/metrics, /healthz, /readyz); 0 disables it.",
        "Worker",
    )
    log_jobs: bool = _setting("PASSITO_LOG_JOBS", True, "Log a line when each job starts and ends.", "Worker")
    worker_name: str = _setting(
        "PASSITO_WORKER_NAME",
        "",
        "Name in log lines and worker ids; defaults to the host name (the pod name in Kubernetes).",
        "Worker",
    )

    # --- maintenance ---
    stuck_timeout: float = _setting(
        "PASSITO_STUCK_TIMEOUT",
        60.0,
        "A processing job without a heartbeat for this long is rescued (back to pending).",
        "Maintenance",
    )
    maintenance_interval: float = _setting(
        "PASSITO_MAINTENANCE_INTERVAL",
        15.0,
        "Seconds between maintenance runs (rescue, prune) by the lease holder.",
        "Maintenance",
    )
    keep_completed: float = _setting(
        "PASSITO_KEEP_COMPLETED", 7 * 86400.0, "How long completed jobs are kept.", "Maintenance"
    )
    keep_failed: float = _setting(
        "PASSITO_KEEP_FAILED",
        30 * 86400.0,
        "How long failed and cancelled jobs are kept.",
        "Maintenance",
    )
    prune_batch_size: int = _setting(
        "PASSITO_PRUNE_BATCH_SIZE", 1000, "Rows deleted per pruning statement.", "Maintenance"
    )

    # --- local supervisor (`passito-jobs supervise`) ---
    min_workers: int = _setting(
        "PASSITO_MIN_WORKERS",
        1,
        "Fewest worker processes the local supervisor keeps (0 allowed).",
        "Local supervisor",
    )
    max_workers: int = _setting(
        "PASSITO_MAX_WORKERS",
        10,
        "Most worker processes the local supervisor runs.",
        "Local supervisor",
    )
    scale_up_threshold: float = _setting(
        "PASSITO_SCALE_UP_THRESHOLD",
        5.0,
        "Jobs per worker above which workers are added (at once).",
        "Local supervisor",
    )
    scale_down_threshold: float = _setting(
        "PASSITO_SCALE_DOWN_THRESHOLD",
        2.0,
        "Jobs per worker below which workers are stopped (after the cooldown).",
        "Local supervisor",
    )
    check_interval: float = _setting(
        "PASSITO_CHECK_INTERVAL",
        10.0,
        "Seconds between the local supervisor's load checks.",
        "Local supervisor",
    )
    cooldown: float = _setting(
        "PASSITO_COOLDOWN",
        60.0,
        "Least time between a scale and a scale-down.",
        "Local supervisor",
    )

    # --- outpass jobs: files, links and signed tokens ---
    storage_dir: Path = _setting(
        "PASSITO_STORAGE_DIR",
        Path(".passito/storage"),
        "Where outpass files live (QR codes, PDFs, the email outbox); a shared volume in Kubernetes.",
        "Outpass jobs",
    )
    public_url: str = _setting(
        "PASSITO_PUBLIC_URL",
        "http://localhost:8000",
        "Base URL of the Passito app; QR codes and approval emails link to it.",
        "Outpass jobs",
    )
    secret_key: str | None = _setting(
        "PASSITO_SECRET_KEY",
        None,
        "Signs QR and parent-approval tokens (HMAC-SHA256), at least 32 characters. "
        "Workers refuse to start without it.",
        "Outpass jobs",
        secret=True,
    )
    insecure_dev_secret: bool = _setting(
        "PASSITO_INSECURE_DEV_SECRET",
        False,
        "Development only: without PASSITO_SECRET_KEY, sign with a public, well-known key "
        "(anyone can forge tokens).",
        "Outpass jobs",
    )
    approval_token_ttl: float = _setting(
        "PASSITO_APPROVAL_TOKEN_TTL",
        3 * 86400.0,
        "How long a parent's approve and deny links stay valid.",
        "Outpass jobs",
    )
    file_retention_days: int = _setting(
        "PASSITO_FILE_RETENTION_DAYS",
        30,
        "CleanupExpiredFiles deletes outpass files and outbox messages older than this many days "
        "(1 to 36500).",
        "Outpass jobs",
    )

    # --- email (SendOutpassEmail, SendParentApproval) ---
    smtp_host: str | None = _setting(
        "PASSITO_SMTP_HOST",
        None,
        "SMTP server. Unset: emails are written as .eml files under PASSITO_STORAGE_DIR/outbox/.",
        "Email",
    )
    smtp_port: int = _setting(
        "PASSITO_SMTP_PORT",
        0,
        "SMTP port; 0 picks the usual one for PASSITO_SMTP_SECURITY (587, 465 or 25).",
        "Email",
    )
    smtp_security: str = _setting(
        "PASSITO_SMTP_SECURITY",
        "starttls",
        "`starttls` (upgrade a plain connection), `tls` (implicit TLS) or `none`.",
        "Email",
    )
    smtp_user: str | None = _setting("PASSITO_SMTP_USER", None, "SMTP login user; unset: no AUTH.", "Email")
    smtp_password: str | None = _setting(
        "PASSITO_SMTP_PASSWORD", None, "SMTP login password.", "Email", secret=True
    )
    smtp_from: str = _setting(
        "PASSITO_SMTP_FROM",
        "Passito <no-reply@localhost>",
        "From address of every email, `Name <address>` or `address`.",
        "Email",
    )
    smtp_timeout: float = _setting(
        "PASSITO_SMTP_TIMEOUT", 30.0, "Seconds to wait for the SMTP server.", "Email"
    )
    smtp_ca_file: Path | None = _setting(
        "PASSITO_SMTP_CA_FILE",
        None,
        "PEM file of CA certificates to trust for the SMTP server's certificate; unset: the system's.",
        "Email",
    )

    # --- operator (`passito-jobs operator`) ---
    operator_namespaces: tuple[str, ...] = _setting(
        "PASSITO_OPERATOR_NAMESPACES",
        (),
        "Comma-separated namespaces whose WorkerAutoscalers the operator serves; empty means "
        "every namespace (cluster-wide).",
        "Operator",
    )
    operator_metrics_port: int = _setting(
        "PASSITO_OPERATOR_METRICS_PORT",
        9102,
        "Port of the operator's Prometheus /metrics; 0 disables it.",
        "Operator",
    )
    operator_liveness_port: int = _setting(
        "PASSITO_OPERATOR_LIVENESS_PORT",
        8080,
        "Port of the operator's liveness probe (kopf's /healthz); 0 disables it.",
        "Operator",
    )
    kube_server: str | None = _setting(
        "PASSITO_KUBE_SERVER",
        None,
        "Kubernetes API URL used instead of the service account or kubeconfig, without TLS "
        "verification: for tests against an API emulator only.",
        "Operator",
    )

    # --- health checks and the queue exporter (`passito-jobs health`) ---
    health_stale_after: float = _setting(
        "PASSITO_HEALTH_STALE_AFTER",
        300.0,
        "A job ready but not started for this long is stale (workers down or too few); "
        "`health --stale-after` overrides it.",
        "Health",
    )
    health_max_failure_rate: float = _setting(
        "PASSITO_HEALTH_MAX_FAILURE_RATE",
        0.10,
        "Highest healthy share of failed jobs among those finished within PASSITO_HEALTH_WINDOW "
        "(0 to 1); `health --max-failure-rate` overrides it.",
        "Health",
    )
    health_window: float = _setting(
        "PASSITO_HEALTH_WINDOW",
        3600.0,
        "Recent history the failure rate and the exporter's finished-job counts cover; "
        "`health --window` overrides it.",
        "Health",
    )
    health_port: int = _setting(
        "PASSITO_HEALTH_PORT",
        9101,
        "Port of the queue exporter (`health serve`: /metrics, /healthz, /readyz); 0 picks a free one.",
        "Health",
    )
    health_query_timeout: float = _setting(
        "PASSITO_HEALTH_QUERY_TIMEOUT",
        5.0,
        "Statement timeout of the health query (each check, each scrape of the exporter).",
        "Health",
    )

    # --- logging ---
    log_level: str = _setting("PASSITO_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR.", "Logging")
    log_format: str = _setting(
        "PASSITO_LOG_FORMAT",
        "text",
        "`text` (the classic `[Worker host:pid][INFO] ...` lines) or `json` (one object per line).",
        "Logging",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from `environ` (default: os.environ); raise ConfigError if bad."""
        settings = cls(**read_environment(cls, environ))
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (command-line flags), validated."""
        settings = dataclasses.replace(self, **changes)
        settings.validate()
        return settings

    def validate(self) -> None:
        checks: list[tuple[bool, str, str]] = [
            (
                self.secret_key is None or len(self.secret_key) >= MIN_SECRET_KEY_LENGTH,
                "secret_key",
                f"must be at least {MIN_SECRET_KEY_LENGTH} characters",
            ),
            (
                self.public_url.startswith(("http://", "https://")) and not _has_query(self.public_url),
                "public_url",
                "must be an http:// or https:// URL without query or fragment",
            ),
            (self.approval_token_ttl > 0, "approval_token_ttl", "must be positive"),
            (
                1 <= self.file_retention_days <= MAX_FILE_RETENTION_DAYS,
                "file_retention_days",
                f"must be at least 1 and at most {MAX_FILE_RETENTION_DAYS}",
            ),
            (0 <= self.smtp_port <= 65535, "smtp_port", "must be a port number or 0"),
            (self.smtp_security in SMTP_SECURITY, "smtp_security", "must be starttls, tls or none"),
            (
                (self.smtp_user is None) == (self.smtp_password is None),
                "smtp_user",
                "and PASSITO_SMTP_PASSWORD must be set together",
            ),
            (
                self.smtp_user is None or self.smtp_security != "none",
                "smtp_user",
                "needs PASSITO_SMTP_SECURITY starttls or tls (the password would cross the network "
                "in clear text)",
            ),
            (
                _is_mailbox(self.smtp_from),
                "smtp_from",
                "must be an address like `Passito <no-reply@example.org>`",
            ),
            (self.smtp_timeout > 0, "smtp_timeout", "must be positive"),
            (self.concurrency >= 1, "concurrency", "must be at least 1"),
            (self.concurrency <= MAX_WORKERS, "concurrency", f"must be at most {MAX_WORKERS}"),
            (self.batch_size >= 1, "batch_size", "must be at least 1"),
            (
                self.batch_size <= limits.MAX_CLAIM_BATCH,
                "batch_size",
                f"must be at most {limits.MAX_CLAIM_BATCH}",
            ),
            (
                1 <= self.max_payload_bytes <= limits.MAX_PAYLOAD_BYTES_SETTING,
                "max_payload_bytes",
                f"must be between 1 and {limits.MAX_PAYLOAD_BYTES_SETTING}",
            ),
            (self.poll_interval > 0, "poll_interval", "must be positive"),
            (self.heartbeat_interval > 0, "heartbeat_interval", "must be positive"),
            (
                self.stuck_timeout > self.heartbeat_interval,
                "stuck_timeout",
                "must be longer than PASSITO_HEARTBEAT_INTERVAL",
            ),
            (self.shutdown_timeout >= 0, "shutdown_timeout", "must not be negative"),
            (self.job_timeout > 0, "job_timeout", "must be positive"),
            (self.retry_backoff_base >= 0, "retry_backoff_base", "must not be negative"),
            (
                self.retry_backoff_cap >= self.retry_backoff_base,
                "retry_backoff_cap",
                "must not be shorter than PASSITO_RETRY_BACKOFF_BASE",
            ),
            (0 <= self.metrics_port <= 65535, "metrics_port", "must be a port number or 0"),
            (self.maintenance_interval > 0, "maintenance_interval", "must be positive"),
            (self.keep_completed >= 0, "keep_completed", "must not be negative"),
            (self.keep_failed >= 0, "keep_failed", "must not be negative"),
            (self.prune_batch_size >= 1, "prune_batch_size", "must be at least 1"),
            (self.prune_batch_size <= MAX_INT4, "prune_batch_size", f"must be at most {MAX_INT4}"),
            (
                self.log_level.upper() in {"DEBUG", "INFO", "WARNING", "ERROR"},
                "log_level",
                "must be DEBUG, INFO, WARNING or ERROR",
            ),
            (self.log_format in {"text", "json"}, "log_format", "must be text or json"),
            (self.connect_timeout > 0, "connect_timeout", "must be positive"),
            # libpq takes whole seconds as a C int; a day is more than any network needs.
            (self.connect_timeout <= 86400, "connect_timeout", "must be at most 1d"),
            (self.min_workers >= 0, "min_workers", "must not be negative"),
            (
                self.max_workers >= max(1, self.min_workers),
                "max_workers",
                "must be at least 1 and not below PASSITO_MIN_WORKERS",
            ),
            (self.max_workers <= MAX_WORKERS, "max_workers", f"must be at most {MAX_WORKERS}"),
            (self.scale_up_threshold > 0, "scale_up_threshold", "must be positive"),
            (
                0 <= self.scale_down_threshold <= self.scale_up_threshold,
                "scale_down_threshold",
                "must be between 0 and PASSITO_SCALE_UP_THRESHOLD",
            ),
            (self.check_interval > 0, "check_interval", "must be positive"),
            (self.cooldown >= 0, "cooldown", "must not be negative"),
            (
                0 <= self.operator_metrics_port <= 65535,
                "operator_metrics_port",
                "must be a port number or 0",
            ),
            (
                0 <= self.operator_liveness_port <= 65535,
                "operator_liveness_port",
                "must be a port number or 0",
            ),
            (self.health_stale_after > 0, "health_stale_after", "must be positive"),
            (
                0 <= self.health_max_failure_rate <= 1,
                "health_max_failure_rate",
                "must be between 0 and 1",
            ),
            (self.health_window > 0, "health_window", "must be positive"),
            (0 <= self.health_port <= 65535, "health_port", "must be a port number or 0"),
            (self.health_query_timeout > 0, "health_query_timeout", "must be positive"),
            # PostgreSQL's statement_timeout is an int of milliseconds (24.8 days at most).
            (self.health_query_timeout <= 86400, "health_query_timeout", "must be at most 1d"),
            (
                self.file_retention_days <= MAX_DURATION // 86400,
                "file_retention_days",
                f"must be at most {MAX_DURATION // 86400:.0f}",
            ),
            *self._duration_checks(),
            *self._queue_checks(),
        ]
        for ok, name, message in checks:
            if not ok:
                got = "(hidden)" if name in SECRET_SETTINGS else repr(getattr(self, name))
                got = got if len(got) <= 80 else got[:77] + "..."
                raise ConfigError(f"{env_name(name)} {message} (got {got})")

    def _duration_checks(self) -> list[tuple[bool, str, str]]:
        """Every duration within 100 years (and finite): settings built in code skip the parser."""
        return [
            (
                isinstance(value, int | float) and math.isfinite(value) and value <= MAX_DURATION,
                name,
                "must be at most 36500d (100 years)",
            )
            for name, value in ((f, getattr(self, f)) for f in _DURATIONS)
        ]

    def _queue_checks(self) -> list[tuple[bool, str, str]]:
        checks = []
        for queue in self.queues:
            try:
                limits.check_name("queue", queue)
            except InvalidJobError as exc:
                checks.append((False, "queues", f"holds a bad queue name: {exc}"))
        return checks

    @property
    def worker_host(self) -> str:
        return self.worker_name or socket.gethostname()


SECRET_SETTINGS = frozenset(spec.name for spec in dataclasses.fields(Settings) if not spec.repr)
"""Settings whose values are never printed (repr, error messages)."""


def env_name(setting: str) -> str:
    """The environment variable behind a Settings field."""
    for spec in dataclasses.fields(Settings):
        if spec.name == setting:
            return str(spec.metadata["env"])
    raise KeyError(setting)


def _groups() -> tuple[type[Any], ...]:
    """Settings groups declared next to what they configure (imported only to describe them)."""
    from passito_jobs.web.settings import WebSettings  # noqa: PLC0415 - web imports this module

    return (WebSettings,)


def describe() -> list[dict[str, str]]:
    """Every setting as {env, default, doc, group}: the source of docs/configuration.md."""
    rows = []
    groups: tuple[type[Any], ...] = (Settings, *_groups())
    for spec in [spec for cls in groups for spec in dataclasses.fields(cls)]:
        default = spec.default
        if isinstance(default, tuple):
            shown = ",".join(default) or "(empty)"
        elif isinstance(default, bool):
            shown = str(default).lower()
        elif isinstance(default, float) and spec.name.endswith(("_threshold", "_rate")):
            shown = f"{default:g}"
        elif isinstance(default, float):
            shown = format_duration(default)
        elif default is None or default == "":
            shown = "(unset)"
        else:
            shown = str(default)
        rows.append(
            {
                "env": spec.metadata["env"],
                "default": shown,
                "doc": spec.metadata["doc"],
                "group": spec.metadata["group"],
            }
        )
    return rows


def _optional_str(text: str) -> str | None:
    return text or None


def _database_url(text: str) -> str | None:
    """A malformed URL fails here, once, for every command: the message masks the password."""
    if text:
        conninfo.parse(text)  # raises InvalidDatabaseUrlError, a ValueError
    return text or None


_PARSERS: dict[str, Callable[[str], Any]] = {
    "database_url": _database_url,
    "data_dir": Path,
    "connect_timeout": parse_duration,
    "queues": parse_list,
    "concurrency": _parse_int,
    "batch_size": _parse_int,
    "job_modules": parse_list,
    "poll_interval": parse_duration,
    "heartbeat_interval": parse_duration,
    "shutdown_timeout": parse_duration,
    "job_timeout": parse_duration,
    "retry_backoff_base": parse_duration,
    "retry_backoff_cap": parse_duration,
    "max_payload_bytes": _parse_int,
    "metrics_port": _parse_int,
    "log_jobs": _parse_bool,
    "worker_name": str,
    "stuck_timeout": parse_duration,
    "maintenance_interval": parse_duration,
    "keep_completed": parse_duration,
    "keep_failed": parse_duration,
    "prune_batch_size": _parse_int,
    "min_workers": _parse_int,
    "max_workers": _parse_int,
    "scale_up_threshold": _parse_float,
    "scale_down_threshold": _parse_float,
    "check_interval": parse_duration,
    "cooldown": parse_duration,
    "storage_dir": Path,
    "public_url": lambda text: text.strip().rstrip("/"),
    "secret_key": _optional_str,
    "insecure_dev_secret": _parse_bool,
    "approval_token_ttl": parse_duration,
    "file_retention_days": _parse_int,
    "smtp_host": lambda text: _optional_str(text.strip()),
    "smtp_port": _parse_int,
    "smtp_security": lambda text: text.strip().lower(),
    "smtp_user": _optional_str,
    "smtp_password": _optional_str,
    "smtp_from": str.strip,
    "smtp_timeout": parse_duration,
    "smtp_ca_file": lambda text: Path(text) if text else None,
    "operator_namespaces": parse_list,
    "operator_metrics_port": _parse_int,
    "operator_liveness_port": _parse_int,
    "kube_server": _optional_str,
    "health_stale_after": parse_duration,
    "health_max_failure_rate": _parse_float,
    "health_window": parse_duration,
    "health_port": _parse_int,
    "health_query_timeout": parse_duration,
    "log_level": str.upper,
    "log_format": str.lower,
}

_DURATIONS = tuple(name for name, parser in _PARSERS.items() if parser is parse_duration)
_SURROGATE = re.compile("[\ud800-\udfff]")
