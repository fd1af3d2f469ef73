"""Every setting of passito-jobs: the settings groups, composed.

Each group is declared next to what it configures (settings.py is the machinery):

    database          database.py          PASSITO_DATABASE_URL, PASSITO_CONNECT_TIMEOUT
    local_database    localdb.py           PASSITO_DATA_DIR
    worker            worker/settings.py   PASSITO_CONCURRENCY, PASSITO_QUEUES, ...
    maintenance       worker/settings.py   PASSITO_STUCK_AFTER, PASSITO_KEEP_COMPLETED, ...
    supervise         supervisor/settings.py  PASSITO_MIN_WORKERS, ... (`passito-jobs supervise`)
    operator          supervisor/settings.py  PASSITO_OPERATOR_*
    health            health/settings.py   PASSITO_HEALTH_*
    web               web/settings.py      PASSITO_WEB_* (`passito-jobs web`, the dashboard)
    logging           logs.py              PASSITO_LOG_LEVEL, PASSITO_LOG_FORMAT

A plug-in's groups (Passito's Outpass jobs and Email groups, in outpass/settings.py) are read by
the plug-in itself when it is loaded; `describe()` lists them too, for docs/configuration.md
(a test keeps that file in step). Each component receives only its group; rules between groups
live here (`Settings.validate`). Command-line flags override the variables (cli/options.py).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from passito_jobs.database import DatabaseSettings
from passito_jobs.health.settings import HealthSettings
from passito_jobs.localdb import LocalDatabase, LocalDatabaseSettings
from passito_jobs.logs import LoggingSettings
from passito_jobs.queue import dispatch, limits
from passito_jobs.queue.connection import Conn, connect
from passito_jobs.settings import (
    MAX_DURATION,
    ConfigError,
    SettingsGroup,
    format_duration,
    parse_duration,
    parse_list,
)
from passito_jobs.supervisor.settings import LocalSupervisorSettings, OperatorSettings
from passito_jobs.tracing import current_trace_context
from passito_jobs.web.settings import WebSettings
from passito_jobs.worker.settings import MaintenanceSettings, WorkerSettings

__all__ = [
    "MAX_DURATION",
    "ConfigError",
    "Settings",
    "describe",
    "format_duration",
    "group_class",
    "parse_duration",
    "parse_list",
]

PLUGIN_SETTINGS = {"passito_jobs.outpass.settings": ("OutpassSettings", "EmailSettings")}
"""Settings groups of plug-ins, by module: listed by `describe`, read by the plug-in."""


@dataclass(frozen=True)
class Settings:
    """The engine's settings, by group. `Settings.from_env()` reads them all."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    local_database: LocalDatabaseSettings = field(default_factory=LocalDatabaseSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
    supervise: LocalSupervisorSettings = field(default_factory=LocalSupervisorSettings)
    operator: OperatorSettings = field(default_factory=OperatorSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    web: WebSettings = field(default_factory=WebSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every group from `environ` (default: os.environ); ConfigError names the variable."""
        groups: dict[str, Any] = {
            spec.name: _group_class(spec.type).from_env(environ) for spec in dataclasses.fields(cls)
        }
        settings = cls(**groups)
        settings.validate()
        return settings

    def replace(self, **groups: Any) -> Settings:
        """A copy with some groups replaced (command-line flags), validated."""
        settings = dataclasses.replace(self, **groups)
        settings.validate()
        return settings

    def groups(self) -> list[SettingsGroup]:
        return [getattr(self, spec.name) for spec in dataclasses.fields(self)]

    @property
    def warnings(self) -> tuple[str, ...]:
        """One line per deprecated variable that was read (the CLI logs them)."""
        return tuple(line for group in self.groups() for line in group.warnings)

    def validate(self) -> None:
        """The rules between groups."""
        worker, maintenance = self.worker, self.maintenance
        if not maintenance.stuck_after > worker.heartbeat_interval:
            spelled = {**worker.spelled(), **maintenance.spelled()}
            raise ConfigError(
                "{stuck_after} must be longer than {heartbeat_interval}",
                field="stuck_after",
                spelled=spelled,
                detail=f" (got {maintenance.stuck_after!r})",
            )


def _group_class(kind: Any) -> type[SettingsGroup]:
    """The class of a group field (annotations are strings under `from __future__`)."""
    found = globals()[kind] if isinstance(kind, str) else kind
    assert isinstance(found, type)
    assert issubclass(found, SettingsGroup)
    return found


def group_class(name: str) -> type[SettingsGroup]:
    """The class of the group `Settings.<name>`."""
    return _group_class(next(spec.type for spec in dataclasses.fields(Settings) if spec.name == name))


def shown_default(spec: dataclasses.Field[Any]) -> str:
    """A field's default as docs/configuration.md and `--help` show it."""
    if spec.metadata.get("shown") is not None:
        return str(spec.metadata["shown"])
    default = spec.default
    if isinstance(default, tuple):
        return ",".join(str(item) for item in default) or "(empty)"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and spec.metadata.get("parse") is parse_duration:
        return format_duration(default)
    if isinstance(default, float):
        return f"{default:g}"
    if default is None or default == "":
        return "(unset)"
    return str(default)


def describe_group(cls: type[SettingsGroup]) -> Iterator[dict[str, str]]:
    """Every setting of a group as {env, default, doc, group}, with its `_FILE` twin (secrets)
    and its deprecated names."""
    for spec in dataclasses.fields(cls):
        env = spec.metadata["env"]
        yield {"env": env, "default": shown_default(spec), "doc": spec.metadata["doc"], "group": cls.GROUP}
        if spec.metadata.get("secret"):
            yield {
                "env": f"{env}_FILE",
                "default": "(unset)",
                "doc": f"A file holding {env} (one trailing newline is stripped), instead of the variable: "
                "how Kubernetes mounts secrets. Setting both is an error.",
                "group": cls.GROUP,
            }
        for old in spec.metadata.get("deprecated_env", ()):
            yield {
                "env": old,
                "default": "(unset)",
                "doc": f"Deprecated name of {env}: still read for one release, with a warning.",
                "group": cls.GROUP,
            }


def plugin_groups() -> list[type[SettingsGroup]]:
    """The plug-ins' settings groups. Importing a plug-in's module registers its job types: only
    documentation (`describe`) needs every group at once."""
    found = []
    for module, names in PLUGIN_SETTINGS.items():
        loaded = importlib.import_module(module)
        found += [getattr(loaded, name) for name in names]
    return found


def describe() -> list[dict[str, str]]:
    """Every setting as {env, default, doc, group}: the source of docs/configuration.md."""
    engine = [_group_class(spec.type) for spec in dataclasses.fields(Settings)]
    return [row for group in [*engine, *plugin_groups()] for row in describe_group(group)]


def markdown_tables() -> dict[str, str]:
    """Each group's table of docs/configuration.md, by group title (`python -m hack.render_configuration`
    writes them between `<!-- settings: Title -->` and `<!-- /settings -->`; a test checks them)."""
    tables: dict[str, list[str]] = {}
    for row in describe():
        lines = tables.setdefault(row["group"], ["| Variable | Default | Meaning |", "|---|---|---|"])
        lines.append(f"| `{row['env']}` | `{row['default']}` | {row['doc']} |")
    return {group: "\n".join(lines) for group, lines in tables.items()}


_payload_limits: dict[str | None, int] = {}


def payload_limit_from_env() -> int:
    """PASSITO_MAX_PAYLOAD_BYTES, checked as the Worker group checks it (read at each dispatch)."""
    name = WorkerSettings.env_name("max_payload_bytes")
    raw = os.environ.get(name)
    if raw not in _payload_limits:
        limit = limits.DEFAULT_MAX_PAYLOAD_BYTES
        if raw is not None:
            limit = WorkerSettings.from_env({name: raw}).max_payload_bytes
        _payload_limits[raw] = limit
    return _payload_limits[raw]


def database_url(database: DatabaseSettings, local: LocalDatabaseSettings) -> str:
    """Where the queue is, for the CLI and for `dispatch` alike: PASSITO_DATABASE_URL, or the
    embedded PostgreSQL under PASSITO_DATA_DIR (started if it is not running) when it is unset."""
    return database.url or LocalDatabase(local.data_dir).start()


def _connect_from_env() -> Conn:
    database = DatabaseSettings.from_env()
    url = database_url(database, LocalDatabaseSettings.from_env())
    return connect(url, timeout=database.connect_timeout, prepare=database.prepare)


def install_dispatch_defaults() -> None:
    """`dispatch` without `conn=` connects where the CLI does (`database_url`) and checks
    payloads against PASSITO_MAX_PAYLOAD_BYTES (the queue takes plain values:
    `queue.dispatch.defaults`)."""
    dispatch.defaults.connect = _connect_from_env
    dispatch.defaults.max_payload_bytes = payload_limit_from_env
    dispatch.defaults.trace_context = current_trace_context
