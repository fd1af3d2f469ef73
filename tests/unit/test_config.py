"""Settings: defaults pinned, every variable documented, bad values named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from passito_jobs.config import ConfigError, Settings, describe, format_duration, parse_duration

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_defaults_are_pinned() -> None:
    s = Settings.from_env({})
    assert (s.database_url, s.data_dir, s.connect_timeout) == (None, Path(".passito"), 5.0)
    assert (s.queues, s.concurrency, s.batch_size, s.job_modules) == ((), 10, 100, ())
    assert (s.poll_interval, s.heartbeat_interval, s.shutdown_timeout, s.job_timeout) == (
        2.0,
        10.0,
        30.0,
        900.0,
    )
    assert (s.retry_backoff_base, s.retry_backoff_cap) == (2.0, 3600.0)
    assert (s.metrics_port, s.log_jobs, s.worker_name) == (9100, True, "")
    assert (s.max_payload_bytes, s.sync_isolation, s.max_abandoned_attempts, s.stall_timeout) == (
        1048576,
        "thread",
        10,
        60.0,
    )
    assert (s.stuck_timeout, s.maintenance_interval) == (60.0, 15.0)
    assert (s.keep_completed, s.keep_failed, s.prune_batch_size) == (7 * 86400.0, 30 * 86400.0, 1000)
    assert (s.min_workers, s.max_workers, s.scale_up_threshold, s.scale_down_threshold) == (1, 10, 5.0, 2.0)
    assert (s.check_interval, s.cooldown) == (10.0, 60.0)
    assert (s.storage_dir, s.public_url, s.secret_key, s.insecure_dev_secret) == (
        Path(".passito/storage"),
        "http://localhost:8000",
        None,
        False,
    )
    assert (s.approval_token_ttl, s.file_retention_days) == (3 * 86400.0, 30)
    assert (s.smtp_host, s.smtp_port, s.smtp_security, s.smtp_user, s.smtp_password) == (
        None,
        0,
        "starttls",
        None,
        None,
    )
    assert (s.smtp_from, s.smtp_timeout, s.smtp_ca_file) == ("Passito <no-reply@localhost>", 30.0, None)
    assert (s.operator_namespaces, s.operator_metrics_port, s.operator_liveness_port) == ((), 9102, 8080)
    assert s.kube_server is None
    assert (s.health_stale_after, s.health_max_failure_rate, s.health_window) == (300.0, 0.10, 3600.0)
    assert (s.health_port, s.health_query_timeout) == (9101, 5.0)
    assert (s.log_level, s.log_format) == ("INFO", "text")


def test_environment_is_parsed() -> None:
    s = Settings.from_env(
        {
            "PASSITO_DATABASE_URL": "postgresql://db/x",
            "PASSITO_QUEUES": "emails, pdfs,",
            "PASSITO_CONCURRENCY": "4",
            "PASSITO_KEEP_COMPLETED": "2d",
            "PASSITO_STUCK_TIMEOUT": "90s",
            "PASSITO_LOG_JOBS": "off",
            "PASSITO_LOG_FORMAT": "JSON",
            "PASSITO_JOB_MODULES": "a.b,c",
        }
    )
    assert s.database_url == "postgresql://db/x"
    assert s.queues == ("emails", "pdfs")
    assert (s.concurrency, s.keep_completed, s.stuck_timeout) == (4, 172800.0, 90.0)
    assert (s.log_jobs, s.log_format, s.job_modules) == (False, "json", ("a.b", "c"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PASSITO_CONCURRENCY": "many"}, "PASSITO_CONCURRENCY: invalid literal"),
        ({"PASSITO_CONCURRENCY": "0"}, "PASSITO_CONCURRENCY must be at least 1"),
        ({"PASSITO_STUCK_TIMEOUT": "soon"}, "PASSITO_STUCK_TIMEOUT: 'soon' is not a duration"),
        (
            {"PASSITO_STUCK_TIMEOUT": "5s"},
            "PASSITO_STUCK_TIMEOUT must be longer than PASSITO_HEARTBEAT_INTERVAL",
        ),
        ({"PASSITO_LOG_JOBS": "maybe"}, "PASSITO_LOG_JOBS: 'maybe' is not a boolean"),
        ({"PASSITO_LOG_FORMAT": "xml"}, "PASSITO_LOG_FORMAT must be text or json"),
        ({"PASSITO_MIN_WORKERS": "5", "PASSITO_MAX_WORKERS": "2"}, "PASSITO_MAX_WORKERS must be at least 1"),
        (
            {"PASSITO_PUBLIC_URL": "passito.example.edu"},
            "PASSITO_PUBLIC_URL must be an http:// or https:// URL",
        ),
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
        ({"PASSITO_HEALTH_WINDOW": "0"}, "PASSITO_HEALTH_WINDOW must be positive"),
        ({"PASSITO_SYNC_ISOLATION": "fork"}, "PASSITO_SYNC_ISOLATION must be thread or process"),
        ({"PASSITO_MAX_ABANDONED_ATTEMPTS": "0"}, "PASSITO_MAX_ABANDONED_ATTEMPTS must be at least 1"),
        ({"PASSITO_MAX_PAYLOAD_BYTES": "0"}, "PASSITO_MAX_PAYLOAD_BYTES must be between 1 and 104857600"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


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


def test_every_field_has_an_environment_variable() -> None:
    names = [f.metadata["env"] for f in dataclasses.fields(Settings)]
    assert all(name.startswith("PASSITO_") for name in names)
    assert len(names) == len(set(names))


def test_secrets_never_show_in_a_repr() -> None:
    settings = Settings.from_env(
        {
            "PASSITO_DATABASE_URL": "postgresql://passito:db-pass-123@db/passito",
            "PASSITO_SECRET_KEY": "k" * 40,
            "PASSITO_SMTP_HOST": "smtp.example.edu",
            "PASSITO_SMTP_USER": "mailer",
            "PASSITO_SMTP_PASSWORD": "smtp-pass-456",
        }
    )
    shown = repr(settings)
    assert "db-pass-123" not in shown
    assert "k" * 40 not in shown
    assert "smtp-pass-456" not in shown
    assert "smtp.example.edu" in shown  # the rest is still there to debug with
