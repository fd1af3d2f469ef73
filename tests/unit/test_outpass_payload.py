"""The outpass payload: what the jobs accept, and the permanent errors that name the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from passito_jobs.outpass.model import InvalidOutpassError, Outpass
from passito_jobs.registry import PermanentError
from tests.outpasses import sample_payload


def test_a_valid_outpass_round_trips_through_its_payload() -> None:
    outpass = Outpass.from_payload(sample_payload())
    assert outpass.outpass_id == "42"
    assert outpass.from_text == "Sat 1 Mar 2025, 09:00 UTC+05:30"
    assert outpass.to_text == "Mon 3 Mar 2025, 18:00 UTC+05:30"
    assert Outpass.from_payload(outpass.to_payload()) == outpass


def test_plain_dates_cover_whole_days_and_show_no_time() -> None:
    outpass = Outpass.from_payload(sample_payload(from_date="2025-03-01", to_date="2025-03-01"))
    assert (outpass.from_text, outpass.to_text) == ("Sat 1 Mar 2025", "Sat 1 Mar 2025")
    assert outpass.to_date - outpass.from_date > datetime(2025, 1, 1, 23) - datetime(2025, 1, 1)
    # Read as UTC, plus a day of grace: no time zone can make the QR code expire early.
    assert outpass.valid_until == datetime(2025, 3, 2, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"outpass_id": None}, "field 'outpass_id' is missing"),
        ({"outpass_id": "../../etc"}, "field 'outpass_id' must be a positive integer or 1-64 letters"),
        ({"outpass_id": "a/b"}, "field 'outpass_id' must be"),
        ({"outpass_id": ".hidden"}, "field 'outpass_id' must be"),
        ({"outpass_id": 0}, "field 'outpass_id' must be positive"),
        ({"outpass_id": True}, "field 'outpass_id' must be"),
        ({"student_email": "not-an-address"}, "field 'student_email' is not a valid email address"),
        ({"student_email": "a@b@example.org"}, "field 'student_email' is not a valid email address"),
        ({"student_email": "x@example.org\r\nBcc: all@example.org"}, "field 'student_email' is not a valid"),
        ({"parent_email": "parent@localhost"}, "field 'parent_email' is not a valid email address"),
        ({"parent_email": None}, "field 'parent_email' is missing"),
        (
            {"to_date": "2025-02-28T09:00:00+05:30"},
            r"to_date \(2025-02-28T09:00:00\+05:30\) is before from_date",
        ),
        ({"from_date": "yesterday"}, "field 'from_date' is not an ISO 8601 date"),
        ({"to_date": "2025-03-03T18:00:00"}, "both have a time zone offset, or neither"),
        (
            {"student_name": "Aanya\r\nBcc: everyone@example.org"},
            "field 'student_name' must not contain line",
        ),
        ({"destination": "Chennai\nX-Injected: 1"}, "field 'destination' must not contain line breaks"),
        ({"student_name": "   "}, "field 'student_name' is missing"),
        ({"room": ["214"]}, "field 'room' must be a string, got list"),
        ({"status": "teleported"}, "field 'status' must be one of"),
        ({"needs_parent_approval": "yes"}, "field 'needs_parent_approval' must be true or false"),
        ({"reason": "x" * 2001}, "field 'reason' is longer than 2000 characters"),
    ],
)
def test_bad_payloads_fail_permanently_naming_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOutpassError, match=message) as caught:
        Outpass.from_payload(sample_payload(**changes))
    assert isinstance(caught.value, PermanentError)  # the worker does not retry it


def test_a_plain_date_takes_the_other_dates_offset() -> None:
    outpass = Outpass.from_payload(sample_payload(to_date="2025-03-03"))
    assert outpass.to_date.isoformat() == "2025-03-03T23:59:59+05:30"
    with pytest.raises(InvalidOutpassError, match=r"to_date \(2025-02-28\) is before from_date"):
        Outpass.from_payload(sample_payload(to_date="2025-02-28"))


def test_reason_may_span_lines_and_numbers_may_be_numbers() -> None:
    outpass = Outpass.from_payload(sample_payload(reason="Wedding.\r\nBack Monday.", room=214))
    assert outpass.reason == "Wedding.\r\nBack Monday."
    assert outpass.room == "214"


def test_parent_email_is_optional_without_parent_approval() -> None:
    outpass = Outpass.from_payload(sample_payload(parent_email=None, needs_parent_approval=False))
    assert outpass.parent_email is None


def test_a_payload_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(InvalidOutpassError, match="must be a JSON object"):
        Outpass.from_payload([1, 2])  # type: ignore[arg-type]


# Values that passed before and then broke a header, a file name or a date later (or failed
# three times at the worker); each must fail at once, naming the field.
HOSTILE = [
    ({"outpass_id": "abc\n"}, "field 'outpass_id' must be a positive integer or 1-64"),
    ({"outpass_id": "42\n"}, "field 'outpass_id' must be a positive integer or 1-64"),
    (
        {"outpass_id": 10**80},
        r"field 'outpass_id' must be at most 9223372036854775807 \(2\^63 - 1\), got a number of 81 digits",
    ),
    ({"outpass_id": 2**63}, "field 'outpass_id' must be at most 9223372036854775807"),
    ({"outpass_id": "a\x00b"}, "field 'outpass_id' must be a positive integer or 1-64"),
    ({"room": 10**80}, r"field 'room' is a number beyond ±9223372036854775807"),
    (
        {"student_name": "Aanya\x85Bcc: x"},
        r"field 'student_name' must not contain line breaks.*\(found U\+0085\)",
    ),
    ({"destination": "Chennai\u009b2J"}, r"field 'destination' must not contain .*\(found U\+009B\)"),
    ({"hostel": "Kaveri\u2028X-Injected: 1"}, r"field 'hostel' must not contain .*\(found U\+2028\)"),
    ({"room": "214\u2029"}, r"field 'room' must not contain .*\(found U\+2029\)"),
    ({"parent_name": "Rohan\u200dSharma"}, r"field 'parent_name' must not contain .*\(found U\+200D\)"),
    ({"roll_number": "CS21\u200bB042"}, r"field 'roll_number' must not contain .*\(found U\+200B\)"),
    ({"student_name": "\u202eamrahS"}, r"field 'student_name' must not contain .*\(found U\+202E\)"),
    ({"student_name": "Aanya\ufeff"}, r"field 'student_name' must not contain .*\(found U\+FEFF\)"),
    ({"student_name": "Aanya\n"}, r"field 'student_name' must not contain .*\(found U\+000A\)"),
    ({"status": "approved\n"}, r"field 'status' must not contain .*\(found U\+000A\)"),
    ({"student_name": "A\x00"}, r"field 'student_name' must not contain .*\(found U\+0000\)"),
    ({"student_name": "A\ud800"}, r"field 'student_name' must not contain .*\(found U\+D800\)"),
    ({"reason": "Wedding\x00"}, r"field 'reason' must not contain control .*\(found U\+0000\)"),
    ({"reason": "Wedding\u202e"}, r"field 'reason' must not contain control .*\(found U\+202E\)"),
    ({"reason": "Wedding\x85"}, r"field 'reason' must not contain control .*\(found U\+0085\)"),
    ({"reason": "Wedding\rBack"}, r"field 'reason' must not contain control .*\(found U\+000D\)"),
    ({"student_email": "aanya@example.org\n"}, "field 'student_email' is not a valid email address"),
    ({"parent_email": "rohan@example.org\x85"}, "field 'parent_email' is not a valid email address"),
    ({"to_date": "9999-12-31"}, "field 'to_date' must be within the years 1970 to 2999, got 9999"),
    ({"to_date": "9999-12-31T23:59:59+05:30"}, "field 'to_date' must be within the years 1970 to 2999"),
    ({"from_date": "0001-01-01"}, "field 'from_date' must be within the years 1970 to 2999, got 1"),
    ({"from_date": "2025-03-01\n"}, r"field 'from_date' must not contain .*\(found U\+000A\)"),
    (
        {"from_date": "2025-03-01" + "0" * 10_000},
        r"field 'from_date' is not an ISO 8601 date: .*\(10010 char",
    ),
]


@pytest.mark.parametrize(("changes", "message"), HOSTILE)
def test_hostile_values_fail_at_once_naming_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOutpassError, match=message) as caught:
        Outpass.from_payload(sample_payload(**changes))
    assert isinstance(caught.value, PermanentError)
    assert len(str(caught.value)) < 300  # a huge value is not echoed back whole


def test_a_line_feed_in_the_reason_and_spaces_around_a_name_are_fine() -> None:
    outpass = Outpass.from_payload(
        sample_payload(reason="Line one\nLine two", student_name="  Aanya Sharma ", outpass_id=2**63 - 1)
    )
    assert (outpass.reason, outpass.student_name) == ("Line one\nLine two", "Aanya Sharma")
    assert outpass.outpass_id == "9223372036854775807"
    # Non-Latin names, and the far ends of the date range, are fine too.
    far = Outpass.from_payload(
        sample_payload(student_name="ஆன்யா ஷர்மா", from_date="2999-12-30", to_date="2999-12-31")
    )
    assert far.valid_until.year == 3000
