"""Signed tokens: valid, tampered, expired, wrong decision, wrong purpose, wrong key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from passito_jobs.config import ConfigError
from passito_jobs.outpass.settings import JobSettings, OutpassSettings
from passito_jobs.outpass.tokens import (
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


def test_an_outpass_id_that_is_not_text_is_refused() -> None:
    """A lone surrogate ("\\ud800" in the claims' JSON) can be signed, never printed or stored."""
    token = sign_token(
        KEY, purpose=PURPOSE_APPROVAL, outpass_id="\ud800", decision="approve", expires_at=LATER
    )
    with pytest.raises(
        InvalidTokenError, match=r"^malformed token \(the outpass id is not valid Unicode text\)$"
    ):
        verify_token(token, KEY, purpose=PURPOSE_APPROVAL, now=NOW)


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


def _other_spellings(token: str) -> list[str]:
    """Strings a lenient base64 decoder reads as the same signature: the last character's
    unused low bits set (3 ways), padding, and whitespace around the token."""
    head, signature = token.rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    assert len(signature) % 4 == 3  # 32 bytes in 43 characters: 2 unused bits at the end
    assert last & 0b11 == 0
    tails = [f"{head}.{signature[:-1]}{alphabet[last | bits]}" for bits in (1, 2, 3)]
    return [*tails, f"{token}=", f" {token}", f"{token}\n", f"\t{token} "]


def test_exactly_one_string_verifies_per_token() -> None:
    token = approve_token()
    signature = base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "=")
    spellings = _other_spellings(token)
    assert len(set(spellings)) == 7
    for other in spellings:
        # The same bytes to a lenient decoder: each of these verified before.
        other_signature = other.strip().rsplit(".", 1)[1].rstrip("=")
        assert base64.urlsafe_b64decode(other_signature + "=") == signature
        with pytest.raises(InvalidTokenError) as caught:
            verify_token(other, KEY, purpose=PURPOSE_APPROVAL, now=NOW)
        assert str(caught.value) in {
            "malformed token (signature is not in canonical base64url)",
            "malformed token (signature may hold only the base64url characters A-Z a-z 0-9 - _, "
            "without padding)",
            "malformed token (whitespace around it)",
        }, other
    assert verify_token(token, KEY, purpose=PURPOSE_APPROVAL, now=NOW).outpass_id == "42"


MUTATIONS = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 200), st.characters()),
    st.tuples(st.just("insert"), st.integers(0, 200), st.characters()),
    st.tuples(st.just("delete"), st.integers(0, 200), st.just("")),
)


@given(st.lists(MUTATIONS, min_size=1, max_size=4))
def test_any_change_to_a_valid_token_fails_verification(
    mutations: list[tuple[str, int, str]],
) -> None:
    token = approve_token()
    mutated = token
    for kind, index, char in mutations:
        at = index % (len(mutated) + (kind == "insert")) if mutated or kind == "insert" else 0
        if kind == "replace" and mutated:
            mutated = mutated[:at] + char + mutated[at + 1 :]
        elif kind == "insert":
            mutated = mutated[:at] + char + mutated[at:]
        elif kind == "delete" and mutated:
            mutated = mutated[:at] + mutated[at + 1 :]
    if mutated == token:
        return  # the changes cancelled out (a character replaced by itself)
    with pytest.raises(InvalidTokenError):
        verify_token(mutated, KEY, purpose=PURPOSE_APPROVAL, decision="approve", now=NOW)


@pytest.mark.parametrize("expiry", [10**20, -(10**20)])
def test_a_signed_token_with_an_impossible_expiry_is_malformed(expiry: int) -> None:
    claims = {"d": "approve", "e": expiry, "o": "42", "p": PURPOSE_APPROVAL}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    mac = hmac.new(KEY, f"v1.{body}".encode(), hashlib.sha256).digest()
    token = f"v1.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(InvalidTokenError, match=r"malformed token \(expiry out of range\)"):
        verify_token(token, KEY, purpose=PURPOSE_APPROVAL, now=NOW)


def test_signing_needs_a_key_or_the_dev_flag() -> None:
    with pytest.raises(ConfigError, match="PASSITO_SECRET_KEY is not set"):
        signing_key(OutpassSettings.from_env({}))
    assert signing_key(OutpassSettings.from_env({"PASSITO_INSECURE_DEV_SECRET": "true"})) == DEV_SECRET
    key = "s" * 32
    assert signing_key(OutpassSettings.from_env({"PASSITO_SECRET_KEY": key})) == key.encode()


def test_a_short_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        OutpassSettings.from_env({"PASSITO_SECRET_KEY": "hunter2"})
    assert str(caught.value) == "PASSITO_SECRET_KEY is too short: 7 characters, at least 32"
    assert "hunter2" not in str(caught.value)


def test_secrets_stay_out_of_the_settings_repr() -> None:
    settings = JobSettings.from_env(
        {
            "PASSITO_SECRET_KEY": "s3cr3t" * 6,
            "PASSITO_SMTP_HOST": "smtp.example.org",
            "PASSITO_SMTP_USER": "passito",
            "PASSITO_SMTP_PASSWORD": "pa55word",
        }
    )
    assert "s3cr3t" not in repr(settings)
    assert "pa55word" not in repr(settings)
