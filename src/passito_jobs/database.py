"""The Database settings group: `PASSITO_DATABASE_URL` (a secret: `_FILE` works too) and
`PASSITO_CONNECT_TIMEOUT`. The queue reads no settings; these say where its database is."""

from __future__ import annotations

from dataclasses import dataclass

from passito_jobs.queue import conninfo
from passito_jobs.settings import (
    SettingsGroup,
    between,
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
