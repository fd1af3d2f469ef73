"""The Dashboard settings group (`PASSITO_WEB_*`), declared next to the dashboard.

`config.Settings.web` composes it (docs/configuration.md lists it under "Dashboard"). The
dashboard's secrets are files, as Kubernetes mounts them: the users file (argon2 hashes) and the
tokens files (SHA-256 digests of bearer tokens); a setting holds only their paths, and no log
line or message ever shows what they hold. The CSRF token (double submit) is signed with the key
in PASSITO_WEB_CSRF_KEY_FILE, the same for every replica that mounts it, or else with a key made at
start (a form must then come back to the process that served its page); the cache of verified
passwords is keyed per process.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from passito_jobs.settings import (
    SettingsGroup,
    between,
    one_of,
    parse_bool,
    parse_duration,
    parse_int,
    parse_list,
    parse_lower,
    parse_optional_path,
    port_number,
    positive,
    setting,
)

AUTH_MODES = ("basic", "header", "token")
ROLES = ("viewer", "admin")
DEFAULT_MASK_FIELDS = (
    "student_name",
    "student_email",
    "roll_number",
    "room",
    "parent_name",
    "parent_email",
    "phone",
    "student_phone",
    "parent_phone",
    "to",
)
"""The outpass fields that identify a person (src/passito_jobs/jobs/outpass.py), and `to`, the
recipient an email job's result records."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_auth(text: str) -> tuple[str, ...]:
    """`none` (or empty) or a comma-separated list of basic, header and token."""
    modes = tuple(mode.lower() for mode in parse_list(text))
    if modes in ((), ("none",)):
        return ()
    unknown = [mode for mode in modes if mode not in AUTH_MODES]
    if unknown:
        raise ValueError(
            "none cannot be combined with other modes (basic, header or token)"
            if "none" in unknown
            else f"{unknown[0]!r} is not an authentication mode (none, basic, header or token)"
        )
    return tuple(dict.fromkeys(modes))


def parse_networks(text: str) -> tuple[Network, ...]:
    """Addresses or networks (`10.0.0.5, 10.1.0.0/16, fd00::/8`)."""
    found = []
    for item in parse_list(text):
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(found)


def _paths(text: str) -> tuple[Path, ...]:
    return tuple(Path(item) for item in parse_list(text))


def _optional_path(text: str) -> Path | None:
    return parse_optional_path(text.strip())


def _not_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


@dataclass(frozen=True)
class WebSettings(SettingsGroup):
    """Settings of `passito-jobs web`; `WebSettings.from_env()` reads them."""

    GROUP = "Dashboard"

    host: str = setting(
        "PASSITO_WEB_HOST",
        "127.0.0.1",
        "Address the dashboard listens on; `web --host` overrides it. Any address but loopback "
        "needs PASSITO_WEB_AUTH.",
        parse=str.strip,
        check=_not_empty,
    )
    port: int = setting(
        "PASSITO_WEB_PORT",
        8080,
        "Port of the dashboard; 0 picks a free one; `web --port` overrides it.",
        parse=parse_int,
        check=port_number,
    )
    auth: tuple[str, ...] = setting(
        "PASSITO_WEB_AUTH",
        (),
        "`none` (loopback only), or any of `basic`, `header`, `token`, comma-separated (docs/dashboard.md).",
        parse=parse_auth,
    )
    users_file: Path | None = setting(
        "PASSITO_WEB_USERS_FILE",
        None,
        "`basic`: file of `name:role:argon2-hash` lines (`passito-jobs web hash-password`).",
        parse=_optional_path,
    )
    tokens_files: tuple[Path, ...] = setting(
        "PASSITO_WEB_TOKENS_FILE",
        (),
        "`token`: comma-separated files of `name:role:sha256:HEX` lines (bearer tokens by their hash).",
        parse=_paths,
    )
    csrf_key_file: Path | None = setting(
        "PASSITO_WEB_CSRF_KEY_FILE",
        None,
        "File holding the key (at least 32 characters) that signs the forms' CSRF tokens, so that "
        "every replica reading it accepts the others' forms; unset: a random key per process.",
        parse=_optional_path,
    )
    auth_header: str = setting(
        "PASSITO_WEB_AUTH_HEADER",
        "X-Forwarded-User",
        "`header`: the header in which the trusted proxy names the user.",
        parse=str.strip,
    )
    role_header: str = setting(
        "PASSITO_WEB_ROLE_HEADER",
        "",
        "`header`: a header in which the proxy gives the role (viewer or admin); unset: "
        "PASSITO_WEB_HEADER_ROLE for everyone.",
        parse=str.strip,
    )
    header_role: str = setting(
        "PASSITO_WEB_HEADER_ROLE",
        "viewer",
        "`header`: the role of a user the proxy gives no role.",
        parse=parse_lower,
        check=one_of(*ROLES),
    )
    trusted_proxies: tuple[Network, ...] = setting(
        "PASSITO_WEB_TRUSTED_PROXIES",
        (),
        "Comma-separated addresses or networks of reverse proxies: only their user header "
        "(`header`) and X-Forwarded-Proto (Secure cookies) are believed.",
        parse=parse_networks,
    )
    read_only: bool = setting(
        "PASSITO_WEB_READ_ONLY",
        False,
        "Disable every action (retry, cancel) for everyone.",
        parse=parse_bool,
    )
    mask_fields: tuple[str, ...] = setting(
        "PASSITO_WEB_MASK_FIELDS",
        DEFAULT_MASK_FIELDS,
        "Payload and result fields (any depth) that viewers see masked.",
        parse=parse_list,
    )
    query_timeout: float = setting(
        "PASSITO_WEB_QUERY_TIMEOUT",
        5.0,
        "Statement timeout of the dashboard's queries; a page that runs over answers 503.",
        parse=parse_duration,
        # PostgreSQL's statement_timeout is an int of milliseconds (24.8 days at most).
        check=(positive, between(0, 86400, "must be at most 1d")),
    )
    db_connections: int = setting(
        "PASSITO_WEB_DB_CONNECTIONS",
        4,
        "Database connections of one dashboard process (requests beyond wait for one).",
        parse=parse_int,
        check=between(1, 100),
    )

    def checks(self) -> Iterable[tuple[bool, str, str]]:
        return [
            (
                "basic" not in self.auth or self.users_file is not None,
                "users_file",
                "{users_file} is required by `basic`",
            ),
            (
                "token" not in self.auth or bool(self.tokens_files),
                "tokens_files",
                "{tokens_files} is required by `token`",
            ),
            (
                "header" not in self.auth or bool(self.trusted_proxies),
                "trusted_proxies",
                "{trusted_proxies} is required by `header`",
            ),
            (
                "header" not in self.auth or self.auth_header != "",
                "auth_header",
                "{auth_header} must not be empty",
            ),
        ]


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the dashboard on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
