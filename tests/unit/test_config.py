"""Settings: defaults pinned, every variable documented, bad values named."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pytest
from hack.render_configuration import rendered

from passito_jobs.config import (
    ConfigError,
    Settings,
    describe,
    format_duration,
    group_class,
    parse_duration,
    plugin_groups,
)
from passito_jobs.outpass.settings import EmailSettings, OutpassSettings

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"


def read_all(env: Mapping[str, str]) -> tuple[Settings, OutpassSettings, EmailSettings]:
    """The engine's settings and Passito's groups, as a worker with `--import passito_jobs.outpass`
    reads them."""
    return Settings.from_env(env), OutpassSettings.from_env(env), EmailSettings.from_env(env)


def test_defaults_are_pinned() -> None:
    s, outpass, email = read_all({})
    assert (s.database.url, s.local_database.data_dir, s.database.connect_timeout, s.database.listen) == (
        None,
        Path(".passito"),
        5.0,
        True,
    )
    w = s.worker
    assert (w.queues, w.concurrency, w.batch_size, w.job_modules) == ((), 10, 100, ())
    assert (w.poll_interval, w.heartbeat_interval, w.shutdown_timeout, w.job_timeout) == (
        2.0,
        10.0,
        30.0,
        900.0,
    )
    assert (w.retry_backoff_base, w.retry_backoff_cap) == (2.0, 3600.0)
    assert (w.metrics_port, w.log_jobs, w.worker_name) == (9100, True, "")
    assert (w.max_payload_bytes, w.sync_isolation, w.max_abandoned_attempts, w.stall_timeout) == (
        1048576,
        "thread",
        10,
        60.0,
    )
    m = s.maintenance
    assert (m.stuck_after, m.interval, m.lease_ttl) == (60.0, 15.0, 0.0)
    assert m.config().lease_ttl == 45.0  # three intervals, at least 30 s
    assert w.schedules_file is None
    assert (m.keep_completed, m.keep_failed, m.batch_size) == (7 * 86400.0, 30 * 86400.0, 1000)
    sup = s.supervise
    assert (sup.min_workers, sup.max_workers, sup.scale_up_threshold, sup.scale_down_threshold) == (
        1,
        10,
        5.0,
        2.0,
    )
    assert (sup.check_interval, sup.cooldown) == (10.0, 60.0)
    assert (outpass.storage_dir, outpass.public_url, outpass.secret_key, outpass.insecure_dev_secret) == (
        Path(".passito/storage"),
        "http://localhost:8000",
        None,
        False,
    )
    assert (outpass.approval_token_ttl, outpass.file_retention_days) == (3 * 86400.0, 30)
    assert (email.host, email.port, email.security, email.user, email.password) == (
        None,
        0,
        "starttls",
        None,
        None,
    )
    assert (email.sender, email.timeout, email.ca_file) == ("Passito <no-reply@localhost>", 30.0, None)
    op = s.operator
    assert (op.namespaces, op.metrics_port, op.liveness_port) == ((), 9102, 8080)
    assert op.kube_server is None
    h = s.health
    assert (h.stale_after, h.max_failure_ratio, h.window) == (300.0, 0.10, 3600.0)
    assert (h.port, h.query_timeout) == (9101, 5.0)
    assert (s.logging.level, s.logging.format) == ("INFO", "text")


def test_environment_is_parsed() -> None:
    s = Settings.from_env(
        {
            "PASSITO_DATABASE_URL": "postgresql://db/x",
            "PASSITO_QUEUES": "emails, pdfs,",
            "PASSITO_CONCURRENCY": "4",
            "PASSITO_KEEP_COMPLETED": "2d",
            "PASSITO_STUCK_AFTER": "90s",
            "PASSITO_LOG_JOBS": "off",
            "PASSITO_LOG_FORMAT": "JSON",
            "PASSITO_JOB_MODULES": "a.b,c",
        }
    )
    assert s.database.url == "postgresql://db/x"
    assert s.worker.queues == ("emails", "pdfs")
    assert (s.worker.concurrency, s.maintenance.keep_completed, s.maintenance.stuck_after) == (
        4,
        172800.0,
        90.0,
    )
    assert (s.worker.log_jobs, s.logging.format, s.worker.job_modules) == (False, "json", ("a.b", "c"))
    assert s.warnings == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PASSITO_CONCURRENCY": "many"}, "PASSITO_CONCURRENCY must be a whole number, got 'many'"),
        ({"PASSITO_CONCURRENCY": "0"}, "PASSITO_CONCURRENCY must be at least 1"),
        (
            {"PASSITO_STUCK_TIMEOUT": "soon"},
            "PASSITO_STUCK_TIMEOUT must be a duration like 30 \\(seconds\\), 10s, 5m, 1h, got 'soon'",
        ),
        (
            {"PASSITO_STUCK_TIMEOUT": "5s"},
            "PASSITO_STUCK_TIMEOUT must be longer than PASSITO_HEARTBEAT_INTERVAL",
        ),
        (
            {"PASSITO_STUCK_AFTER": "5s"},
            "PASSITO_STUCK_AFTER must be longer than PASSITO_HEARTBEAT_INTERVAL",
        ),
        ({"PASSITO_LOG_JOBS": "maybe"}, "PASSITO_LOG_JOBS must be true or false, got 'maybe'"),
        ({"PASSITO_LOG_FORMAT": "xml"}, "PASSITO_LOG_FORMAT must be text or json"),
        ({"PASSITO_MIN_WORKERS": "5", "PASSITO_MAX_WORKERS": "2"}, "PASSITO_MAX_WORKERS must be at least 1"),
        (
            {"PASSITO_PUBLIC_URL": "passito.example.edu"},
            "PASSITO_PUBLIC_URL must be an http:// or https:// URL",
        ),
        ({"PASSITO_PUBLIC_URL": "http://a\nb"}, "PASSITO_PUBLIC_URL must be an http:// or https:// URL"),
        ({"PASSITO_SMTP_HOST": "a\nb"}, "PASSITO_SMTP_HOST must be a host name"),
        # checked at start: a worker would otherwise fail every outpass or email job with it
        ({"PASSITO_STORAGE_DIR": "/dev/null"}, "PASSITO_STORAGE_DIR must be a directory, not a file"),
        (
            {"PASSITO_SMTP_CA_FILE": "/nonexistent/ca.pem"},
            "PASSITO_SMTP_CA_FILE names a file that does not exist",
        ),
        ({"PASSITO_SMTP_CA_FILE": "/dev/null"}, "PASSITO_SMTP_CA_FILE must be a PEM file of CA certificates"),
        ({"PASSITO_SMTP_CA_FILE": "/"}, "PASSITO_SMTP_CA_FILE cannot be read"),
        ({"PASSITO_SECRET_KEY": " " * 40}, "PASSITO_SECRET_KEY is only whitespace"),
        ({"PASSITO_FILE_RETENTION_DAYS": "0"}, "PASSITO_FILE_RETENTION_DAYS must be at least 1"),
        ({"PASSITO_SMTP_SECURITY": "ssl"}, "PASSITO_SMTP_SECURITY must be starttls, tls or none"),
        ({"PASSITO_SMTP_USER": "u"}, "PASSITO_SMTP_USER and PASSITO_SMTP_PASSWORD must be set together"),
        (
            {"PASSITO_SMTP_USER": "u", "PASSITO_SMTP_PASSWORD": "p", "PASSITO_SMTP_SECURITY": "none"},
            "PASSITO_SMTP_USER needs PASSITO_SMTP_SECURITY starttls or tls",
        ),
        ({"PASSITO_SMTP_FROM": "Passito\r\nBcc: x@y.z"}, "PASSITO_SMTP_FROM must be an address"),
        (
            {"PASSITO_HEALTH_MAX_FAILURE_RATE": "1.5"},
            "PASSITO_HEALTH_MAX_FAILURE_RATE must be between 0 and 1",
        ),
        (
            {"PASSITO_HEALTH_MAX_FAILURE_RATIO": "1.5"},
            "PASSITO_HEALTH_MAX_FAILURE_RATIO must be between 0 and 1",
        ),
        ({"PASSITO_HEALTH_WINDOW": "0"}, "PASSITO_HEALTH_WINDOW must be positive"),
        ({"PASSITO_SYNC_ISOLATION": "fork"}, "PASSITO_SYNC_ISOLATION must be thread or process"),
        ({"PASSITO_MAX_ABANDONED_ATTEMPTS": "0"}, "PASSITO_MAX_ABANDONED_ATTEMPTS must be at least 1"),
        ({"PASSITO_MAX_PAYLOAD_BYTES": "0"}, "PASSITO_MAX_PAYLOAD_BYTES must be between 1 and 104857600"),
        (
            {"PASSITO_MAINTENANCE_LEASE_TTL": "10s"},
            "PASSITO_MAINTENANCE_LEASE_TTL must be longer than PASSITO_MAINTENANCE_INTERVAL",
        ),
        # the name starts every log line: a line break in it would forge log lines
        (
            {"PASSITO_WORKER_NAME": "evil\n[Worker fake:1][ERROR] forged"},
            "PASSITO_WORKER_NAME must not contain control characters",
        ),
        ({"PASSITO_WORKER_NAME": "w" * 129}, "PASSITO_WORKER_NAME must be at most 128 characters"),
        # a loop that runs every 100 nanoseconds spins a core
        ({"PASSITO_POLL_INTERVAL": "0.0001ms"}, "PASSITO_POLL_INTERVAL must be at least 10ms"),
        ({"PASSITO_HEARTBEAT_INTERVAL": "1ms"}, "PASSITO_HEARTBEAT_INTERVAL must be at least 10ms"),
        ({"PASSITO_MAINTENANCE_INTERVAL": "0.001"}, "PASSITO_MAINTENANCE_INTERVAL must be at least 10ms"),
        ({"PASSITO_CHECK_INTERVAL": "5ms"}, "PASSITO_CHECK_INTERVAL must be at least 10ms"),
        (
            {"PASSITO_MAINTENANCE_LEASE_TTL": "-1"},
            "PASSITO_MAINTENANCE_LEASE_TTL must be a duration like 30 \\(seconds\\), 10s, 5m, 1h, got '-1'",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_all(env)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("1.5s", 1.5), ("250ms", 0.25), ("5m", 300.0), ("1h", 3600.0), ("7d", 604800.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_format_duration() -> None:
    assert [format_duration(x) for x in (604800, 3600, 90, 60, 0.5)] == ["7d", "1h", "90s", "1m", "0.5s"]


def test_every_setting_is_documented_with_its_default() -> None:
    docs = DOCS.read_text()
    for row in describe():
        line = next((ln for ln in docs.splitlines() if ln.startswith(f"| `{row['env']}`")), None)
        assert line is not None, f"{row['env']} is missing from docs/configuration.md"
        assert f"`{row['default']}`" in line, f"{row['env']}: docs do not show the default {row['default']}"


def test_the_tables_of_the_docs_are_the_declarations() -> None:
    """docs/configuration.md's tables are generated: `python -m hack.render_configuration`."""
    assert rendered(DOCS.read_text()) == DOCS.read_text()


def test_every_field_has_an_environment_variable() -> None:
    classes = [group_class(f.name) for f in dataclasses.fields(Settings)] + plugin_groups()
    names = [f.metadata["env"] for cls in classes for f in dataclasses.fields(cls)]
    assert all(name.startswith("PASSITO_") for name in names)
    assert len(names) == len(set(names))
    assert len({row["env"] for row in describe()}) == len(describe())


def test_secrets_never_show_in_a_repr() -> None:
    env = {
        "PASSITO_DATABASE_URL": "postgresql://passito:db-pass-123@db/passito",
        "PASSITO_SECRET_KEY": "k" * 40,
        "PASSITO_SMTP_HOST": "smtp.example.edu",
        "PASSITO_SMTP_USER": "mailer",
        "PASSITO_SMTP_PASSWORD": "smtp-pass-456",
    }
    shown = " ".join(repr(group) for group in read_all(env))
    assert "db-pass-123" not in shown
    assert "k" * 40 not in shown
    assert "smtp-pass-456" not in shown
    assert "smtp.example.edu" in shown  # the rest is still there to debug with
