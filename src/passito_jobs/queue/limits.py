"""The input limits of the queue: one set of rules, enforced the same way in Python and SQL.

Every rule that SQL can express has a twin in `sql/migrations/0002_input_limits.sql` with the
same words, so a job refused by `passito_jobs.dispatch` (the PHP app) reads the same as one
refused by `dispatch` in Python (tests/integration/test_limits.py compares them rule by rule).
Python adds the rules only Python can break: values JSON cannot encode (NaN, Infinity, the NUL
character, unpaired surrogates) and ids past PostgreSQL's bigint. docs/dispatching.md lists them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from passito_jobs.queue.models import InvalidJobError

MAX_NAME_LENGTH = 128
"""Longest job type or queue name, in characters (a queue name is a NOTIFY payload and an index key)."""
MAX_UNIQUE_KEY_LENGTH = 512
"""Longest unique key, in characters: 512 four-byte characters still fit a btree index entry."""
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
"""Largest payload by default, in bytes of its JSON text (PASSITO_MAX_PAYLOAD_BYTES)."""
MAX_PAYLOAD_BYTES_SETTING = 100 * 1024 * 1024
"""The highest value PASSITO_MAX_PAYLOAD_BYTES (and passito_jobs.max_payload_bytes) accepts."""
MAX_NESTING = 100
"""Deepest nesting of a payload: values inside more than this many objects or arrays are refused
(Python's JSON decoder, which loads the payload in the worker, stops near 1,000)."""
MAX_ATTEMPTS = 1000
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1  # PostgreSQL integer
MAX_JOB_ID = 2**63 - 1  # PostgreSQL bigint
MAX_CLAIM_BATCH = 10_000
EARLIEST_RUN_AT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_RUN_AT = datetime.max.replace(tzinfo=UTC)
RUN_AT_RANGE = "between 1970-01-01 and 9999-12-31 (UTC)"

# Python's str.isspace(), spelled out so that SQL can use the very same set.
WHITESPACE = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_BLANK = re.compile(f"[{WHITESPACE}]*")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc
_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON escape of NUL that is not itself an escaped backslash followed by "u0000".
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# What `printable` escapes: control and format characters, line and paragraph separators.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")


def _fail(message: str) -> InvalidJobError:
    return InvalidJobError(message)


def check_name(what: str, value: object) -> str:
    """A job type or queue name: non-blank text of at most 128 characters, no control characters."""
    if not isinstance(value, str) or not value.strip():  # strip() removes exactly WHITESPACE
        raise _fail(f"{what} must be a non-empty string")
    if len(value) > MAX_NAME_LENGTH:
        raise _fail(f"{what} must be at most {MAX_NAME_LENGTH} characters, got {len(value)}")
    if not (value.isascii() and value.isprintable()):  # the usual name skips the scans below
        if _CONTROL.search(value):
            raise _fail(f"{what} must not contain control characters")
        _check_unicode(what, value)
    return value


def check_unique_key(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _fail("unique_key must be a non-empty string")
    if len(value) > MAX_UNIQUE_KEY_LENGTH:
        raise _fail(f"unique_key must be at most {MAX_UNIQUE_KEY_LENGTH} characters, got {len(value)}")
    if "\x00" in value:
        raise _fail("unique_key must not contain the NUL character")
    _check_unicode("unique_key", value)
    return value


def _check_unicode(what: str, value: str) -> None:
    if _SURROGATE.search(value):
        raise _fail(f"{what} must be valid Unicode text (it holds an unpaired surrogate)")


def _is_whole_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_max_attempts(value: object) -> int:
    if type(value) is int and 1 <= value <= MAX_ATTEMPTS:  # the usual case, quickly
        return value
    if not _is_whole_number(value):
        raise _fail(f"max_attempts must be a whole number, got {_shown(value)}")
    assert isinstance(value, int)
    if value < 1:
        raise _fail(f"max_attempts must be at least 1, got {value}")
    if value > MAX_ATTEMPTS:
        raise _fail(f"max_attempts must be at most {MAX_ATTEMPTS}, got {value}")
    return value


def check_priority(value: object) -> int:
    if type(value) is int and MIN_PRIORITY <= value <= MAX_PRIORITY:  # the usual case, quickly
        return value
    if not _is_whole_number(value) or not MIN_PRIORITY <= value <= MAX_PRIORITY:  # type: ignore[operator]
        raise _fail(
            f"priority must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}, got {_shown(value)}"
        )
    assert isinstance(value, int)
    return value


def check_job_id(what: str, value: object) -> int:
    """A job id: a whole number from 1 to 2^63 - 1 (PostgreSQL's bigint)."""
    if not _is_whole_number(value) or not 1 <= value <= MAX_JOB_ID:  # type: ignore[operator]
        raise _fail(f"{what} must hold job ids (positive integers), got {_shown(value)}")
    assert isinstance(value, int)
    return value


def check_run_at(value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise _fail("run_at must be a timezone-aware datetime")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # 9999-12-31 23:00 at UTC-5 is past year 9999 in UTC
        raise _fail(f"run_at must be {RUN_AT_RANGE}, got {value.isoformat()}") from None
    if utc < EARLIEST_RUN_AT:
        raise _fail(f"run_at must be {RUN_AT_RANGE}, got {utc.year:04d}-{utc:%m-%d %H:%M:%S} UTC")
    return value


def check_delay(value: object, now: datetime) -> float:
    """A delay in seconds from `now`: finite, not negative, landing no later than 9999-12-31."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise _fail(f"delay must be a number of seconds, got {value!r}")
    if value < 0:
        raise _fail(f"delay must not be negative, got {value:g}")
    if value > (LATEST_RUN_AT - now).total_seconds():
        raise _fail(f"delay must not reach past 9999-12-31 (UTC), got {value:g} seconds")
    return float(value)


def check_claim_batch(value: object) -> int:
    if not _is_whole_number(value) or not 1 <= value <= MAX_CLAIM_BATCH:  # type: ignore[operator]
        raise _fail(f"batch must be between 1 and {MAX_CLAIM_BATCH}, got {_shown(value)}")
    assert isinstance(value, int)
    return value


def json_type(value: object) -> str:
    """The JSON name of a Python value's type (what SQL's jsonb_typeof says)."""
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def encode_payload(payload: object, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """The payload's JSON text, after checking that PostgreSQL can store it and a worker load it.

    Raises InvalidJobError naming what is wrong: not an object, a value JSON has no spelling
    for (NaN, Infinity, a datetime), text PostgreSQL refuses (NUL, unpaired surrogates), too
    deep, or more than `max_bytes` bytes of JSON text.
    """
    if not isinstance(payload, Mapping):
        raise _fail(f"payload must be a JSON object, got {json_type(payload)}")
    text = _dumps(payload)
    size = len(text)  # ASCII, the usual case: one byte per character, no surrogate possible
    if not text.isascii():
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise _fail("payload must be valid Unicode text (it holds an unpaired surrogate)") from None
    if size > max_bytes:
        raise _fail(f"payload must be at most {max_bytes} bytes of JSON text, got {size}")
    if "\\u0000" in text and _ESCAPED_NUL.search(text):  # the substring test is fast, the regex exact
        raise _fail("payload must not hold the NUL character (\\u0000): PostgreSQL cannot store it")
    # Cheap bounds first: nesting deeper than the limit takes more brackets (and twice as many
    # characters) than that.
    if (
        len(text) > 2 * MAX_NESTING
        and text.count("[") + text.count("{") > MAX_NESTING
        and nesting_depth(payload) > MAX_NESTING
    ):
        raise _too_deep()
    return text


def _too_deep() -> InvalidJobError:
    return _fail(f"payload must not be nested more than {MAX_NESTING} levels deep")


# One encoder for every payload: json.dumps with options builds a new one on each call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def _dumps(payload: Mapping[str, Any]) -> str:
    try:
        return _ENCODER.encode(payload)
    except RecursionError:
        raise _too_deep() from None
    except TypeError as exc:  # a datetime, a set, bytes, a key that is not a string
        raise _fail(f"payload must hold only JSON values: {exc}") from None
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise _fail("payload must not hold NaN or Infinity (JSON has no such numbers)") from None
        if "Circular reference" in str(exc):
            raise _fail("payload must not contain itself (a circular reference)") from None
        raise _fail(f"payload cannot be written as JSON: {exc}") from None  # e.g. a 5,000-digit int


def nesting_depth(value: object, stop_after: int = MAX_NESTING) -> int:
    """How deep the deepest value sits: the payload itself is level 0, its members level 1, and
    so on (what jsonpath's `$.**{n}` counts). Iterative, and stops once past `stop_after`."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > stop_after:
            break
        if isinstance(item, Mapping):
            stack.extend((member, level + 1) for member in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((member, level + 1) for member in item)
    return deepest


def _shown(value: object) -> str:
    """A refused value as a message shows it: JSON spelling for None and text, briefly."""
    if value is None:
        return "null"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def printable(text: str, limit: int | None = None) -> str:
    """`text` as one safe line for a terminal: control and format characters (newlines, escape
    sequences, bidirectional overrides) written as escapes, and cut to `limit` characters."""
    safe = _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    safe = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", safe)
    if limit is not None and len(safe) > limit:
        return safe[: max(0, limit - 1)] + "…"
    return safe
