"""The database password never shows, whatever the shape of PASSITO_DATABASE_URL: not in any
command's output or log, not in a Python exception. Each message still says what is wrong."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from passito_jobs import dispatch
from passito_jobs.config import ConfigError
from passito_jobs.queue import dispatch as dispatch_module
from passito_jobs.queue.connection import connect, connect_async
from passito_jobs.queue.errors import DatabaseUnavailableError
from passito_jobs.queue.store import StoreHandle
from passito_jobs.supervisor.load import LoadReader, LoadUnavailableError
from tests.helpers import free_port, http_get, run_cli, wait_for
from tests.outpasses import sample_payload

SECRET = "hunter2-Sekret"
PIECES = ("hunter2", "Sekret")  # no piece of it either

# Strings that cannot be parsed: every command refuses the setting before it does anything.
# (the string, what the message must still say)
MALFORMED = {
    "no-scheme": (f"passito:{SECRET}@db.example/passito", 'missing "=" after "passito:***@db.example'),
    "unencoded-percent": (f"postgresql://passito:{SECRET}%@db/passito", "invalid percent-encoded token"),
    "unclosed-bracket": (f"postgresql://passito:{SECRET}@[::1/passito", 'matching "]" in IPv6 host'),
    "bad-port": (f"postgresql://passito:{SECRET}@db:5432x/passito", 'invalid port "5432x"'),
    "key-value-bad-option": (
        f"host=db sslmod=require password={SECRET}",
        'invalid connection option "sslmod"',
    ),
    # After an unquoted password, an unknown word= might be the rest of the password: masked.
    "key-value-bad-option-after": (f"host=db password={SECRET} sslmod=x", "invalid connection option"),
    "key-value-unterminated": (f"host=db password='{SECRET} dbname=x", "unterminated quoted string"),
    "spaces-in-password": (f"postgresql://passito:{SECRET} x@db/passito", "unexpected spaces"),
}

# Strings that parse, then fail to connect: the error comes from libpq or psycopg at connect time.
CONNECT_FAILS = {
    "refused": (f"postgresql://passito:{SECRET}@127.0.0.1:1/passito", "Connection refused"),
    # libpq ends userinfo at the first @: the rest of the password becomes the host it resolves.
    "unencoded-at": (f"postgresql://passito:p@ss-{SECRET}@127.0.0.1:1/passito", "failed to resolve host"),
    "bad-option-value": (
        f"postgresql://passito:{SECRET}@127.0.0.1:1/passito?sslmode=bogus",
        'invalid sslmode value: "bogus"',
    ),
    "key-value": (f"host=127.0.0.1 port=1 user=passito password='{SECRET} x'", "Connection refused"),
}


def assert_no_secret(text: str) -> None:
    for piece in PIECES:
        assert piece not in text, text


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    return {
        **base,
        "PASSITO_DATA_DIR": str(tmp_path / "passito"),
        "PASSITO_STORAGE_DIR": str(tmp_path / "storage"),
        "PASSITO_INSECURE_DEV_SECRET": "true",
        "PASSITO_CONNECT_TIMEOUT": "2",
        "PASSITO_METRICS_PORT": "0",
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }


@pytest.fixture
def outpass_file(tmp_path: Path) -> str:
    path = tmp_path / "outpass.json"
    path.write_text(json.dumps(sample_payload()))
    return str(path)


def commands(outpass_file: str) -> list[list[str]]:
    """Every command that reads PASSITO_DATABASE_URL and exits on its own."""
    return [
        ["migrate"],
        ["dispatch", "Noop"],
        ["worker"],
        ["health"],
        ["jobs", "list"],
        ["jobs", "show", "1"],
        ["jobs", "retry", "1"],
        ["jobs", "cancel", "1"],
        ["jobs", "prune"],
        ["outpass", "dispatch", "--json", outpass_file],
        ["cleanup-expired-files"],
    ]


def run_all(argvs: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda argv: run_cli(argv, env), argvs))


def assert_one_line_exit_2(done: subprocess.CompletedProcess[str], says: str) -> None:
    where = " ".join(done.args[3:])
    assert done.returncode == 2, (where, done.stdout, done.stderr)
    assert_no_secret(done.stdout + done.stderr)
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("passito-jobs: error: ")]
    assert len(errors) == 1, (where, done.stderr)
    assert says in errors[0], (where, errors[0])


@pytest.mark.slow
@pytest.mark.parametrize("shape", MALFORMED)
def test_every_command_refuses_a_malformed_url_without_showing_the_password(
    env: dict[str, str], outpass_file: str, shape: str
) -> None:
    url, says = MALFORMED[shape]
    long_running = [["health", "serve", "--port", "0"], ["supervise"], ["operator"], ["demo"]]
    for done in run_all([*commands(outpass_file), *long_running], {**env, "PASSITO_DATABASE_URL": url}):
        assert_one_line_exit_2(done, says)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith(
            "passito-jobs: error: PASSITO_DATABASE_URL: not a valid PostgreSQL connection string: "
        )


@pytest.mark.slow
@pytest.mark.parametrize("shape", CONNECT_FAILS)
def test_every_command_names_a_failed_connection_without_showing_the_password(
    env: dict[str, str], outpass_file: str, shape: str
) -> None:
    url, says = CONNECT_FAILS[shape]
    for done in run_all(commands(outpass_file), {**env, "PASSITO_DATABASE_URL": url}):
        assert_one_line_exit_2(done, says)
        assert "cannot connect to the database at " in done.stderr
    shown = run_cli(["db", "url"], {**env, "PASSITO_DATABASE_URL": url})
    assert "PASSITO_DATABASE_URL is set (" in shown.stderr
    assert_no_secret(shown.stdout + shown.stderr)


def run_until(
    argv: list[str], env: dict[str, str], log_path: Path, line: str, poke: Callable[[], bool] = lambda: True
) -> str:
    """Start a long-running command, wait until its output shows `line` (calling `poke` while
    waiting), stop it with SIGTERM; return its output."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "passito_jobs", *argv],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for(
            lambda: poke() and line in log_path.read_text(),
            timeout=60,
            interval=0.2,
            message=f"{line!r} from {argv}",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return log_path.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["unencoded-at", "key-value"])
def test_health_serve_logs_the_unreachable_database_without_the_password(
    env: dict[str, str], tmp_path: Path, shape: str
) -> None:
    url, says = CONNECT_FAILS[shape]
    port = free_port()
    output = run_until(
        ["health", "serve", "--port", str(port)],
        {**env, "PASSITO_DATABASE_URL": url},
        tmp_path / "health.log",
        "Cannot query the queue",
        poke=lambda: http_get(f"http://127.0.0.1:{port}/metrics", timeout=10)[0] == 200,  # a scrape queries
    )
    assert_no_secret(output)
    assert says in output


@pytest.mark.parametrize("shape", ["unencoded-at", "key-value"])
def test_supervise_reports_the_unreachable_database_without_the_password(
    env: dict[str, str], shape: str
) -> None:
    url, says = CONNECT_FAILS[shape]
    done = run_cli(["supervise"], {**env, "PASSITO_DATABASE_URL": url})
    output = done.stdout + done.stderr
    assert_no_secret(output)
    assert done.returncode == 2  # before starting any worker
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("passito-jobs: error: cannot connect to the database at ")
    assert says in line


# ---------------------------------------------------------------- the Python API

ALL_SHAPES = {**MALFORMED, **CONNECT_FAILS}


@pytest.mark.parametrize("shape", ALL_SHAPES)
def test_connect_raises_one_clear_error_without_the_password(shape: str) -> None:
    url, says = ALL_SHAPES[shape]
    for attempt in (
        lambda: connect(url, timeout=2),
        lambda: asyncio.run(connect_async(url, timeout=2)),
        lambda: StoreHandle.to(url, timeout=2).run(lambda store: store.schema_version()),
    ):
        with pytest.raises(DatabaseUnavailableError) as caught:
            attempt()
        message = str(caught.value)
        assert message.startswith("cannot connect to the database")
        assert says in message
        assert_no_secret(message)
        assert "\n" not in message
        assert caught.value.__cause__ is None  # no chained libpq error to print the string


@pytest.mark.parametrize("shape", ["no-scheme", "unclosed-bracket", "unencoded-at", "refused"])
def test_the_load_reader_reports_without_the_password(shape: str) -> None:
    url, says = ALL_SHAPES[shape]
    reader = LoadReader(url, timeout=2)
    with pytest.raises(LoadUnavailableError) as caught:
        reader.read()
    reader.close()
    assert says in str(caught.value)
    assert_no_secret(str(caught.value))


@pytest.fixture
def shared_connection() -> Iterator[None]:
    dispatch_module._shared.close()
    yield
    dispatch_module._shared.close()


@pytest.mark.usefixtures("shared_connection")
@pytest.mark.parametrize("shape", ALL_SHAPES)
def test_dispatch_from_the_environment_raises_without_the_password(
    monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    url, says = ALL_SHAPES[shape]
    monkeypatch.setenv("PASSITO_DATABASE_URL", url)
    monkeypatch.setenv("PASSITO_CONNECT_TIMEOUT", "2")
    expected = ConfigError if shape in MALFORMED else DatabaseUnavailableError
    with pytest.raises(expected) as caught:
        dispatch("Noop")
    assert says in str(caught.value)
    assert_no_secret(str(caught.value))
    assert_no_secret(repr(caught.value))
