"""The queue's SQL files: named queries (`sql/*.sql`) and the numbered migrations.

Every statement the queue runs lives in `sql/`: the state transitions as SQL functions created
by `sql/migrations/NNNN_name.sql`, and the statements that call them (and the migrator's own
bookkeeping, and LISTEN) as named queries, each after a `-- name: <name>` line. A query comes
from these package files, never from input.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@cache
def named_queries(filename: str) -> dict[str, str]:
    """The named queries of one file in sql/ (each starts with a `-- name: <name>` line)."""
    text = resources.files("passito_jobs.queue").joinpath(f"sql/{filename}").read_text("utf-8")
    found: dict[str, str] = {}
    for chunk in re.split(r"^-- name: ", text, flags=re.MULTILINE)[1:]:
        name, _, body = chunk.partition("\n")
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        found[name.strip()] = "\n".join(lines).strip()
    return found


def queries() -> dict[str, str]:
    """The named queries of sql/queries.sql."""
    return named_queries("queries.sql")


def query(name: str, filename: str = "queries.sql") -> str:
    """One named query."""
    return named_queries(filename)[name]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped with the package, in order."""
    folder = resources.files("passito_jobs.queue").joinpath("sql/migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 0001, 0002, ... without gaps: {versions}")
    return tuple(found)


def latest_version() -> int:
    return migrations()[-1].version
