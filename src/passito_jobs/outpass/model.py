"""The outpass: the payload every outpass job takes, validated in one place.

Every outpass job (GenerateQrCode, GenerateOutpassPdf, SendOutpassEmail, SendParentApproval)
takes the same JSON object, so the Passito app builds it once. `Outpass.from_payload` checks
it and raises `InvalidOutpassError` (a `PermanentError`: the job fails at once, no retries)
with a message that names the field. docs/jobs.md lists the fields.

Validation is strict where a value goes somewhere dangerous: `outpass_id` becomes a directory
name, names and addresses go into email headers, PDF lines and file names, and addresses must
be plain `user@domain.tld`. Every pattern must match the whole value (`re.fullmatch`: `$` would
also match before a final newline). One-line fields refuse the Unicode categories Cc (control:
CR, LF, NUL, U+0085, U+009B...), Cf (invisible formatting: zero-width joiners, bidi overrides),
Zl and Zp (line and paragraph separators) and Cs (lone surrogates); the reason may also hold
line breaks. Integer ids are at most 2^63 - 1 (a PostgreSQL bigint) and dates lie within years
MIN_YEAR..MAX_YEAR, so later arithmetic (the QR token's grace, a retention period) cannot
overflow. A bad value fails at dispatch (`dispatch_outpass_flow`, `passito-jobs outpass
dispatch`); a job dispatched directly with one fails once, permanently, naming the field.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Any

from passito_jobs.registry import PermanentError

OUTPASS_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""What an outpass id may look like (the whole value): it names a directory, so no dots,
slashes or spaces."""

_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
"""Unicode categories no one-line field may hold (the reason may hold line feeds)."""

MAX_ID = 2**63 - 1
"""The largest integer id (or number field): a PostgreSQL bigint."""
MIN_YEAR = 1970
MAX_YEAR = 2999
"""Dates lie within these years: far from datetime's limits (year 9999), so adding the QR
token's grace or any retention period to them cannot overflow."""

MAX_TEXT = 200
MAX_REASON = 2000
STATUSES = ("pending", "pending_parent_approval", "approved", "rejected", "cancelled")

QR_TOKEN_GRACE = timedelta(days=1)
"""A QR code stays verifiable this long after `to_date`, so a naive (zone-less) `to_date`
read as UTC never cuts it short anywhere in the world."""


class InvalidOutpassError(PermanentError, ValueError):
    """The payload is not a valid outpass; the message names the field. Never retried."""


@dataclass(frozen=True)
class Outpass:
    """A validated outpass."""

    outpass_id: str
    student_name: str
    student_email: str
    roll_number: str
    hostel: str
    room: str
    destination: str
    reason: str
    from_date: datetime
    to_date: datetime
    status: str = "pending"
    parent_name: str | None = None
    parent_email: str | None = None
    needs_parent_approval: bool = False
    dates_have_time: bool = True  # False when both dates were given as plain dates

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Outpass:
        """Check a job payload (or a dict from the Passito app) and build the outpass."""
        if not isinstance(payload, Mapping):
            raise InvalidOutpassError(f"the outpass must be a JSON object, got {type(payload).__name__}")
        outpass_id = _outpass_id(payload)
        from_date, from_has_time = _date(payload, "from_date", end_of_day=False)
        to_date, to_has_time = _date(payload, "to_date", end_of_day=True)
        # A plain date has no zone of its own: it takes the other date's offset.
        if not from_has_time and to_date.tzinfo is not None:
            from_date = from_date.replace(tzinfo=to_date.tzinfo)
        if not to_has_time and from_date.tzinfo is not None:
            to_date = to_date.replace(tzinfo=from_date.tzinfo)
        if (from_date.tzinfo is None) != (to_date.tzinfo is None):
            raise InvalidOutpassError("from_date and to_date must both have a time zone offset, or neither")
        if to_date < from_date:
            raise InvalidOutpassError(
                f"to_date ({payload['to_date']}) is before from_date ({payload['from_date']})"
            )
        needs_parent_approval = payload.get("needs_parent_approval", False)
        if not isinstance(needs_parent_approval, bool):
            raise InvalidOutpassError(
                f"field 'needs_parent_approval' must be true or false, got {needs_parent_approval!r}"
            )
        parent_email = _email(payload, "parent_email", required=needs_parent_approval)
        status = _text(payload, "status", required=False) or "pending"
        if status not in STATUSES:
            raise InvalidOutpassError(f"field 'status' must be one of {', '.join(STATUSES)}; got {status!r}")
        return cls(
            outpass_id=outpass_id,
            student_name=_text(payload, "student_name"),
            student_email=_email(payload, "student_email", required=True) or "",
            roll_number=_text(payload, "roll_number"),
            hostel=_text(payload, "hostel"),
            room=_text(payload, "room"),
            destination=_text(payload, "destination"),
            reason=_text(payload, "reason", multiline=True, limit=MAX_REASON),
            from_date=from_date,
            to_date=to_date,
            status=status,
            parent_name=_text(payload, "parent_name", required=False) or None,
            parent_email=parent_email,
            needs_parent_approval=needs_parent_approval,
            dates_have_time=from_has_time or to_has_time,
        )

    def to_payload(self) -> dict[str, Any]:
        """The JSON payload that `from_payload` reads back to this outpass."""
        data = asdict(self)
        del data["dates_have_time"]
        for key in ("from_date", "to_date"):
            value: datetime = data[key]
            data[key] = value.isoformat() if self.dates_have_time else value.date().isoformat()
        return {k: v for k, v in data.items() if v is not None}

    @property
    def valid_until(self) -> datetime:
        """When the outpass's QR token expires: `to_date` plus a day's grace, as UTC."""
        end = self.to_date if self.to_date.tzinfo else self.to_date.replace(tzinfo=UTC)
        return end.astimezone(UTC) + QR_TOKEN_GRACE

    def format_date(self, value: datetime) -> str:
        """`Mon 3 Mar 2025, 09:00` (time left out for plain dates): what the PDF and emails show."""
        text = f"{value:%a} {value.day} {value:%b %Y}"
        if self.dates_have_time:
            text += f", {value:%H:%M}"
            if value.tzinfo is not None:
                text += f" {_offset(value)}"
        return text

    @property
    def from_text(self) -> str:
        return self.format_date(self.from_date)

    @property
    def to_text(self) -> str:
        return self.format_date(self.to_date)


def _offset(value: datetime) -> str:
    offset = value.utcoffset() or timedelta(0)
    if not offset:
        return "UTC"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _show(value: Any, limit: int = 60) -> str:
    """A value as an error message quotes it: repr (control characters escaped), shortened."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def _outpass_id(payload: Mapping[str, Any]) -> str:
    if "outpass_id" not in payload or payload["outpass_id"] in (None, ""):
        raise InvalidOutpassError("field 'outpass_id' is missing")
    value = payload["outpass_id"]
    if isinstance(value, bool):
        raise InvalidOutpassError(
            f"field 'outpass_id' must be a positive integer or an id string, got {value}"
        )
    if isinstance(value, int):
        if value < 1:
            raise InvalidOutpassError(f"field 'outpass_id' must be positive, got {_show(value)}")
        if value > MAX_ID:
            digits = len(str(value))
            raise InvalidOutpassError(
                f"field 'outpass_id' must be at most {MAX_ID} (2^63 - 1), got a number of {digits} digits"
            )
        return str(value)
    if isinstance(value, str) and OUTPASS_ID.fullmatch(value):
        return value
    raise InvalidOutpassError(
        "field 'outpass_id' must be a positive integer or 1-64 letters, digits, '-' and '_' "
        f"(starting with a letter or digit), got {_show(value)}"
    )


def _forbidden(value: str, *, multiline: bool) -> str | None:
    """The first character of `value` no field of its kind may hold, as `U+XXXX`."""
    for char in value.replace("\r\n", "\n") if multiline else value:
        if unicodedata.category(char) in FORBIDDEN_CATEGORIES and not (multiline and char == "\n"):
            return f"U+{ord(char):04X}"
    return None


def _check_characters(name: str, value: str, *, multiline: bool = False) -> None:
    found = _forbidden(value, multiline=multiline)
    if found:
        what = "control" if multiline else "line breaks, control"
        raise InvalidOutpassError(
            f"field '{name}' must not contain {what} or invisible formatting characters (found {found})"
        )


def _text(
    payload: Mapping[str, Any],
    name: str,
    *,
    required: bool = True,
    multiline: bool = False,
    limit: int = MAX_TEXT,
) -> str:
    value = payload.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidOutpassError(f"field '{name}' is missing")
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_ID:
            raise InvalidOutpassError(f"field '{name}' is a number beyond ±{MAX_ID} (2^63 - 1)")
        value = str(value)  # room or roll numbers sent as numbers
    if not isinstance(value, str):
        raise InvalidOutpassError(f"field '{name}' must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidOutpassError(f"field '{name}' is longer than {limit} characters")
    # Checked before stripping: hostile input is refused, not quietly changed.
    _check_characters(name, value, multiline=multiline)
    return value.strip()


def is_email_address(text: str) -> bool:
    """A plain ASCII `user@domain.tld`, as the email headers will carry it."""
    if len(text) > 254 or not _EMAIL.fullmatch(text):
        return False
    try:
        Address(addr_spec=text)
    except (HeaderParseError, ValueError, IndexError):
        return False
    return True


def _email(payload: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = payload.get(name)
    if value is None or value == "":
        if required:
            raise InvalidOutpassError(f"field '{name}' is missing")
        return None
    if not isinstance(value, str):
        raise InvalidOutpassError(f"field '{name}' must be a string, got {type(value).__name__}")
    if _forbidden(value, multiline=False) or not is_email_address(value.strip()):
        raise InvalidOutpassError(f"field '{name}' is not a valid email address: {_show(value)}")
    return value.strip()


def _date(payload: Mapping[str, Any], name: str, *, end_of_day: bool) -> tuple[datetime, bool]:
    """An ISO 8601 date or date-time; a plain date means the start (or end) of that day."""
    value = payload.get(name)
    if value is None or value == "":
        raise InvalidOutpassError(f"field '{name}' is missing")
    if not isinstance(value, str):
        raise InvalidOutpassError(
            f"field '{name}' must be an ISO 8601 date string, got {type(value).__name__}"
        )
    if len(value) > 64:
        raise InvalidOutpassError(f"field '{name}' is not an ISO 8601 date: {_show(value)}")
    _check_characters(name, value)
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            parsed = datetime.combine(day, time.max.replace(microsecond=0) if end_of_day else time.min)
            has_time = False
        else:
            parsed, has_time = datetime.fromisoformat(text), True
    except ValueError:
        raise InvalidOutpassError(
            f"field '{name}' is not an ISO 8601 date or date-time (like 2025-03-01 or "
            f"2025-03-01T09:00:00+05:30): {_show(value)}"
        ) from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise InvalidOutpassError(
            f"field '{name}' must be within the years {MIN_YEAR} to {MAX_YEAR}, got {parsed.year}"
        )
    return parsed, has_time
