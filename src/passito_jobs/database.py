"""The Database settings group: `PASSITO_DATABASE_URL` (a secret: `_FILE` works too),
`PASSITO_CONNECT_TIMEOUT` and `PASSITO_LISTEN`. The queue reads no settings; these say where its
database is and whether a transaction pooler (PgBouncer) stands in between."""

from __future__ import annotations

from dataclasses import dataclass

from passito_jobs.queue import conninfo
from passito_jobs.settings import (
    SettingsGroup,
    between,
    parse_bool,
    parse_duration,
    positive,
    setting,
)


def parse_database_url(text: str) -> str | None:
    """A malformed URL fails here, once, for every command: the message masks the password."""
    if text:
        conninfo.parse(text)  # raises InvalidDatabaseUrlError, a ValueError
    return text or None


@dataclass(frozen=True)
class DatabaseSettings(SettingsGroup):
    """Where the queue's PostgreSQL is."""

    GROUP = "Database"

    url: str | None = setting(
        "PASSITO_DATABASE_URL",
        None,
        "PostgreSQL connection URL (`postgresql://user:password@host:5432/dbname`) or key=value "
        "string; its password is masked in every message. Unset: local commands start an embedded "
        "PostgreSQL under PASSITO_DATA_DIR.",
        parse=parse_database_url,
        secret=True,  # it may carry the database password
    )
    connect_timeout: float = setting(
        "PASSITO_CONNECT_TIMEOUT",
        5.0,
        "Seconds to wait for a database connection.",
        parse=parse_duration,
        # libpq takes whole seconds as a C int; a day is more than any network needs.
        check=(positive, between(0, 86400, "must be at most 1d")),
    )

    listen: bool = setting(
        "PASSITO_LISTEN",
        True,
        "false: the URL points at a pooler in transaction mode (PgBouncer): workers poll for jobs "
        "every PASSITO_POLL_INTERVAL instead of LISTEN, and no connection prepares statements on "
        "the server (the pooler may hand the next transaction to another server connection).",
        parse=parse_bool,
    )

    @property
    def prepare(self) -> bool:
        """Whether connections may prepare statements on the server: not through a transaction
        pooler, where a statement prepared on one server connection is missing on the next."""
        return self.listen
