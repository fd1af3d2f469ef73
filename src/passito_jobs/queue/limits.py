# Longer than 400 lines: every input limit in one place, the twin of the SQL checks, with one encoder.
"""The limits of the queue: one set of rules for what goes in, enforced the same way in Python
and SQL, and one encoder for every JSON value the database stores.

Every rule that SQL can express has a twin in `sql/migrations/0002_input_limits.sql` with the
same words, so a job refused by `passito_jobs.dispatch` (the PHP app) reads the same as one
refused by `dispatch` in Python (tests/integration/test_limits.py compares them rule by rule).
Python adds the rules only Python can break: values JSON cannot encode (NaN, Infinity, the NUL
character, unpaired surrogates) and ids past PostgreSQL's bigint. docs/dispatching.md lists them.

`encode_json` applies the same rules, with the same words, to what a job produces: its result
and its progress (`result must not hold NaN or Infinity ...: NaN at result['r']`), so a value
the database would refuse fails its own job before it reaches a round trip that carries the
outcomes of other jobs too.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from passito_jobs.queue.errors import InvalidJobError, clean_text, first_line, safe_str

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
MAX_PARENTS = 100_000
"""Most parent job ids on one job (`depends_on`); Python reads no more than one past it."""
MAX_TAGS = 20
"""Most tags on one job (`dispatch(..., tags=[...])`, `--tag`)."""
MAX_TAG_LENGTH = 100
"""Longest tag, in characters."""
MAX_METADATA_BYTES = 16 * 1024
"""Largest metadata, in bytes of its JSON text: it is read with every claim."""
MAX_TRACESTATE_LENGTH = 512
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
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


UNIQUE_MODES = ("keep", "replace")
DEPENDS_ON_MODES = ("completed", "finished")
MAX_UNIQUE_FOR = 36500 * 86400.0  # 100 years, like every other duration


def check_unique_options(unique_key: str | None, unique_for: object, unique_mode: object) -> None:
    """`unique_for` (seconds): positive, at most 100 years, with a unique key; `unique_mode`:
    'keep' or 'replace' (which needs a unique key too)."""
    if unique_for is not None:
        if not isinstance(unique_for, int | float) or isinstance(unique_for, bool):
            raise _fail(f"unique_for must be a duration in seconds, got {json_type(unique_for)}")
        if not unique_for > 0:  # NaN too
            raise _fail(f"unique_for must be a positive duration, got {number(unique_for)} seconds")
        if unique_for > MAX_UNIQUE_FOR:
            raise _fail(f"unique_for must be at most 36500d (100 years), got {number(unique_for)} seconds")
        if unique_key is None:
            raise _fail("unique_for needs a unique_key")
    if not isinstance(unique_mode, str) or unique_mode not in UNIQUE_MODES:
        raise _fail(f"unique_mode must be 'keep' or 'replace', got {shown(unique_mode)}")
    if unique_mode == "replace" and unique_key is None:
        raise _fail("unique_mode 'replace' needs a unique_key")


def number(value: float) -> str:
    """A number as a message shows it: 1e+300 for a float, the digits of an int, or its size
    when it is long (`a number of about 5000 digits`: str() of a long int is slow, and refused
    past 4,300 digits). Never calls the value's own __str__ or __format__ (a subclass may raise)."""
    if isinstance(value, int):
        whole = int.__int__(value)  # a plain int: a subclass's methods are not called
        if -(10**40) < whole < 10**40:
            return int.__repr__(whole)
        digits = round(whole.bit_length() * 0.30103)
        return f"{'minus ' if whole < 0 else ''}a number of about {digits} digits"
    return float.__format__(float(value), "g")


def check_depends_on_mode(value: object) -> str:
    if not isinstance(value, str) or value not in DEPENDS_ON_MODES:
        raise _fail(f"depends_on_mode must be 'completed' or 'finished', got {shown(value)}")
    return value


def check_tags(value: object) -> tuple[str, ...]:
    """At most 20 tags, each non-blank text of at most 100 characters without control characters
    (`tags[n]` names the first bad one)."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, list | tuple):
        raise _fail(f"tags must be a list of strings, got {json_type(value)}")
    if len(value) > MAX_TAGS:
        raise _fail(f"tags must be at most {MAX_TAGS}, got {len(value)}")
    for index, tag in enumerate(value):
        what = f"tags[{index}]"
        if not isinstance(tag, str) or not tag.strip():
            raise _fail(f"{what} must be a non-empty string")
        if len(tag) > MAX_TAG_LENGTH:
            raise _fail(f"{what} must be at most {MAX_TAG_LENGTH} characters, got {len(tag)}")
        if not (tag.isascii() and tag.isprintable()):
            if _CONTROL.search(tag):
                raise _fail(f"{what} must not contain control characters")
            _check_unicode(what, tag)
    return tuple(value)


def encode_metadata(value: object) -> str | None:
    """Metadata as JSON text (None for none or `{}`): a JSON object of at most 16384 bytes, by
    `encode_json`'s rules, whose `traceparent` and `tracestate`, if present, are a W3C trace
    context."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _fail(f"metadata must be a JSON object, got {json_type(value)}")
    try:  # a Mapping of the caller's: its own methods may raise anything
        return _encode_metadata(value)
    except InvalidJobError:
        raise
    except Exception as exc:
        raise _fail(unreadable("metadata", exc)) from None


def _encode_metadata(value: Mapping[str, Any]) -> str | None:
    if not value:
        return None
    text = encode_json(
        value, what="metadata", max_bytes=MAX_METADATA_BYTES, max_nesting=MAX_NESTING, error=InvalidJobError
    )
    parent = value.get("traceparent")
    if "traceparent" in value and not (isinstance(parent, str) and _TRACEPARENT.fullmatch(parent)):
        raise _fail(
            "metadata traceparent must be a W3C traceparent "
            "(00-<32 hex digits>-<16 hex digits>-<2 hex digits>)"
        )
    state = value.get("tracestate")
    if "tracestate" in value and not (isinstance(state, str) and len(state) <= MAX_TRACESTATE_LENGTH):
        raise _fail(f"metadata tracestate must be a string of at most {MAX_TRACESTATE_LENGTH} characters")
    return text


def _check_unicode(what: str, value: str) -> None:
    if _SURROGATE.search(value):
        raise _fail(f"{what} must be valid Unicode text (it holds an unpaired surrogate)")


def _is_whole_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_max_attempts(value: object) -> int:
    if type(value) is int and 1 <= value <= MAX_ATTEMPTS:  # the usual case, quickly
        return value
    if not _is_whole_number(value):
        raise _fail(f"max_attempts must be a whole number, got {shown(value)}")
    assert isinstance(value, int)
    if value < 1:
        raise _fail(f"max_attempts must be at least 1, got {number(value)}")
    if value > MAX_ATTEMPTS:
        raise _fail(f"max_attempts must be at most {MAX_ATTEMPTS}, got {number(value)}")
    return value


def check_priority(value: object) -> int:
    if type(value) is int and MIN_PRIORITY <= value <= MAX_PRIORITY:  # the usual case, quickly
        return value
    if not _is_whole_number(value) or not MIN_PRIORITY <= value <= MAX_PRIORITY:  # type: ignore[operator]
        raise _fail(
            f"priority must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}, got {shown(value)}"
        )
    assert isinstance(value, int)
    return value


def check_job_id(what: str, value: object) -> int:
    """A job id: a whole number from 1 to 2^63 - 1 (PostgreSQL's bigint)."""
    if not _is_whole_number(value) or not 1 <= value <= MAX_JOB_ID:  # type: ignore[operator]
        raise _fail(f"{what} must hold job ids (positive integers), got {shown(value)}")
    assert isinstance(value, int)
    return value


def check_run_at(value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise _fail("run_at must be a timezone-aware datetime")
    try:  # the tzinfo is the caller's: its utcoffset() may raise anything
        offset = value.utcoffset()
    except Exception as exc:
        raise _fail(unreadable("run_at's time zone", exc)) from None
    if offset is None:
        raise _fail("run_at must be a timezone-aware datetime")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # 9999-12-31 23:00 at UTC-5 is past year 9999 in UTC
        raise _fail(f"run_at must be {RUN_AT_RANGE}, got {value.isoformat()}") from None
    except Exception as exc:
        raise _fail(unreadable("run_at's time zone", exc)) from None
    if utc < EARLIEST_RUN_AT:
        raise _fail(f"run_at must be {RUN_AT_RANGE}, got {utc.year:04d}-{utc:%m-%d %H:%M:%S} UTC")
    return value


def check_delay(value: object, now: datetime) -> float:
    """A delay in seconds from `now`: finite, not negative, landing no later than 9999-12-31."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or (isinstance(value, float) and not math.isfinite(value))  # an int is finite, if huge
    ):
        raise _fail(f"delay must be a number of seconds, got {shown(value, quoted=True)}")
    if value < 0:
        raise _fail(f"delay must not be negative, got {number(value)}")
    if value > (LATEST_RUN_AT - now).total_seconds():
        raise _fail(f"delay must not reach past 9999-12-31 (UTC), got {number(value)} seconds")
    return float(value)


def check_claim_batch(value: object) -> int:
    if not _is_whole_number(value) or not 1 <= value <= MAX_CLAIM_BATCH:  # type: ignore[operator]
        raise _fail(f"batch must be between 1 and {MAX_CLAIM_BATCH}, got {shown(value)}")
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


class UnstorableValueError(ValueError):
    """A value cannot be stored as JSON; the message says what is wrong and where."""


def encode_payload(payload: object, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """The payload's JSON text, after checking that PostgreSQL can store it and a worker load it.

    Raises InvalidJobError naming what is wrong: not an object, or any rule of `encode_json`
    (with the payload's nesting limit).
    """
    if not isinstance(payload, Mapping):
        raise _fail(f"payload must be a JSON object, got {json_type(payload)}")
    return encode_json(
        payload, what="payload", max_bytes=max_bytes, max_nesting=MAX_NESTING, error=InvalidJobError
    )


def encode_json(
    value: Any,
    *,
    what: str,
    max_bytes: int | None = None,
    max_nesting: int | None = None,
    error: type[Exception] = UnstorableValueError,
) -> str:
    """`value` as JSON text that PostgreSQL's jsonb accepts, or `error` saying what is wrong and
    where: `result must not hold NaN or Infinity (JSON has no such numbers): NaN at result['r']`.

    The rules, the same for a payload, a result and progress: no NaN or infinities, no NUL
    character and no unpaired surrogate in a string or key, only JSON values (dicts, lists,
    strings, numbers, booleans, None; dict keys that are numbers, booleans or None become
    strings, as the json module does), at most `max_bytes` bytes of UTF-8 JSON text and at most
    `max_nesting` levels deep. `what` names the value in the message.
    """
    try:
        text = _ENCODER.encode(value)
    except RecursionError:
        raise error(_too_deep(what, max_nesting)) from None
    except Exception as exc:  # a container's own methods may raise anything
        raise error(_explain(value, what, exc)) from None
    try:  # the checks below walk the value again: a container's methods may raise this time
        _check_text(value, text, what, max_bytes=max_bytes, max_nesting=max_nesting, error=error)
    except error:
        raise
    except Exception as exc:
        raise error(unreadable(what, exc)) from None
    return text


def _check_text(
    value: Any,
    text: str,
    what: str,
    *,
    max_bytes: int | None,
    max_nesting: int | None,
    error: type[Exception],
) -> None:
    """The rules `encode_json` checks on the JSON text of `value` (and on `value` when the text
    hints at a problem)."""
    size = len(text)  # ASCII, the usual case: one byte per character, no surrogate possible
    if not text.isascii():
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise error(_explain(value, what, exc)) from None
    if max_bytes is not None and ("e+" in text or "e-" in text or "-0.0" in text):
        size += _numeric_growth(value)
    if max_bytes is not None and size > max_bytes:
        raise error(f"{what} must be at most {max_bytes} bytes of JSON text, got {size}")
    # json writes NUL as the escape \u0000, which jsonb refuses; the substring test is fast, the
    # regex exact (an escaped backslash followed by "u0000" is text, not NUL).
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise error(_explain(value, what, None) or f"{what} {_RULE_NUL}")
    # A key that is not text (1, True, None) is written as text ("1", "true", "null"), and may
    # then be the same as another key of its object: jsonb would keep only the last. Only a key
    # written so hints at it; the usual value, with text keys only, is not walked.
    if _NON_TEXT_KEY.search(text):
        collision = _key_collision(value, what)
        if collision is not None:
            raise error(f"{what} {_RULE_SAME_KEY}: {collision}")
    # Cheap bounds first: nesting deeper than the limit takes more brackets (and twice as many
    # characters) than that.
    if (
        max_nesting is not None
        and len(text) > 2 * max_nesting
        and text.count("[") + text.count("{") > max_nesting
        and nesting_depth(value, max_nesting) > max_nesting
    ):
        raise error(_too_deep(what, max_nesting))


def _numeric_growth(value: Any) -> int:
    """How many more bytes jsonb's text has than Python's JSON: jsonb keeps a number as a
    numeric, written without an exponent (Python's 1e+308 is 309 digits there) and without the
    sign of a zero, so the size checked here is the one the database checks."""
    growth = 0
    stack = [value]
    visited = 0
    while stack and visited < _MAX_NODES:
        node = stack.pop()
        visited += 1
        if isinstance(node, float):
            text = repr(node)
            if "e" in text or (node == 0 and text.startswith("-")):
                stored = format(Decimal(text), "f").removeprefix("-" if node == 0 else "")
                growth += len(stored) - len(text)
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return growth


def _too_deep(what: str, max_nesting: int | None) -> str:
    if max_nesting is None:
        return f"{what} is nested too deeply to be written as JSON"
    return f"{what} must not be nested more than {max_nesting} levels deep"


class RepeatedKeyError(ValueError):
    """A JSON object names a key twice: json.loads would keep the last value without a word."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key '{printable(key, 40)}' is given more than once")
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise RepeatedKeyError(key)
        found[key] = value
    return found


def load_json(text: str | bytes) -> Any:
    """json.loads for JSON a person gives (the CLI, the admin API), refusing an object that gives
    a key twice (RepeatedKeyError, a ValueError): `{"dry_run": true, "dry_run": false}` must not
    quietly become a real run."""
    return json.loads(text, object_pairs_hook=_unique_keys)


# One encoder for every value: json.dumps with options builds a new one on each call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
_RULE_FINITE = "must not hold NaN or Infinity (JSON has no such numbers)"
_RULE_NUL = "must not hold the NUL character (\\u0000), which PostgreSQL cannot store"
_RULE_UNICODE = "must be valid Unicode text (it holds an unpaired surrogate)"
_RULE_TYPE = "must hold only JSON values (dicts, lists, strings, numbers, booleans and None)"
_RULE_KEY = "must hold only JSON values (object keys are strings)"
_RULE_WRITE = "cannot be written as JSON"
_RULE_SAME_KEY = "must not hold two keys that are the same once written as JSON text"
# How the encoder writes a key that is not a string (a number, true, false, null), right after
# the `{` or `, ` before it: inside a string value the quote would be escaped.
_NON_TEXT_KEY = re.compile(r'(?:\{|, )"(?:-?[0-9][0-9.eE+-]*|true|false|null)": ')
_MAX_NODES = 1_000_000  # bound the search for what is wrong in a huge value
_MAX_KEY_REPR = 40
_MAX_PATH = 200


def _explain(value: Any, what: str, exc: BaseException | None) -> str:
    """What is wrong with `value` and where, found by walking it; `exc`: what the encoder said."""
    if exc is not None and "Circular reference" in safe_str(exc):
        return f"{what} must not contain itself (a circular reference)"
    try:
        found = _find_problem(value, what)
    except Exception:  # user containers may raise while we look
        found = None
    if found is not None:
        rule, where = found
        return f"{what} {rule}: {where}"
    if exc is None:
        return ""
    return f"{what} {_RULE_WRITE}: {clean_text(safe_str(exc), 200) or type(exc).__name__}"


def _find_problem(value: Any, root: str) -> tuple[str, str] | None:
    """(the rule broken, where) for the first thing in `value` (depth first) that JSON or
    PostgreSQL cannot hold."""
    for node, path in _walk(value, root):
        found = _node_problem(node)
        if found is not None:
            return found[0], f"{found[1]} {_short(path)}"
        if isinstance(node, dict):
            for key in list(node):
                found = _key_problem(key)
                if found is not None:
                    return found[0], f"{found[1]} {_short(path)}"
    return None


def _key_collision(value: Any, root: str) -> str | None:
    """Where two keys of one object are written the same (`1 and '1' as keys at payload`)."""
    for node, path in _walk(value, root):
        if isinstance(node, dict) and not all(type(key) is str for key in node):
            written: dict[str, Any] = {}
            for key in list(node):
                text = _written_key(key)
                if text in written:
                    return f"{_key_repr(written[text])} and {_key_repr(key)} as keys at {_short(path)}"
                written[text] = key
    return None


def _written_key(key: Any) -> str:
    """A key as the json module writes it."""
    if isinstance(key, str):
        return str.__str__(key)
    if key is True or key is False or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    if isinstance(key, int):
        return int.__repr__(key)
    return float.__repr__(key)


def _walk(value: Any, root: str) -> Iterator[tuple[Any, str]]:
    """Every node with its path, depth first, each container once (no recursion: a value may be
    nested deeper than Python's stack)."""
    stack: list[tuple[Any, str]] = [(value, root)]
    seen: set[int] = set()
    visited = 0
    while stack and visited < _MAX_NODES:
        node, path = stack.pop()
        visited += 1
        yield node, path
        if isinstance(node, dict | list | tuple):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, dict):
                children = [(item, f"{path}[{_key_repr(key)}]") for key, item in list(node.items())]
            else:
                children = [(item, f"{path}[{index}]") for index, item in enumerate(node)]
            stack.extend(reversed(children))


def _node_problem(node: Any) -> tuple[str, str] | None:
    """(rule, what was found, with the preposition before its path) for one node, or None."""
    if node is None or isinstance(node, bool | dict | list | tuple):
        return None
    if isinstance(node, str):
        return _text_problem(node, "in the string at")
    if isinstance(node, int):
        limit = sys.get_int_max_str_digits()
        if limit and node.bit_length() > limit * 3.3219:  # log2(10) bits per digit
            return _RULE_WRITE, f"an integer of more than {limit} digits at"
        return None
    if isinstance(node, float):
        if math.isnan(node):
            return _RULE_FINITE, "NaN at"
        if math.isinf(node):
            return _RULE_FINITE, f"{'-' if node < 0 else ''}Infinity at"
        return None
    return _RULE_TYPE, f"a value of type {type(node).__name__} at"


def _key_problem(key: Any) -> tuple[str, str] | None:
    if isinstance(key, str):
        return _text_problem(key, "in a key at")
    if isinstance(key, float) and not math.isfinite(key):
        return _RULE_FINITE, f"{key!r} as a key at"
    if key is None or isinstance(key, int | float):
        return None
    return _RULE_KEY, f"a key of type {type(key).__name__} at"


def _text_problem(text: str, where: str) -> tuple[str, str] | None:
    if "\x00" in text:
        return _RULE_NUL, f"\\x00 {where}"
    if not text.isascii():
        for char in text:
            if "\ud800" <= char <= "\udfff":
                return _RULE_UNICODE, f"\\u{ord(char):04x} {where}"
    return None


def _key_repr(key: Any) -> str:
    text = repr(key) if isinstance(key, str | int | float | bool) or key is None else type(key).__name__
    return text if len(text) <= _MAX_KEY_REPR else text[: _MAX_KEY_REPR - 4] + "...'"


def _short(path: str) -> str:
    return path if len(path) <= _MAX_PATH else path[:20] + "..." + path[-(_MAX_PATH - 23) :]


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


def shown(value: object, *, quoted: bool = False) -> str:
    """A refused value as a message shows it: JSON spelling for None and text, a long number by
    its size, briefly; `quoted`: repr() rather than str() for other values. A value whose
    __str__ or __repr__ raises is named by its type."""
    if value is None:
        return "null"
    if isinstance(value, int) and not isinstance(value, bool):
        return number(value)
    text = safe_repr(value) if quoted or isinstance(value, str) else safe_str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def safe_repr(value: object) -> str:
    """repr(value), or a placeholder when its __repr__ raises."""
    try:
        return repr(value)
    except Exception:  # anything may come out of user code
        return f"<{type(value).__name__} whose repr() failed>"


def unreadable(what: str, exc: BaseException) -> str:
    """The message for a value whose own methods raised while it was read (a hostile mapping)."""
    return f"{what} could not be read: {type(exc).__name__}: {first_line(exc, sqlstate=False)}"


def printable(text: str, limit: int | None = None) -> str:
    """`text` as one safe line for a terminal: control and format characters (newlines, escape
    sequences, bidirectional overrides) written as escapes, and cut to `limit` characters."""
    safe = _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    safe = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", safe)
    if limit is not None and len(safe) > limit:
        return safe[: max(0, limit - 1)] + "…"
    return safe
