"""Signed tokens: valid, tampered, expired, wrong decision, wrong purpose, wrong key."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from passito_jobs.config import ConfigError, Settings
from passito_jobs.jobs.tokens import (
    DEV_SECRET,
    PURPOSE_APPROVAL,
    PURPOSE_VERIFY,
    InvalidTokenError,
    sign_token,
    signing_key,
    verify_token,
)

KEY = b"k" * 40
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=3)


def approve_token(key: bytes = KEY) -> str:
    return sign_token(key, purpose=PURPOSE_APPROVAL, outpass_id="42", decision="approve", expires_at=LATER)


def test_a_valid_token_gives_back_its_claims() -> None:
    claims = verify_token(approve_token(), KEY, purpose=PURPOSE_APPROVAL, decision="approve", now=NOW)
    assert (claims.purpose, claims.outpass_id, claims.decision) == (PURPOSE_APPROVAL, "42", "approve")
    assert claims.expires_at == LATER


def test_tokens_are_url_safe() -> None:
    token = approve_token()
    assert all(c.isalnum() or c in "-_." for c in token)


def _forge(token: str, **claims: object) -> str:
    """Rewrite the claims but keep the old signature (what an attacker can do without the key)."""
    version, body, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data.update(claims)
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{version}.{forged}.{signature}"


@pytest.mark.parametrize(
    "tampered",
    [
        _forge(approve_token(), d="deny"),
        _forge(approve_token(), o="43"),
        _forge(approve_token(), e=int((LATER + timedelta(days=365)).timestamp())),
        approve_token()[:-2] + ("AA" if not approve_token().endswith("AA") else "BB"),
    ],
    ids=["decision", "outpass", "expiry", "signature"],
)
def test_a_tampered_token_is_rejected(tampered: str) -> None:
    with pytest.raises(InvalidTokenError, match="bad signature"):
        verify_token(tampered, KEY, purpose=PURPOSE_APPROVAL, now=NOW)


def test_a_token_signed_with_another_key_is_rejected() -> None:
    with pytest.raises(InvalidTokenError, match="bad signature"):
        verify_token(approve_token(b"x" * 40), KEY, purpose=PURPOSE_APPROVAL, now=NOW)


def test_an_expired_token_is_rejected() -> None:
    with pytest.raises(InvalidTokenError, match="expired at 2025-03-04T12:00:00"):
        verify_token(approve_token(), KEY, purpose=PURPOSE_APPROVAL, now=LATER)


def test_an_approve_link_is_not_a_deny_link() -> None:
    with pytest.raises(InvalidTokenError, match="wrong decision: this token is for approve, not deny"):
        verify_token(approve_token(), KEY, purpose=PURPOSE_APPROVAL, decision="deny", now=NOW)


def test_a_qr_token_is_not_an_approval() -> None:
    qr = sign_token(KEY, purpose=PURPOSE_VERIFY, outpass_id="42", expires_at=LATER)
    with pytest.raises(InvalidTokenError, match="wrong purpose: this is a outpass-verify token"):
        verify_token(qr, KEY, purpose=PURPOSE_APPROVAL, now=NOW)
    assert verify_token(qr, KEY, purpose=PURPOSE_VERIFY, now=NOW).decision is None


@pytest.mark.parametrize("garbage", ["", "v1", "v1..", "v2.abc.def", "v1.abc.!!!", "x" * 600])
def test_garbage_is_malformed(garbage: str) -> None:
    with pytest.raises(InvalidTokenError, match="malformed"):
        verify_token(garbage, KEY, purpose=PURPOSE_APPROVAL, now=NOW)


def test_signing_needs_a_key_or_the_dev_flag() -> None:
    with pytest.raises(ConfigError, match="PASSITO_SECRET_KEY is not set"):
        signing_key(Settings.from_env({}))
    assert signing_key(Settings.from_env({"PASSITO_INSECURE_DEV_SECRET": "true"})) == DEV_SECRET
    key = "s" * 32
    assert signing_key(Settings.from_env({"PASSITO_SECRET_KEY": key})) == key.encode()


def test_a_short_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PASSITO_SECRET_KEY": "hunter2"})
    assert "PASSITO_SECRET_KEY must be at least 32 characters" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_secrets_stay_out_of_the_settings_repr() -> None:
    settings = Settings.from_env(
        {
            "PASSITO_SECRET_KEY": "s3cr3t" * 6,
            "PASSITO_SMTP_HOST": "smtp.example.org",
            "PASSITO_SMTP_USER": "passito",
            "PASSITO_SMTP_PASSWORD": "pa55word",
        }
    )
    assert "s3cr3t" not in repr(settings)
    assert "pa55word" not in repr(settings)
