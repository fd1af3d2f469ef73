"""Who is asking: no authentication (loopback only), basic, a trusted proxy's header, or tokens.

- `basic`: PASSITO_WEB_USERS_FILE holds `name:role:$argon2id$...` lines (`passito-jobs web
  hash-password` makes the hash). A verified password is remembered (by a keyed digest, in
  memory) so that the next request of the same browser costs a dictionary lookup, not another
  argon2 run; failed attempts always pay the argon2 price, two at a time at most.
- `header`: a reverse proxy (oauth2-proxy, ...) names the user in PASSITO_WEB_AUTH_HEADER; the
  header is believed only from PASSITO_WEB_TRUSTED_PROXIES (the TCP peer, not X-Forwarded-For).
- `token`: `Authorization: Bearer TOKEN`; PASSITO_WEB_TOKENS_FILE holds `name:role:sha256:HEX`
  lines, so the files never hold a usable token. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from passito_jobs.queue.limits import printable
from passito_jobs.settings import ConfigError
from passito_jobs.web.settings import ROLES, Network, WebSettings

ANONYMOUS = "anonymous"
MAX_NAME = 200
_NAME = re.compile(r"[^\s:]{1,200}")
_TOKEN_HASH = re.compile(r"sha256:([0-9a-f]{64})")
REMEMBERED = 1024
"""Verified (user, password) pairs kept in memory; the oldest is forgotten first."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    via: str  # none, basic, header or token

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class AuthError(Exception):
    """The request is not authenticated (401) or not allowed (403)."""

    def __init__(self, message: str, status: int = 401, challenge: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.challenge = challenge


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    secret: str  # an argon2 hash, or a token's sha256 hex digest


def _read_lines(path: Path, what: str) -> list[tuple[int, list[str]]]:
    try:
        content = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"cannot read the {what} file {path}: {reason}") from None
    found = []
    for number, raw in enumerate(content.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            found.append((number, line.split(":", 2)))
    return found


def _account(path: Path, number: int, parts: list[str], what: str) -> Account:
    where = f"{path}:{number}"
    if len(parts) != 3:
        raise ConfigError(f"{where}: a {what} line is name:role:secret")
    name, role, secret = parts
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: the name must be 1 to 200 characters without spaces or colons")
    if role not in ROLES:
        raise ConfigError(f"{where}: the role must be viewer or admin, got {printable(role, 20)!r}")
    return Account(name, role, secret)


def load_users(path: Path) -> dict[str, Account]:
    users: dict[str, Account] = {}
    for number, parts in _read_lines(path, "users"):
        account = _account(path, number, parts, "users")
        if not account.secret.startswith("$argon2"):
            raise ConfigError(
                f"{path}:{number}: the password must be an argon2 hash (passito-jobs web hash-password)"
            )
        if account.name in users:
            raise ConfigError(f"{path}:{number}: user {account.name!r} is listed twice")
        users[account.name] = account
    return users


def load_tokens(paths: tuple[Path, ...]) -> dict[str, Account]:
    tokens: dict[str, Account] = {}
    for path in paths:
        for number, parts in _read_lines(path, "tokens"):
            account = _account(path, number, parts, "tokens")
            match = _TOKEN_HASH.fullmatch(account.secret)
            if not match:
                # Never quote the line: it may hold a plain token.
                raise ConfigError(
                    f"{path}:{number}: the token must be given as sha256:HEX (64 lower-case hex digits; "
                    "passito-jobs web hash-password --token)"
                )
            tokens[match.group(1)] = Account(account.name, account.role, match.group(1))
    return tokens


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Authenticator:
    """Authenticates requests by the configured modes (none when PASSITO_WEB_AUTH is empty)."""

    def __init__(self, settings: WebSettings) -> None:
        self.modes = settings.auth
        self.users = load_users(settings.users_file) if "basic" in self.modes and settings.users_file else {}
        self.tokens = load_tokens(settings.tokens_files) if "token" in self.modes else {}
        self.auth_header = settings.auth_header.lower()
        self.role_header = settings.role_header.lower()
        self.header_role = settings.header_role
        self.trusted: tuple[Network, ...] = settings.trusted_proxies
        self._hasher = PasswordHasher()
        self._key = secrets.token_bytes(32)
        self._remembered: OrderedDict[bytes, Account] = OrderedDict()
        self._hashing = asyncio.Semaphore(2)
        # A hash to verify against for unknown users, so they take as long as known ones.
        self._decoy = self._hasher.hash(secrets.token_hex(16))

    def is_trusted_proxy(self, peer: str | None) -> bool:
        if not peer or not self.trusted:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    async def authenticate(self, headers: Mapping[str, str], peer: str | None) -> User:
        if not self.modes:
            return User(ANONYMOUS, "admin", "none")
        authorization = headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and "token" in self.modes:
            return self._token(credentials.strip())
        if scheme == "basic" and "basic" in self.modes:
            return await self._basic(credentials.strip())
        if "header" in self.modes and self.auth_header in headers:
            return self._proxy_user(headers, peer)
        raise AuthError("authentication required", 401, self._challenge())

    def _challenge(self) -> str:
        if "basic" in self.modes:
            return 'Basic realm="passito-jobs", charset="UTF-8"'
        return 'Bearer realm="passito-jobs"'

    def _token(self, token: str) -> User:
        account = self.tokens.get(token_digest(token)) if token else None
        if account is None:
            raise AuthError("invalid token", 401, 'Bearer realm="passito-jobs", error="invalid_token"')
        return User(account.name, account.role, "token")

    async def _basic(self, credentials: str) -> User:
        try:
            decoded = _b64decode(credentials)
        except ValueError:
            raise AuthError("malformed basic credentials", 401, self._challenge()) from None
        name, colon, password = decoded.partition(":")
        if not colon:
            raise AuthError("malformed basic credentials", 401, self._challenge())
        digest = hmac.new(
            self._key, f"{name}\x00{password}".encode("utf-8", "surrogatepass"), "sha256"
        ).digest()
        account = self._remembered.get(digest)
        if account is not None and self.users.get(account.name) is account:
            self._remembered.move_to_end(digest)
            return User(account.name, account.role, "basic")
        account = self.users.get(name)
        async with self._hashing:  # bounds the CPU that wrong passwords can burn
            ok = await anyio.to_thread.run_sync(
                self._verify, account.secret if account else self._decoy, password
            )
        if account is None or not ok:
            raise AuthError("wrong user name or password", 401, self._challenge())
        self._remembered[digest] = account
        if len(self._remembered) > REMEMBERED:
            self._remembered.popitem(last=False)
        return User(account.name, account.role, "basic")

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(hashed, password.encode("utf-8", "surrogatepass")))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _proxy_user(self, headers: Mapping[str, str], peer: str | None) -> User:
        if not self.is_trusted_proxy(peer):
            raise AuthError(
                "the user header is accepted only from the proxies of PASSITO_WEB_TRUSTED_PROXIES", 403
            )
        name = headers.get(self.auth_header, "").strip()
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise AuthError(
                "the proxy's user header is empty or not a printable name of at most 200 characters"
            )
        role = self.header_role
        if self.role_header and headers.get(self.role_header, "").strip():
            role = headers[self.role_header].strip().lower()
            if role not in ROLES:
                raise AuthError(f"unknown role {printable(role, 20)!r} in the proxy's role header", 403)
        return User(name, role, "header")


def _b64decode(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not base64 of UTF-8 text") from None


def hash_password(password: str) -> str:
    """An argon2id hash for the users file."""
    return PasswordHasher().hash(password)
