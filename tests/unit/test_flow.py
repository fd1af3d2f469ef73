"""Rates and limits as Python reads them (queue/flow.py): the words match the SQL functions'
(tests/integration/test_flow_control.py checks those)."""

from __future__ import annotations

import pytest

from passito_jobs.queue.errors import FlowControlError
from passito_jobs.queue.flow import Rate, check_limit, check_rate, parse_rate


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/1s", "rate must allow at least 1 job per period, got 0"),
        ("10/0s", "rate period must be from 1ms to 7d"),
        ("x/1m", "rate must look like 50/1s or 600/1m (N/PERIOD), got 'x/1m'"),
        ("-1", "rate must look like 50/1s or 600/1m (N/PERIOD), got '-1'"),
        ("NaN/1s", "rate must look like 50/1s or 600/1m (N/PERIOD), got 'NaN/1s'"),
        ("10/1y", "rate must look like 50/1s or 600/1m (N/PERIOD), got '10/1y'"),
        ("9" * 20 + "/1s", f"rate must allow at most 1000000 jobs per period, got {'9' * 20}"),
        ("1000000/1ms", "rate must be at most 1000000 jobs per second"),
    ],
)
def test_python_refuses_the_same_rates_with_the_same_words(text: str, message: str) -> None:
    with pytest.raises(FlowControlError) as caught:
        parse_rate(text)
    assert str(caught.value) == message


def test_rates_read_as_written() -> None:
    assert parse_rate("50/1s") == Rate(50, 1.0)
    assert parse_rate(" 600 / 1m ") == Rate(600, 60.0)
    assert parse_rate("10/s") == Rate(10, 1.0)
    assert str(parse_rate("5/250ms")) == "5/250ms"
    assert str(parse_rate("100/1h")) == "100/1h"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "concurrency must be at least 1, got 0"),
        (-5, "concurrency must be at least 1, got -5"),
        (10**30, f"concurrency must be at most 1000000, got {10**30}"),
        (True, "concurrency must be a whole number, got bool"),
        (float("nan"), "concurrency must be a whole number, got float"),
        ("3", "concurrency must be a whole number, got '3'"),
    ],
)
def test_limits_are_whole_numbers_from_1_to_a_million(value: object, message: str) -> None:
    with pytest.raises(FlowControlError) as caught:
        check_limit("concurrency", value)
    assert str(caught.value) == message


def test_no_limit_is_none() -> None:
    assert check_limit("concurrency", None) is None
    assert check_rate(None) is None
    assert check_limit("concurrency", 1_000_000) == 1_000_000


@pytest.mark.parametrize("period", [float("nan"), float("inf"), 0.0, -1.0, 8 * 86400.0])
def test_a_rate_period_out_of_range_is_refused(period: float) -> None:
    with pytest.raises(FlowControlError, match=r"^rate period must be from 1ms to 7d$"):
        check_rate(Rate(10, period))
