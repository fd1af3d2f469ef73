"""Migrations: plain SQL files (sql/migrations/NNNN_name.sql), applied in order.

Safe to run from many processes at once: they queue on one transaction advisory lock, and each
migration runs in the same transaction as its row in passito_jobs.schema_migrations, with a
checksum (an applied migration that was edited is refused). The migrator's own statements are
named queries of sql/migrator.sql.
"""

from __future__ import annotations

from psycopg.rows import dict_row

from passito_jobs.queue.connection import Conn
from passito_jobs.queue.sqlfiles import Migration, latest_version, migrations, query


def _sql(name: str) -> str:
    return query(name, "migrator.sql")


def apply(conn: Conn) -> list[Migration]:
    """Apply pending migrations in order under the advisory lock; return those applied."""
    applied: list[Migration] = []
    with conn.transaction():
        for statement in ("lock", "create_schema", "create_bookkeeping"):
            conn.execute(_sql(statement))
        done = {row[0]: row[1] for row in conn.execute(_sql("applied"))}
        for migration in migrations():
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise RuntimeError(
                        f"migration {migration.version:04d}_{migration.name} was changed after "
                        "it was applied; add a new migration instead"
                    )
                continue
            conn.execute(migration.sql)
            params = {"version": migration.version, "name": migration.name, "checksum": migration.checksum}
            conn.execute(_sql("record"), params)
            applied.append(migration)
    return applied


NOT_INSTALLED = "the passito_jobs schema is not installed: run `passito-jobs migrate`"


def schema_problem(version: int | None, needed: str = "this code") -> str | None:
    """The one line for a schema at migration `version` (None: not installed) that this code
    cannot use, or None when it can."""
    if version is None:
        return NOT_INSTALLED
    latest = latest_version()
    if version < latest:
        return (
            f"the passito_jobs schema is at migration {version}, {needed} needs {latest}: "
            "run `passito-jobs migrate`"
        )
    return None


def installed_version(conn: Conn) -> int | None:
    """The newest applied migration, or None when the schema is not installed."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_sql("installed")).fetchone()
        if not row or not row["installed"]:
            return None
        row = cur.execute(_sql("version")).fetchone()
    return None if row is None or row["version"] is None else int(row["version"])
