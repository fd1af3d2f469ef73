"""The input limits (queue/limits.py) on their own: each rule, its message, hostile values."""

from __future__ import annotations

import json
import math
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from passito_jobs.queue import limits
from passito_jobs.queue.errors import InvalidJobError
from tests.hostile import Hostile, HostileDict, HostileInt, HostileZone

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def refused(check: Any, *args: Any) -> str:
    with pytest.raises(InvalidJobError) as caught:
        check(*args)
    return str(caught.value)


def test_whitespace_is_exactly_what_python_calls_space() -> None:
    """The set is spelled out (SQL uses the same list), so it must match str.isspace()."""
    spelled = {c for c in map(chr, range(0x110000)) if limits._BLANK.fullmatch(c)}
    assert spelled == {c for c in map(chr, range(0x110000)) if c.isspace()}


def test_control_characters_are_unicode_category_cc() -> None:
    spelled = {c for c in map(chr, range(0x110000)) if limits._CONTROL.search(c)}
    assert spelled == {c for c in map(chr, range(0x110000)) if unicodedata.category(c) == "Cc"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "queue must be a non-empty string"),
        (" \t\u3000\u00a0", "queue must be a non-empty string"),
        (None, "queue must be a non-empty string"),
        (7, "queue must be a non-empty string"),
        ("q" * 129, "queue must be at most 128 characters, got 129"),
        ("a\nb", "queue must not contain control characters"),
        ("a\x1bb", "queue must not contain control characters"),
        ("a\x9bb", "queue must not contain control characters"),
        ("a\udcffb", "queue must be valid Unicode text (it holds an unpaired surrogate)"),
    ],
)
def test_names(value: object, message: str) -> None:
    assert refused(limits.check_name, "queue", value) == message


def test_names_at_the_limit_pass() -> None:
    assert limits.check_name("job type", "t" * 128) == "t" * 128
    assert limits.check_name("queue", "ünïcødé 😀 queue") == "ünïcødé 😀 queue"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "unique_key must be a non-empty string"),
        ("k" * 513, "unique_key must be at most 512 characters, got 513"),
        ("a\x00b", "unique_key must not contain the NUL character"),
        ("\ud800", "unique_key must be valid Unicode text"),
    ],
)
def test_unique_keys(value: str, message: str) -> None:
    assert refused(limits.check_unique_key, value).startswith(message)


def test_numbers() -> None:
    assert refused(limits.check_max_attempts, 0) == "max_attempts must be at least 1, got 0"
    assert refused(limits.check_max_attempts, 1001) == "max_attempts must be at most 1000, got 1001"
    assert refused(limits.check_max_attempts, None) == "max_attempts must be a whole number, got null"
    assert refused(limits.check_max_attempts, True).startswith("max_attempts must be a whole number")
    assert limits.check_max_attempts(1000) == 1000
    assert limits.check_priority(-(2**31)) == -(2**31)
    assert refused(limits.check_priority, 2**31).startswith("priority must be a whole number from")
    assert limits.check_job_id("depends_on", 2**63 - 1) == 2**63 - 1
    assert refused(limits.check_job_id, "depends_on", 2**63) == (
        "depends_on must hold job ids (positive integers), got 9223372036854775808"
    )
    assert refused(limits.check_job_id, "depends_on", None).endswith("got null")
    assert refused(limits.check_job_id, "depends_on", 10**100).endswith("got a number of about 100 digits")
    assert refused(limits.check_claim_batch, 10_001) == "batch must be between 1 and 10000, got 10001"


def test_times() -> None:
    assert limits.check_run_at(datetime(9999, 12, 31, 23, 59, tzinfo=UTC)).year == 9999
    assert refused(limits.check_run_at, datetime(1969, 12, 31, 23, 59, tzinfo=UTC)) == (
        "run_at must be between 1970-01-01 and 9999-12-31 (UTC), got 1969-12-31 23:59:00 UTC"
    )
    late_in_new_york = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert "run_at must be between" in refused(limits.check_run_at, late_in_new_york)
    assert refused(limits.check_run_at, datetime(2030, 1, 1)) == "run_at must be a timezone-aware datetime"
    assert limits.check_delay(3600, NOW) == 3600.0
    assert refused(limits.check_delay, 1e300, NOW) == (
        "delay must not reach past 9999-12-31 (UTC), got 1e+300 seconds"
    )
    assert refused(limits.check_delay, 300_000_000_000, NOW).startswith("delay must not reach past")
    assert refused(limits.check_delay, math.nan, NOW).startswith("delay must be a number of seconds")
    assert refused(limits.check_delay, -1, NOW) == "delay must not be negative, got -1"


def deep(levels: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(levels - 1):
        value = [value]
    return {"a": value}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2], "payload must be a JSON object, got array"),
        ("x", "payload must be a JSON object, got string"),
        (None, "payload must be a JSON object, got null"),
        ({"x": math.nan}, "payload must not hold NaN or Infinity"),
        ({"x": [math.inf]}, "payload must not hold NaN or Infinity"),
        ({"x": "a\x00b"}, "payload must not hold the NUL character"),
        ({"a\x00": 1}, "payload must not hold the NUL character"),
        ({"x": "\ud800"}, "payload must be valid Unicode text"),
        ({"x": datetime(2025, 1, 1)}, "payload must hold only JSON values"),
        ({"x": {1, 2}}, "payload must hold only JSON values"),
        ({"x": b"bytes"}, "payload must hold only JSON values"),
        ({"x": 10**5000}, "payload cannot be written as JSON"),
        (deep(101), "payload must not be nested more than 100 levels deep"),
        (deep(30_000), "payload must not be nested more than 100 levels deep"),
        ({"x": "y" * 1024 * 1024}, "payload must be at most 1048576 bytes of JSON text, got 1048585"),
    ],
)
def test_payloads_that_cannot_be_stored_are_refused(payload: object, message: str) -> None:
    assert refused(limits.encode_payload, payload).startswith(message)


def test_circular_payload() -> None:
    payload: dict[str, Any] = {}
    payload["self"] = payload
    assert "circular" in refused(limits.encode_payload, payload)


def test_payloads_that_look_alike_but_are_fine() -> None:
    # An escaped backslash followed by "u0000" is text, not NUL.
    assert json.loads(limits.encode_payload({"x": "\\u0000"})) == {"x": "\\u0000"}
    assert limits.encode_payload(deep(100))
    assert limits.encode_payload({"brackets": "[" * 500})  # brackets in text do not nest
    assert limits.encode_payload({"x": "y" * 10}, max_bytes=19) == '{"x": "yyyyyyyyyy"}'
    assert "at most 18 bytes of JSON text, got 19" in refused(limits.encode_payload, {"x": "y" * 10}, 18)


def test_nesting_depth_counts_levels_below_the_payload() -> None:
    assert limits.nesting_depth({}) == 0
    assert limits.nesting_depth({"a": 1}) == 1
    assert limits.nesting_depth({"a": [[]]}) == 2
    assert limits.nesting_depth({"a": [[1]], "b": 2}) == 3
    assert limits.nesting_depth(deep(5000)) == limits.MAX_NESTING + 1  # stops once past the limit


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=30,
)


@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_a_payload_is_either_encoded_faithfully_or_refused_with_a_reason(payload: dict[str, Any]) -> None:
    text, reason = encoded_or_refused(payload)
    if reason:
        assert reason.startswith("payload must")
    else:
        assert json.loads(text) == payload


def encoded_or_refused(payload: Any) -> tuple[str, str]:
    """(the JSON text, "") or ("", why it was refused)."""
    try:
        return limits.encode_payload(payload), ""
    except InvalidJobError as exc:
        return "", str(exc)


def test_printable_escapes_what_a_terminal_would_act_on() -> None:
    assert limits.printable("plain queue ünï") == "plain queue ünï"
    assert limits.printable("a\nb\x1b[31mc\u202ed\x9b") == "a\\nb\\x1b[31mc\\u202ed\\x9b"
    assert limits.printable("x\udcff") == "x\\udcff"
    assert limits.printable("q" * 300, 10) == "qqqqqqqqq…"


HUGE = 10**5000  # str() refuses it (past 4,300 digits)


def test_numbers_too_long_to_print_are_shown_by_their_size() -> None:
    assert limits.number(HUGE) == "a number of about 5000 digits"
    assert limits.number(-HUGE) == "minus a number of about 5000 digits"
    assert limits.number(10**39) == str(10**39)
    assert limits.number(1e300) == "1e+300"
    assert refused(limits.check_priority, HUGE) == (
        "priority must be a whole number from -2147483648 to 2147483647, got a number of about 5000 digits"
    )
    assert refused(limits.check_max_attempts, HUGE) == (
        "max_attempts must be at most 1000, got a number of about 5000 digits"
    )
    assert refused(limits.check_max_attempts, -HUGE).endswith("got minus a number of about 5000 digits")
    assert refused(limits.check_job_id, "depends_on", HUGE).endswith("got a number of about 5000 digits")
    assert refused(limits.check_unique_options, "k", HUGE, "keep") == (
        "unique_for must be at most 36500d (100 years), got a number of about 5000 digits seconds"
    )
    assert refused(limits.check_delay, HUGE, NOW) == (
        "delay must not reach past 9999-12-31 (UTC), got a number of about 5000 digits seconds"
    )
    assert refused(limits.check_delay, -HUGE, NOW).startswith("delay must not be negative, got minus")


def test_values_whose_str_raises_are_named_by_their_type() -> None:
    assert refused(limits.check_priority, Hostile()).endswith("got <Hostile whose str() failed>")
    assert refused(limits.check_max_attempts, Hostile()).endswith("got <Hostile whose str() failed>")
    assert (
        refused(limits.check_max_attempts, HostileInt(5000)) == "max_attempts must be at most 1000, got 5000"
    )
    assert refused(limits.check_job_id, "depends_on", Hostile()).endswith("got <Hostile whose str() failed>")
    assert refused(limits.check_delay, Hostile(), NOW) == (
        "delay must be a number of seconds, got <Hostile whose repr() failed>"
    )
    assert refused(limits.check_unique_options, "k", None, Hostile()).endswith(
        "got <Hostile whose str() failed>"
    )
    assert refused(limits.check_depends_on_mode, Hostile()).endswith("got <Hostile whose str() failed>")
    assert refused(limits.check_run_at, datetime(2030, 1, 1, tzinfo=HostileZone())) == (
        "run_at's time zone could not be read: RuntimeError: no offset for you"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1: "a", "1": "b"}, "1 and '1' as keys at payload"),
        ({True: 1, "true": 2}, "True and 'true' as keys at payload"),
        ({"x": [{"null": 1, None: 2}]}, "'null' and None as keys at payload['x'][0]"),
        ({"x": {1.5: 1, "1.5": 2}}, "1.5 and '1.5' as keys at payload['x']"),
        ({"a": 1, -7: 2, "-7": 3}, "-7 and '-7' as keys at payload"),
    ],
)
def test_keys_that_are_the_same_once_written_are_refused(value: dict[Any, Any], message: str) -> None:
    """json writes 1 and "1" both as "1": jsonb would keep one value, and lose the other."""
    rule = "payload must not hold two keys that are the same once written as JSON text: "
    assert refused(limits.encode_payload, value) == rule + message
    assert refused(limits.encode_metadata, value).startswith("metadata must not hold two keys")
    with pytest.raises(limits.UnstorableValueError, match=r"^result must not hold two keys"):
        limits.encode_json({"r": value}, what="result")


def test_keys_that_only_look_alike_are_fine() -> None:
    assert (
        limits.encode_payload({1: "a", "2": "b", None: 1, False: 2})
        == '{"1": "a", "2": "b", "null": 1, "false": 2}'
    )
    assert limits.encode_payload({"a": '{"1": 2}', "1": 3}) == '{"a": "{\\"1\\": 2}", "1": 3}'


json_keys = st.text(alphabet="1tn", max_size=2) | st.integers(-2, 12) | st.booleans() | st.none()


@given(st.dictionaries(json_keys, st.integers(), max_size=6))
def test_a_payload_with_keys_of_any_kind_loses_none_of_them(payload: dict[Any, int]) -> None:
    text, reason = encoded_or_refused(payload)
    if reason:
        assert reason.startswith("payload must not hold two keys that are the same once written as JSON text")
    else:
        assert len(json.loads(text)) == len(payload)


def test_a_mapping_whose_methods_raise_is_refused_with_its_name() -> None:
    deep_and_hostile = {"a": HostileDict({"b": [[[1]]] * 100})}  # long enough for the nesting walk
    assert refused(limits.encode_payload, deep_and_hostile) == (
        "payload could not be read: RuntimeError: no values for you"
    )
    assert refused(limits.encode_metadata, HostileDict({"a": 1})) == (
        "metadata could not be read: RuntimeError: no len for you"
    )
    with pytest.raises(limits.UnstorableValueError, match=r"^result could not be read: RuntimeError"):
        limits.encode_json(deep_and_hostile, what="result", max_nesting=100)
