"""Passito's settings groups: Outpass jobs (files, links, signed tokens) and Email (SMTP).

A worker that loads `passito_jobs.outpass` reads them once, when it starts (`JobSettings`, what
each of these job types gets as `ctx.settings`), and refuses to start without a signing key;
a worker that runs only job types of its own never reads them.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path

from passito_jobs.settings import (
    SettingsGroup,
    between,
    one_of,
    parse_bool,
    parse_duration,
    parse_int,
    parse_lower,
    parse_optional_path,
    parse_optional_str,
    parse_optional_stripped,
    port_number,
    positive,
    setting,
)

MIN_SECRET_KEY_LENGTH = 32
MAX_FILE_RETENTION_DAYS = 36500  # a century: now minus the retention stays a valid date
SMTP_SECURITY = ("starttls", "tls", "none")


def _secret_key(value: str | None) -> str | None:
    if value is not None and not value.strip():
        return "is only whitespace: a key must be random"
    if value is None or len(value) >= MIN_SECRET_KEY_LENGTH:
        return None
    return f"is too short: {len(value)} characters, at least {MIN_SECRET_KEY_LENGTH}"


def _public_url(value: str) -> str | None:
    if (
        value.startswith(("http://", "https://"))
        and "?" not in value
        and "#" not in value
        and value.isprintable()  # it goes into emails' links: no line break, no control character
        and " " not in value
    ):
        return None
    return "must be an http:// or https:// URL without query, fragment, spaces or control characters"


def _storage_dir(value: Path) -> str | None:
    """Checked at start, so a worker does not fail every outpass job with it later."""
    if value.exists() and not value.is_dir():
        return "must be a directory, not a file"
    return None


def _ca_file(value: Path | None) -> str | None:
    """The file is read at start (a missing or unreadable one would otherwise fail every email
    job); what it holds is never shown."""
    if value is None:
        return None
    try:
        ssl.create_default_context(cafile=value)
    except ssl.SSLError:
        return "must be a PEM file of CA certificates"
    except FileNotFoundError:
        return "names a file that does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    return None


def _host(value: str | None) -> str | None:
    if value is None or (value.isprintable() and " " not in value):
        return None
    return "must be a host name (no spaces or control characters)"


def _mailbox(value: str) -> str | None:
    """`Name <user@host>` or `user@host`, on one line (it goes into the From header)."""
    _, address = parseaddr(value)
    local, at, domain = address.rpartition("@")
    if "\r" in value or "\n" in value or not (at and local and domain and " " not in address):
        return "must be an address like `Passito <no-reply@example.org>`"
    return None


@dataclass(frozen=True)
class OutpassSettings(SettingsGroup):
    """Where the outpass jobs write, what they link to, and the key they sign tokens with."""

    GROUP = "Outpass jobs"

    storage_dir: Path = setting(
        "PASSITO_STORAGE_DIR",
        Path(".passito/storage"),
        "Where outpass files live (QR codes, PDFs, the email outbox); a shared volume in Kubernetes.",
        parse=Path,
        check=_storage_dir,
    )
    public_url: str = setting(
        "PASSITO_PUBLIC_URL",
        "http://localhost:8000",
        "Base URL of the Passito app; QR codes and approval emails link to it.",
        parse=lambda text: text.strip().rstrip("/"),
        check=_public_url,
    )
    secret_key: str | None = setting(
        "PASSITO_SECRET_KEY",
        None,
        "Signs QR and parent-approval tokens (HMAC-SHA256), at least 32 characters. "
        "A worker that loads `passito_jobs.outpass` refuses to start without it.",
        parse=parse_optional_str,
        check=_secret_key,
        secret=True,
    )
    insecure_dev_secret: bool = setting(
        "PASSITO_INSECURE_DEV_SECRET",
        False,
        "Development only: without PASSITO_SECRET_KEY, sign with a public, well-known key "
        "(anyone can forge tokens).",
        parse=parse_bool,
    )
    approval_token_ttl: float = setting(
        "PASSITO_APPROVAL_TOKEN_TTL",
        3 * 86400.0,
        "How long a parent's approve and deny links stay valid.",
        parse=parse_duration,
        check=positive,
    )
    file_retention_days: int = setting(
        "PASSITO_FILE_RETENTION_DAYS",
        30,
        "CleanupExpiredFiles deletes outpass files and outbox messages older than this many days "
        "(1 to 36500).",
        parse=parse_int,
        check=between(
            1, MAX_FILE_RETENTION_DAYS, f"must be at least 1 and at most {MAX_FILE_RETENTION_DAYS}"
        ),
    )


@dataclass(frozen=True)
class EmailSettings(SettingsGroup):
    """How SendOutpassEmail and SendParentApproval send their mail."""

    GROUP = "Email"

    host: str | None = setting(
        "PASSITO_SMTP_HOST",
        None,
        "SMTP server. Unset: emails are written as .eml files under PASSITO_STORAGE_DIR/outbox/.",
        parse=parse_optional_stripped,
        check=_host,
    )
    port: int = setting(
        "PASSITO_SMTP_PORT",
        0,
        "SMTP port; 0 picks the usual one for PASSITO_SMTP_SECURITY (587, 465 or 25).",
        parse=parse_int,
        check=port_number,
    )
    security: str = setting(
        "PASSITO_SMTP_SECURITY",
        "starttls",
        "`starttls` (upgrade a plain connection), `tls` (implicit TLS) or `none`.",
        parse=parse_lower,
        check=one_of(*SMTP_SECURITY),
    )
    user: str | None = setting(
        "PASSITO_SMTP_USER", None, "SMTP login user; unset: no AUTH.", parse=parse_optional_str
    )
    password: str | None = setting(
        "PASSITO_SMTP_PASSWORD", None, "SMTP login password.", parse=parse_optional_str, secret=True
    )
    sender: str = setting(
        "PASSITO_SMTP_FROM",
        "Passito <no-reply@localhost>",
        "From address of every email, `Name <address>` or `address`.",
        parse=str.strip,
        check=_mailbox,
    )
    timeout: float = setting(
        "PASSITO_SMTP_TIMEOUT",
        30.0,
        "Seconds to wait for the SMTP server.",
        parse=parse_duration,
        check=positive,
    )
    ca_file: Path | None = setting(
        "PASSITO_SMTP_CA_FILE",
        None,
        "PEM file of CA certificates to trust for the SMTP server's certificate; unset: the system's.",
        parse=parse_optional_path,
        check=_ca_file,
    )

    def checks(self) -> list[tuple[bool, str, str]]:
        return [
            (
                (self.user is None) == (self.password is None),
                "user",
                "{user} and {password} must be set together",
            ),
            (
                self.user is None or self.security != "none",
                "user",
                "{user} needs {security} starttls or tls (the password would cross the network "
                "in clear text)",
            ),
        ]


@dataclass(frozen=True)
class JobSettings:
    """What each of Passito's job types gets (`ctx.settings`): both groups and the signing
    key, read once when the worker starts."""

    outpass: OutpassSettings = field(default_factory=OutpassSettings)
    email: EmailSettings = field(default_factory=EmailSettings)
    signing_key: bytes = field(default=b"", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobSettings:
        """Both groups from the environment; ConfigError without a signing key."""
        from passito_jobs.outpass.tokens import signing_key  # noqa: PLC0415 - tokens imports this module

        outpass = OutpassSettings.from_env(environ)
        return cls(outpass, EmailSettings.from_env(environ), signing_key(outpass, warn=True))

    @property
    def storage_dir(self) -> Path:
        return self.outpass.storage_dir

    @property
    def public_url(self) -> str:
        return self.outpass.public_url
