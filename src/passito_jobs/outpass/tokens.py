"""Signed tokens in QR codes and parent-approval links (HMAC-SHA256 with PASSITO_SECRET_KEY).

A token is `v1.<claims>.<signature>`: `claims` is base64url (no padding) of compact JSON
`{"d": decision or null, "e": expiry (Unix seconds), "o": outpass id, "p": purpose}`;
`signature` is base64url of HMAC-SHA256(key, "v1." + claims). Every character is URL-safe.
The purpose is signed too, so a QR token cannot be replayed as an approval, nor an approve
link as a deny link. Exactly one string verifies per token: only the canonical encoding is
accepted (no padding, no stray bits in the last character, no whitespace), so a token can be
used as a key (for example, to remember that a link was used). docs/jobs.md shows how the PHP
app verifies one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from passito_jobs.outpass.settings import OutpassSettings
from passito_jobs.settings import ConfigError

log = logging.getLogger("passito_jobs.outpass")

VERSION = "v1"
PURPOSE_VERIFY = "outpass-verify"
PURPOSE_APPROVAL = "parent-approval"
PURPOSES = (PURPOSE_VERIFY, PURPOSE_APPROVAL)
DECISIONS = ("approve", "deny")
MAX_TOKEN_LENGTH = 512
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ALPHABET_RULE = "{what} may hold only the base64url characters A-Z a-z 0-9 - _, without padding"

DEV_SECRET = b"passito-jobs INSECURE development key: anyone can forge tokens signed with it"
"""The key PASSITO_INSECURE_DEV_SECRET=true signs with. It is public: development only."""


class InvalidTokenError(ValueError):
    """A token is malformed, tampered with, expired, or meant for something else."""


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says."""

    purpose: str
    outpass_id: str
    decision: str | None
    expires_at: datetime


def signing_key(settings: OutpassSettings, *, warn: bool = False) -> bytes:
    """The HMAC key: PASSITO_SECRET_KEY, or the public development key when
    PASSITO_INSECURE_DEV_SECRET is true. Raise ConfigError when neither is set."""
    if settings.secret_key:
        return settings.secret_key.encode()
    if settings.insecure_dev_secret:
        if warn:
            log.warning(
                "PASSITO_SECRET_KEY is not set and PASSITO_INSECURE_DEV_SECRET=true: tokens are signed "
                "with a public development key and can be forged. Never run this in production."
            )
        return DEV_SECRET
    raise ConfigError(
        "PASSITO_SECRET_KEY is not set: it signs QR codes and parent-approval links. Set it to a "
        "random string of 32+ characters (python3 -c 'import secrets; print(secrets.token_urlsafe(48))'), "
        "or PASSITO_INSECURE_DEV_SECRET=true on a development machine"
    )


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    """The bytes of a canonical unpadded base64url string: the one `_b64encode` makes of them.

    Base64 lets the last character carry bits the decoder ignores, and accepts padding; either
    would give one token several spellings, so anything but the canonical one is refused.
    """
    if not _BASE64URL.fullmatch(text):
        raise InvalidTokenError(f"malformed token ({_ALPHABET_RULE.format(what=what)})")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidTokenError(f"malformed token ({what} is not base64url)") from None
    if _b64encode(data) != text:
        raise InvalidTokenError(f"malformed token ({what} is not in canonical base64url)")
    return data


def _mac(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()


def sign_token(
    key: bytes,
    *,
    purpose: str,
    outpass_id: str,
    expires_at: datetime,
    decision: str | None = None,
) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    if (purpose == PURPOSE_APPROVAL) != (decision is not None):
        raise ValueError("a parent-approval token needs a decision; other tokens have none")
    if decision is not None and decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    claims = {"d": decision, "e": int(expires_at.timestamp()), "o": outpass_id, "p": purpose}
    body = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signed = f"{VERSION}.{body}"
    return f"{signed}.{_b64encode(_mac(key, signed))}"


def verify_token(
    token: str,
    key: bytes,
    *,
    purpose: str,
    decision: str | None = None,
    now: datetime | None = None,
) -> TokenClaims:
    """Check a token; return its claims or raise InvalidTokenError saying why not.

    `purpose` must match. `decision`, when given, must match too (an approve link presented
    at the deny endpoint is rejected).
    """
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidTokenError("malformed token (too long)")
    if token != token.strip():
        raise InvalidTokenError("malformed token (whitespace around it)")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION or not parts[1] or not parts[2]:
        raise InvalidTokenError(f"malformed token (expected {VERSION}.<claims>.<signature>)")
    if not _BASE64URL.fullmatch(parts[1]):
        raise InvalidTokenError(f"malformed token ({_ALPHABET_RULE.format(what='claims')})")
    signature = _b64decode(parts[2], "signature")
    # The signature is checked before the claims are even parsed: nothing an attacker wrote
    # is interpreted unless it was signed with our key.
    if not hmac.compare_digest(signature, _mac(key, f"{parts[0]}.{parts[1]}")):
        raise InvalidTokenError("bad signature: the token was altered or signed with another key")
    claims = _claims(parts[1])
    if claims.purpose != purpose:
        raise InvalidTokenError(f"wrong purpose: this is a {claims.purpose} token, not {purpose}")
    if decision is not None and claims.decision != decision:
        raise InvalidTokenError(f"wrong decision: this token is for {claims.decision}, not {decision}")
    current = now or datetime.now(UTC)
    if current >= claims.expires_at:
        raise InvalidTokenError(f"expired at {claims.expires_at.isoformat()}")
    return claims


def _claims(body: str) -> TokenClaims:
    raw = _b64decode(body, "claims")
    try:
        data: Any = json.loads(raw)
    except ValueError:  # not UTF-8, not JSON
        raise InvalidTokenError("malformed token (claims are not base64url JSON)") from None
    if (
        not isinstance(data, dict)
        or set(data) != {"d", "e", "o", "p"}
        or data["p"] not in PURPOSES
        or not isinstance(data["o"], str)
        or isinstance(data["e"], bool)
        or not isinstance(data["e"], int)
        or data["d"] not in (None, *DECISIONS)
    ):
        raise InvalidTokenError("malformed token (unexpected claims)")
    if _SURROGATE.search(data["o"]):  # "\ud800" in the JSON: no text can be printed or stored
        raise InvalidTokenError("malformed token (the outpass id is not valid Unicode text)")
    try:
        expires_at = datetime.fromtimestamp(data["e"], UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidTokenError("malformed token (expiry out of range)") from None
    return TokenClaims(data["p"], data["o"], data["d"], expires_at)
