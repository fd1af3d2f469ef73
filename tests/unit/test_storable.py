"""What the database can store: JSON values checked before they leave the worker, error text
made storable, retry delays within range, and which errors mean a lost connection."""

from __future__ import annotations

import json
import math
import random
from datetime import date
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from passito_jobs.queue.backoff import MAX_RETRY_DELAY, clamp_delay, retry_delay
from passito_jobs.queue.errors import DatabaseUnavailableError, clean_text, is_connection_error, safe_str
from passito_jobs.queue.limits import UnstorableValueError, encode_json
from passito_jobs.registry import JobContext
from passito_jobs.worker.failures import AttemptTimeoutError, describe, format_error

FINITE = "must not hold NaN or Infinity (JSON has no such numbers): "
JSON_VALUES = "must hold only JSON values (dicts, lists, strings, numbers, booleans and None): "
NUL = "must not hold the NUL character (\\u0000), which PostgreSQL cannot store: "


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"r": float("nan")}, f"{FINITE}NaN at result['r']"),
        ([0, [1, float("-inf")]], f"{FINITE}-Infinity at result[1][1]"),
        ({"s": {1}}, f"{JSON_VALUES}a value of type set at result['s']"),
        ({"d": [date(2024, 1, 1)]}, f"{JSON_VALUES}a value of type date at result['d'][0]"),
        (b"bytes", f"{JSON_VALUES}a value of type bytes at result"),
        ({"k": "a\x00b"}, f"{NUL}\\x00 in the string at result['k']"),
        ({"a\x00": 1}, f"{NUL}\\x00 in a key at result"),
        (
            {"k": ["\udc00"]},
            "must be valid Unicode text (it holds an unpaired surrogate): "
            "\\udc00 in the string at result['k'][0]",
        ),
        ({(1, 2): 1}, "must hold only JSON values (object keys are strings): a key of type tuple at result"),
        ({float("inf"): 1}, f"{FINITE}inf as a key at result"),
        (10**5000, "cannot be written as JSON: an integer of more than 4300 digits at result"),
        (nested(5000), "is nested too deeply to be written as JSON"),
    ],
    ids=[
        "nan",
        "-inf",
        "set",
        "date",
        "bytes",
        "nul",
        "nul-key",
        "surrogate",
        "tuple-key",
        "inf-key",
        "huge-int",
        "deep",
    ],
)
def test_a_value_the_database_cannot_store_is_named_with_its_place(value: Any, problem: str) -> None:
    with pytest.raises(UnstorableValueError) as caught:
        encode_json(value, what="result")
    assert str(caught.value) == f"result {problem}"


def test_storable_values_are_json_text_with_their_characters_kept() -> None:
    value = {"text": "héllo 😀 \\u0000 \x01", "n": [1, 2.5, None, True], 3: "int key"}
    text = encode_json(value, what="result", max_bytes=1000)
    assert json.loads(text) == {"text": "héllo 😀 \\u0000 \x01", "n": [1, 2.5, None, True], "3": "int key"}
    assert "😀" in text  # not escaped: the size limit counts the UTF-8 bytes PostgreSQL stores


def test_the_size_limit_counts_utf8_bytes() -> None:
    assert encode_json("é" * 4, what="result", max_bytes=10) == '"éééé"'  # 10 bytes
    with pytest.raises(UnstorableValueError, match=r"^result must be at most 10 bytes of JSON text, got 12$"):
        encode_json("é" * 5, what="result", max_bytes=10)


def test_a_circular_value_and_a_hostile_container_are_refused_not_raised() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(
        UnstorableValueError, match=r"^progress must not contain itself \(a circular reference\)$"
    ):
        encode_json(loop, what="progress")

    class Hostile(dict[str, Any]):
        def items(self) -> Any:
            raise RuntimeError("no items for you")

    with pytest.raises(UnstorableValueError, match=r"^progress cannot be written as JSON: no items for you$"):
        encode_json(Hostile(a=1), what="progress")


def test_set_progress_refuses_at_once_and_keeps_the_last_good_value() -> None:
    ctx = JobContext(1, "T", "default", {}, 1, 3, "w")
    ctx.set_progress({"step": 1})
    with pytest.raises(
        ValueError, match=r"progress must hold only JSON values .*: a value of type date at progress\['at'\]"
    ):
        ctx.set_progress({"at": date(2024, 1, 1)})
    assert ctx.take_progress_json() == '{"step": 1}'
    ctx.max_bytes = 10
    with pytest.raises(ValueError, match="progress must be at most 10 bytes of JSON text, got 22"):
        ctx.set_progress("x" * 20)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", r"^progress is not JSON text: Expecting property name"),
        ('{"a": 1, "a": 2}', r"^progress is not JSON text: the key 'a' is given more than once$"),
        ("[NaN]", r"^progress must not hold NaN or Infinity .*: NaN at progress\[0\]$"),
        ('"\\u0000"', r"^progress must not hold the NUL character"),
        ('"\\ud800"', r"^progress must be valid Unicode text"),
        ('"' + "x" * 20 + '"', r"^progress must be at most 10 bytes of JSON text, got 22$"),
        ("[" * 5000 + "]" * 5000, r"^progress is not JSON text: it is nested too deeply$"),
        (b"{}", r"^progress must be JSON text \(a str\), got bytes$"),
    ],
)
def test_set_progress_json_refuses_text_the_database_would_refuse(text: Any, problem: str) -> None:
    ctx = JobContext(1, "T", "default", {}, 1, 3, "w")
    ctx.set_progress_json('{"ok": 1}')
    ctx.max_bytes = 10
    with pytest.raises(UnstorableValueError, match=problem):
        ctx.set_progress_json(text)
    ctx.max_bytes = 1000
    assert ctx.take_progress_json() == '{"ok": 1}'
    ctx.set_progress_json(' [1, {"b": "\u00e9"}] ')
    assert ctx.take_progress_json() == '[1, {"b": "é"}]'


def test_error_text_is_cleaned_and_bounded() -> None:
    assert clean_text("a\x00b\ud800c", 100) == "a\\x00b\\ud800c"
    assert clean_text("x" * 50, 10) == "xxxxxxx..."
    assert len(clean_text("\x00" * 100_000, 4000)) == 4000


def test_failures_of_hostile_exceptions_are_described() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    try:
        raise Unprintable
    except Unprintable as exc:
        text = format_error(exc)
    assert text.startswith("Unprintable: <Unprintable whose str() failed>\nTraceback")
    assert safe_str(Unprintable()) == "<Unprintable whose str() failed>"
    assert describe(ValueError("bad\x00")) == "ValueError: bad\\x00"

    class TracebackRaises(Exception):
        @property  # type: ignore[override]
        def __traceback__(self) -> Any:
            raise RuntimeError("tb")

    try:
        raise TracebackRaises("hostile")
    except TracebackRaises as exc:
        try:
            text = format_error(exc)
        except RuntimeError:  # (not raised: pytest cannot even report this one)
            text = "format_error raised"
    assert text == "TracebackRaises: hostile"
    made = AttemptTimeoutError("attempt exceeded the 1s timeout of job type X")
    assert format_error(made) == "AttemptTimeoutError: attempt exceeded the 1s timeout of job type X"


def test_retry_delays_stay_within_what_postgresql_takes() -> None:
    rng = random.Random(3)
    assert retry_delay(1, base=1e300, cap=math.inf, rng=rng) == MAX_RETRY_DELAY
    assert retry_delay(60, base=2, cap=1e20, rng=rng) == MAX_RETRY_DELAY
    assert [clamp_delay(x) for x in (math.nan, -5.0, math.inf, 10.0)] == [
        MAX_RETRY_DELAY,
        0.0,
        MAX_RETRY_DELAY,
        10.0,
    ]


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (pg_errors.lookup("22P05")("unsupported Unicode escape sequence"), False),
        (pg_errors.lookup("22008")("interval out of range"), False),
        (pg_errors.lookup("23514")("check constraint"), False),
        (pg_errors.lookup("54001")("stack depth limit exceeded"), False),
        (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), False),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), False),
        (pg_errors.lookup("08006")("connection failure"), True),
        (pg_errors.lookup("57P01")("terminating connection due to administrator command"), True),
        (pg_errors.lookup("57P03")("the database system is starting up"), True),
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (DatabaseUnavailableError("cannot connect to the database at db:5432/x: refused"), True),
    ],
)
def test_only_connection_class_errors_mean_reconnect(error: BaseException, lost: bool) -> None:
    assert is_connection_error(error) is lost
