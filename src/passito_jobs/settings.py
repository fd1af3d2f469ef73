"""The settings machinery: fields declared once, read from the environment, checked by field.

A settings group is a frozen dataclass deriving from `SettingsGroup`, declared next to what it configures
(`worker/settings.py`, `outpass/settings.py`, ...); `config.py` composes them. Each field is declared once
with `setting(env, default, doc, parse=..., check=...)`: its environment variable, default, one-line doc
(docs/configuration.md is generated from it), parser and check (worker/settings.py is a full example).

Errors name the field, not a spelling of it: `FieldError` (and `ConfigError`, one for settings) carries a
message in which `{field_name}` stands for a field; each front end renders it with its own spelling (the
environment variable, a command-line flag, a CRD field). A secret setting (`secret=True`) never shows in a
repr or a message, and also accepts `<NAME>_FILE`: the path of a file holding the value (one trailing
newline stripped), as Kubernetes mounts secrets. An old name of a setting (`deprecated_env=`) is still
read, with a warning in `SettingsGroup.warnings`.

This module imports nothing of passito_jobs: every layer may use it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

MAX_DURATION = 36500 * 86400.0
"""The longest duration anything accepts: 100 years, well within PostgreSQL's intervals and
timestamps (now() minus it is still a date) and Python's timeouts."""
MAX_WORKERS = 10_000
"""The most worker processes, or jobs one worker runs at once, that any setting or flag takes."""
MAX_SECRET_FILE_BYTES = 64 * 1024
"""A secret file holds one value: a URL, a key, a password."""

_NAME = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


# ---------------------------------------------------------------- errors that name a field


class FieldError(ValueError):
    """A value breaks a rule. `field` is the attribute at fault; in `message`, `{name}` stands
    for the field `name` (the one at fault and any it is compared with), so that each front end
    spells the names its own way: `render(spell)`. `str()` spells them as attributes. `detail`
    (the value that was given, say) follows the message as it is."""

    def __init__(
        self, field: str, message: str, *, names: Iterable[str] | None = None, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.detail = detail
        self.names = frozenset(_NAME.findall(message) if names is None else names)

    def render(self, spell: Callable[[str], str]) -> str:
        text = _NAME.sub(
            lambda match: spell(match.group(1)) if match.group(1) in self.names else match.group(0),
            self.message,
        )
        return text + self.detail

    def __str__(self) -> str:
        return self.render(lambda name: name)


class ConfigError(FieldError):
    """A setting cannot be used; `str()` names its variable (`spelled`: field -> the variable it
    was read from). `field` is empty for a problem of no one field (a job module's import)."""

    def __init__(
        self, message: str, *, field: str = "", spelled: Mapping[str, str] | None = None, detail: str = ""
    ) -> None:
        self.spelled = dict(spelled or {})
        super().__init__(field, message, names=self.spelled, detail=detail)

    def __str__(self) -> str:
        return self.render(self.spelled.__getitem__)


def printable(text: str, limit: int = 80) -> str:
    """`text` on one line, control characters escaped, cut to `limit` characters."""
    safe = _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode(), text)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


# ---------------------------------------------------------------- parsers


def parse_duration(text: str) -> float:
    """Parse `90`, `1.5s`, `250ms`, `5m`, `1h` or `7d` into seconds (at most 100 years)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"must be a duration like 30 (seconds), 10s, 5m, 1h, got {printable(text, 40)!r}")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds <= MAX_DURATION:  # also refuses an infinite one ("9" * 400)
        raise ValueError(f"must be at most 36500d (100 years), got {text.strip()[:40]!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration: 604800 -> '7d', 90 -> '90s'."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"must be true or false, got {printable(text, 40)!r}")


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:  # also a number of more than 4,300 digits
        raise ValueError(f"must be a whole number, got {printable(text.strip(), 40)!r}") from None


def parse_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"must be a number, got {printable(text.strip(), 40)!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {text.strip()!r}")
    return value


def parse_list(text: str) -> tuple[str, ...]:
    """`a, b,` -> ('a', 'b'): the comma-separated lists of settings and flags."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_optional_str(text: str) -> str | None:
    return text or None


def parse_optional_stripped(text: str) -> str | None:
    return text.strip() or None


def parse_optional_path(text: str) -> Path | None:
    return Path(text) if text else None


def parse_lower(text: str) -> str:
    return text.strip().lower()


def parse_upper(text: str) -> str:
    return text.strip().upper()


# ---------------------------------------------------------------- checks (None: fine)

Check = Callable[[Any], str | None]


def positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


def not_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def between(low: float, high: float, message: str = "") -> Check:
    """A number from `low` to `high`; the message says so (or `message`)."""

    def check(value: float) -> str | None:
        if low <= value <= high:
            return None
        if message:
            return message
        if value < low:
            return f"must be at least {_number(low)}"
        return f"must be at most {_number(high)}"

    return check


loop_interval = between(0.01, MAX_DURATION, "must be at least 10ms (how often a loop runs)")  # else it spins


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def port_number(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a port number or 0"


def one_of(*choices: str) -> Check:
    spelled = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]

    def check(value: str) -> str | None:
        return None if value in choices else f"must be {spelled}"

    return check


def duration(value: float) -> str | None:
    """Every duration within 100 years (and finite): settings built in code skip the parser."""
    if isinstance(value, int | float) and math.isfinite(value) and value <= MAX_DURATION:
        return None
    return "must be at most 36500d (100 years)"


# ---------------------------------------------------------------- fields and groups


def setting(
    env: str,
    default: Any,
    doc: str,
    *,
    parse: Callable[[str], Any],
    check: Check | Iterable[Check] = (),
    secret: bool = False,
    deprecated_env: tuple[str, ...] = (),
    shown: str | None = None,
) -> Any:
    """Declare a field of a settings group. `check` returns what is wrong ("must be positive")
    or None. `secret`: never in a repr or message, and also read from `<env>_FILE`. `shown`: the
    default as docs/configuration.md shows it, when the value's own spelling is not it."""
    checks = (check,) if callable(check) else tuple(check)
    if parse is parse_duration:
        checks = (*checks, duration)
    metadata = {
        "env": env,
        "doc": doc,
        "parse": parse,
        "checks": checks,
        "secret": secret,
        "deprecated_env": deprecated_env,
        "shown": shown,
    }
    return dataclasses.field(default=default, repr=not secret, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class SettingsGroup:
    """Base of a settings group (a frozen dataclass of `setting` fields)."""

    GROUP: ClassVar[str] = ""
    """The heading of the group in docs/configuration.md."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read the group from `environ` (default: os.environ); ConfigError names the variable."""
        values, sources, warnings = read_environment(cls, environ)
        group = cls(**values)
        object.__setattr__(group, "_sources", sources)
        object.__setattr__(group, "_warnings", tuple(warnings))
        group.validate()
        return group

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (command-line flags), validated."""
        group = dataclasses.replace(self, **changes)
        sources = {k: v for k, v in getattr(self, "_sources", {}).items() if k not in changes}
        object.__setattr__(group, "_sources", sources)
        object.__setattr__(group, "_warnings", self.warnings)
        group.validate()
        return group

    @property
    def warnings(self) -> tuple[str, ...]:
        """Deprecated variables that were read, one line each (the CLI logs them)."""
        return tuple(getattr(self, "_warnings", ()))

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of a field."""
        return str(_field(cls, field).metadata["env"])

    def source(self, field: str) -> str:
        """The environment variable the field was read from (an old name, if that was set)."""
        return str(getattr(self, "_sources", {}).get(field) or self.env_name(field))

    def spelled(self) -> dict[str, str]:
        return {f.name: self.source(f.name) for f in dataclasses.fields(self)}

    def validate(self) -> None:
        """Each field's checks, then the group's own (`checks`); the first problem raises."""
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            for check in spec.metadata.get("checks", ()):
                problem = check(value)
                if problem is not None:
                    self.fail(spec.name, "{" + spec.name + "} " + problem, got=value)
        for ok, name, message in self.checks():
            if not ok:
                self.fail(name, message, got=getattr(self, name))

    def checks(self) -> Iterable[tuple[bool, str, str]]:
        """(ok, field, message) rules between fields; `{name}` in a message names a field."""
        return ()

    def fail(self, field: str, message: str, *, got: Any) -> None:
        """Raise the ConfigError of `field`, with the value it got: never a secret's (a secret's
        check words its message without the value)."""
        text = repr(got)
        shown = text if len(text) <= 80 else text[:77] + "..."
        secret = _field(type(self), field).metadata.get("secret")
        raise ConfigError(
            message, field=field, spelled=self.spelled(), detail="" if secret else f" (got {shown})"
        )


def _field(cls: type[Any], name: str) -> dataclasses.Field[Any]:
    for spec in dataclasses.fields(cls):
        if spec.name == name:
            return spec
    raise KeyError(name)


def read_environment(
    cls: type[Any], environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """The fields of the settings class `cls` given in `environ` (default: os.environ), parsed;
    with the variable each was read from, and a warning per deprecated variable."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    warnings: list[str] = []
    for spec in dataclasses.fields(cls):
        found = _raw_value(spec, env, warnings)
        if found is None:
            continue
        name, raw = found
        if _SURROGATE.search(raw):  # bytes that are not UTF-8 (Python keeps them as surrogates)
            raise ConfigError(f"{name} is not valid UTF-8 text", field=spec.name)
        try:
            values[spec.name] = spec.metadata["parse"](raw)
        except ValueError as exc:
            joint = " " if str(exc).startswith(("must ", "is ")) else ": "  # "X must be ..."; "X: why"
            raise ConfigError(f"{name}{joint}{exc}", field=spec.name) from None
        sources[spec.name] = name
    return values, sources, warnings


def _raw_value(
    spec: dataclasses.Field[Any], env: Mapping[str, str], warnings: list[str]
) -> tuple[str, str] | None:
    """(variable, text) of a field, from its variable, its `_FILE` twin or an old name."""
    name: str = spec.metadata["env"]
    if spec.metadata.get("secret") and env.get(f"{name}_FILE"):
        if env.get(name):
            raise ConfigError(f"set {name} or {name}_FILE, not both", field=spec.name)
        return f"{name}_FILE", read_secret_file(f"{name}_FILE", env[f"{name}_FILE"], spec.name)
    if name in env:
        for old in spec.metadata.get("deprecated_env", ()):
            if old in env:
                raise ConfigError(f"set {name} or {old} (its deprecated name), not both", field=spec.name)
        return name, env[name]
    for old in spec.metadata.get("deprecated_env", ()):
        if old in env:
            warnings.append(f"{old} is deprecated and will stop working in the next release: use {name}")
            return old, env[old]
    return None


def read_secret_file(variable: str, path: str, field: str = "") -> str:
    """The value in the file at `path` with exactly one trailing newline stripped. A message
    names the variable and the path, never what the file holds."""
    where = printable(path, 200)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{variable}: cannot read {where}: {exc.strerror or type(exc).__name__}", field=field
        ) from None
    except ValueError:  # a NUL character in the path
        raise ConfigError(f"{variable}: cannot read {where}: not a valid path", field=field) from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        too_big = f"is larger than {MAX_SECRET_FILE_BYTES // 1024} KiB (a secret file holds one value)"
        raise ConfigError(f"{variable}: {where} {too_big}", field=field)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{variable}: {where} is not UTF-8 text", field=field) from None
    text = text.removesuffix("\r\n") if text.endswith("\r\n") else text.removesuffix("\n")
    if not text:  # not "unset": an empty database URL would mean the embedded PostgreSQL
        raise ConfigError(f"{variable}: {where} is empty (a secret file holds the value)", field=field)
    return text
