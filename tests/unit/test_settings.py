"""The settings machinery: secrets from files, deprecated names, errors that name the field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from passito_jobs.config import Settings
from passito_jobs.outpass.settings import EmailSettings, OutpassSettings
from passito_jobs.settings import ConfigError, FieldError, read_secret_file

KEY = "k" * 40


def secret_file(tmp_path: Path, content: bytes, name: str = "secret") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    ("content", "value"),
    [
        (KEY.encode(), KEY),
        (KEY.encode() + b"\n", KEY),  # as `echo` and most editors write it
        (KEY.encode() + b"\r\n", KEY),
        (KEY.encode() + b"\n\n", KEY + "\n"),  # exactly one newline goes
        (b" " + KEY.encode() + b" \n", " " + KEY + " "),  # spaces are part of the value
    ],
)
def test_a_secret_comes_from_its_file_with_one_trailing_newline_stripped(
    tmp_path: Path, content: bytes, value: str
) -> None:
    settings = OutpassSettings.from_env({"PASSITO_SECRET_KEY_FILE": secret_file(tmp_path, content)})
    assert settings.secret_key == value
    assert settings.source("secret_key") == "PASSITO_SECRET_KEY_FILE"


def test_every_secret_setting_takes_a_file(tmp_path: Path) -> None:
    url = "postgresql://passito:db-pass-123@db.internal:5432/passito"
    env = {
        "PASSITO_DATABASE_URL_FILE": secret_file(tmp_path, url.encode() + b"\n", "url"),
        "PASSITO_SMTP_USER": "mailer",
        "PASSITO_SMTP_PASSWORD_FILE": secret_file(tmp_path, b"smtp-pass-456\n", "smtp"),
    }
    assert Settings.from_env(env).database.url == url
    assert EmailSettings.from_env(env).password == "smtp-pass-456"


def test_the_variable_and_its_file_together_are_refused(tmp_path: Path) -> None:
    env = {"PASSITO_SECRET_KEY": KEY, "PASSITO_SECRET_KEY_FILE": secret_file(tmp_path, b"other" * 10)}
    with pytest.raises(ConfigError) as caught:
        OutpassSettings.from_env(env)
    assert str(caught.value) == "set PASSITO_SECRET_KEY or PASSITO_SECRET_KEY_FILE, not both"
    assert KEY not in str(caught.value)


def test_an_empty_file_variable_is_as_if_unset(tmp_path: Path) -> None:
    assert (
        OutpassSettings.from_env({"PASSITO_SECRET_KEY": KEY, "PASSITO_SECRET_KEY_FILE": ""}).secret_key == KEY
    )


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp: str(tmp / "missing"), "No such file or directory"),
        (str, "Is a directory"),
        (lambda tmp: secret_file(tmp, b"\xff\xfe" + KEY.encode()), "is not UTF-8 text"),
        (lambda tmp: secret_file(tmp, KEY.encode() * 3000), "is larger than 64 KiB"),
        (lambda tmp: str(tmp) + "/a\x00b", "not a valid path"),
        (lambda tmp: secret_file(tmp, b""), "is empty"),
        (lambda tmp: secret_file(tmp, b"\n"), "is empty"),
        (lambda tmp: "/dev/null", "is empty"),
    ],
    ids=["missing", "directory", "not-utf8", "huge", "nul-in-path", "empty", "a-newline", "dev-null"],
)
def test_an_unreadable_file_is_one_line_naming_the_path_never_the_content(
    tmp_path: Path, make: object, reason: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ConfigError) as caught:
        OutpassSettings.from_env({"PASSITO_SECRET_KEY_FILE": path})
    message = str(caught.value)
    assert message.startswith("PASSITO_SECRET_KEY_FILE: ")
    assert reason in message
    assert "\n" not in message
    assert KEY not in message
    assert KEY[:8] not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission_is_named(tmp_path: Path) -> None:
    path = secret_file(tmp_path, KEY.encode())
    os.chmod(path, 0o000)
    with pytest.raises(ConfigError, match=r"PASSITO_SECRET_KEY_FILE: cannot read .*: Permission denied"):
        read_secret_file("PASSITO_SECRET_KEY_FILE", path)


def test_a_malformed_url_from_a_file_is_masked(tmp_path: Path) -> None:
    env = {"PASSITO_DATABASE_URL_FILE": secret_file(tmp_path, b"app:s3cr3t-pw@db/passito\n")}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert str(caught.value).startswith("PASSITO_DATABASE_URL_FILE: not a valid PostgreSQL connection string")
    assert "s3cr3t-pw" not in str(caught.value)


def test_a_secret_from_a_file_is_still_checked_and_still_hidden(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        OutpassSettings.from_env({"PASSITO_SECRET_KEY_FILE": secret_file(tmp_path, b"hunter2\n")})
    assert str(caught.value) == ("PASSITO_SECRET_KEY_FILE is too short: 7 characters, at least 32")


def test_a_deprecated_name_still_works_with_a_warning() -> None:
    settings = Settings.from_env({"PASSITO_STUCK_TIMEOUT": "90s", "PASSITO_HEALTH_MAX_FAILURE_RATE": "0.2"})
    assert settings.maintenance.stuck_after == 90.0
    assert settings.health.max_failure_ratio == 0.2
    assert settings.warnings == (
        "PASSITO_STUCK_TIMEOUT is deprecated and will stop working in the next release: "
        "use PASSITO_STUCK_AFTER",
        "PASSITO_HEALTH_MAX_FAILURE_RATE is deprecated and will stop working in the next release: "
        "use PASSITO_HEALTH_MAX_FAILURE_RATIO",
    )


def test_a_new_and_an_old_name_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="set PASSITO_STUCK_AFTER or PASSITO_STUCK_TIMEOUT"):
        Settings.from_env({"PASSITO_STUCK_AFTER": "90s", "PASSITO_STUCK_TIMEOUT": "90s"})


def test_an_error_names_its_field_and_each_front_end_spells_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PASSITO_MIN_WORKERS": "5", "PASSITO_MAX_WORKERS": "2"})
    error = caught.value
    assert error.field == "max_workers"
    assert str(error) == ("PASSITO_MAX_WORKERS must be at least 1 and not below PASSITO_MIN_WORKERS (got 2)")
    flags = {"max_workers": "--max-workers", "min_workers": "--min-workers"}
    assert (
        error.render(flags.__getitem__)
        == "--max-workers must be at least 1 and not below --min-workers (got 2)"
    )


def test_braces_in_a_value_are_not_taken_for_a_field() -> None:
    error = FieldError("queues", "{queues} holds {not_a_field}", names={"queues"}, detail=" (got '{queues}')")
    assert (
        error.render(lambda name: "PASSITO_QUEUES") == "PASSITO_QUEUES holds {not_a_field} (got '{queues}')"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PASSITO_CONCURRENCY": "abc"}, "PASSITO_CONCURRENCY must be a whole number, got 'abc'"),
        ({"PASSITO_SCALE_UP_THRESHOLD": "lots"}, "PASSITO_SCALE_UP_THRESHOLD must be a number, got 'lots'"),
        ({"PASSITO_QUEUES": "a,\tb c"}, None),
        ({"PASSITO_QUEUES": "ok,bad\x01"}, "PASSITO_QUEUES holds a bad queue name: queue must not contain"),
        ({"PASSITO_PRUNE_BATCH_SIZE": "3000000000"}, "PASSITO_PRUNE_BATCH_SIZE must be at most 2147483647"),
        ({"PASSITO_CONNECT_TIMEOUT": "2d"}, "PASSITO_CONNECT_TIMEOUT must be at most 1d"),
        ({"PASSITO_LISTEN": "pgbouncer\x00"}, "PASSITO_LISTEN must be true or false, got 'pgbouncer"),
        ({"PASSITO_LISTEN": " FALSE "}, None),
    ],
)
def test_values_are_checked_in_words_people_use(env: dict[str, str], message: str | None) -> None:
    if message is None:
        Settings.from_env(env)
        return
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_listen_false_means_a_transaction_pooler_no_prepared_statements() -> None:
    pooled = Settings.from_env({"PASSITO_LISTEN": "false"}).database
    direct = Settings.from_env({}).database
    assert (pooled.listen, pooled.prepare, direct.listen, direct.prepare) == (False, False, True, True)
