"""Bad arguments to dispatch, dispatch_many, dispatch_batch and wait: each is refused with a
message that names it, before any connection is made, never with a raw error from inside."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from passito_jobs import InvalidJobError, JobRequest, dispatch, dispatch_many
from passito_jobs.queue.dispatch import dispatch_batch, validate
from passito_jobs.queue.results import wait
from tests.hostile import Hostile, HostileDict, HostileInt, HostileZone

HUGE = 10**5000  # str() refuses it (past 4,300 digits)


def refused(call: Callable[[], object]) -> str:
    with pytest.raises(InvalidJobError) as caught:
        call()
    return str(caught.value)


def noop(**kwargs: Any) -> Callable[[], object]:
    return lambda: dispatch("Noop", {}, **kwargs)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            noop(priority=HUGE),
            "priority must be a whole number from -2147483648 to 2147483647, "
            "got a number of about 5000 digits",
        ),
        (noop(max_attempts=HUGE), "max_attempts must be at most 1000, got a number of about 5000 digits"),
        (
            noop(unique_key="k", unique_for=HUGE),
            "unique_for must be at most 36500d (100 years), got a number of about 5000 digits seconds",
        ),
        (
            noop(depends_on=[HUGE]),
            "depends_on must hold job ids (positive integers), got a number of about 5000 digits",
        ),
        (
            noop(delay=HUGE),
            "delay must not reach past 9999-12-31 (UTC), got a number of about 5000 digits seconds",
        ),
        (
            lambda: wait(HUGE),
            "job_id must hold job ids (positive integers), got a number of about 5000 digits",
        ),
    ],
)
def test_huge_numbers_are_refused_with_their_size(call: Callable[[], object], message: str) -> None:
    assert refused(call) == message


def test_a_huge_timeout_is_refused_with_its_size() -> None:
    with pytest.raises(
        ValueError, match=r"^timeout must be 0 to 3153600000 seconds, got a number of about 5000 digits$"
    ):
        wait(1, timeout=HUGE)
    with pytest.raises(ValueError, match=r"got <Hostile whose repr\(\) failed>$"):
        wait(1, timeout=Hostile())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("depends_on", "message"),
    [
        (5, "depends_on must be a list of job ids, got int"),
        (None, "depends_on must be a list of job ids, got NoneType"),
        ("12", "depends_on must be a list of job ids, got str"),
        ({1: 2}, "depends_on must be a list of job ids, got dict"),
        (itertools.count(1), "depends_on must hold at most 100000 job ids, got more"),
    ],
)
def test_depends_on_that_is_not_a_list_of_ids_is_refused(depends_on: Any, message: str) -> None:
    assert refused(noop(depends_on=depends_on)) == message
    assert refused(lambda: dispatch_many([{"type": "Noop", "depends_on": depends_on}])) == f"job 0: {message}"
    request = JobRequest("Noop", depends_on=depends_on)
    assert refused(lambda: dispatch_many([request])) == f"job 0: {message}"
    assert refused(lambda: validate(request)) == message


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            [JobRequest("Noop"), {"type": "Noop"}, {"type": "Noop"}, 5],
            "job 3: must be a JobRequest or a mapping, got int",
        ),
        ([None], "job 0: must be a JobRequest or a mapping, got NoneType"),
        (["Noop"], "job 0: must be a JobRequest or a mapping, got str"),
        ({"type": "Noop"}, "requests must be a list of JobRequests or mappings, got dict"),
        (JobRequest("Noop"), "requests must be a list of JobRequests or mappings, got JobRequest"),
        (5, "requests must be a list of JobRequests or mappings, got int"),
        ([{"type": "Noop", 1: 2, "x": 3}], "job 0: unknown argument(s): 1, x"),
    ],
)
def test_dispatch_many_refuses_what_is_not_a_job(items: Any, message: str) -> None:
    assert refused(lambda: dispatch_many(items)) == message


@pytest.mark.parametrize(
    ("on_finish", "message"),
    [
        (5, "on_finish: must be a JobRequest, a mapping or a job type, got int"),
        (None, "on_finish: must be a JobRequest, a mapping or a job type, got NoneType"),
        (["Noop"], "on_finish: must be a JobRequest, a mapping or a job type, got list"),
    ],
)
def test_dispatch_batch_refuses_an_on_finish_that_is_not_a_job(on_finish: Any, message: str) -> None:
    assert refused(lambda: dispatch_batch([{"type": "Noop"}], on_finish=on_finish)) == message
    assert refused(lambda: dispatch_batch({"type": "Noop"}, on_finish="Noop")).startswith(
        "jobs must be a list"
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            noop(priority=Hostile()),
            "priority must be a whole number from -2147483648 to 2147483647, "
            "got <Hostile whose str() failed>",
        ),
        (
            noop(max_attempts=Hostile()),
            "max_attempts must be a whole number, got <Hostile whose str() failed>",
        ),
        (noop(max_attempts=HostileInt(5000)), "max_attempts must be at most 1000, got 5000"),
        (noop(delay=Hostile()), "delay must be a number of seconds, got <Hostile whose repr() failed>"),
        (
            noop(depends_on=[Hostile()]),
            "depends_on must hold job ids (positive integers), got <Hostile whose str() failed>",
        ),
        (
            noop(unique_mode=Hostile()),
            "unique_mode must be 'keep' or 'replace', got <Hostile whose str() failed>",
        ),
        (
            noop(depends_on_mode=Hostile()),
            "depends_on_mode must be 'completed' or 'finished', got <Hostile whose str() failed>",
        ),
        (
            lambda: wait(Hostile()),
            "job_id must hold job ids (positive integers), got <Hostile whose str() failed>",
        ),  # type: ignore[arg-type]
        (
            noop(run_at=datetime(2030, 1, 1, tzinfo=HostileZone())),
            "run_at's time zone could not be read: RuntimeError: no offset for you",
        ),
        (noop(metadata=HostileDict({"a": 1})), "metadata could not be read: RuntimeError: no len for you"),
        (
            lambda: dispatch("Noop", {"a": HostileDict({"b": [[[1]]] * 100})}),
            "payload could not be read: RuntimeError: no values for you",
        ),
        (
            lambda: dispatch_many([{"type": "Noop", "metadata": HostileDict({"a": 1})}]),
            "job 0: metadata could not be read: RuntimeError: no len for you",
        ),
    ],
)
def test_values_whose_own_methods_raise_are_refused_by_name(call: Callable[[], object], message: str) -> None:
    assert refused(call) == message


def test_colliding_keys_are_refused_not_merged() -> None:
    assert refused(lambda: dispatch("Noop", {1: "a", "1": "b"})) == (  # type: ignore[dict-item]
        "payload must not hold two keys that are the same once written as JSON text: "
        "1 and '1' as keys at payload"
    )
    assert refused(noop(metadata={True: 1, "true": 2})) == (
        "metadata must not hold two keys that are the same once written as JSON text: "
        "True and 'true' as keys at metadata"
    )


def test_a_job_request_takes_durations_as_dispatch_does() -> None:
    request = JobRequest("Noop", delay=timedelta(seconds=5), unique_key="k", unique_for=timedelta(minutes=1))  # type: ignore[arg-type]
    assert (request.delay, request.unique_for) == (5.0, 60.0)
    assert validate(request) is request
    assert refused(lambda: dispatch_many([JobRequest("Noop", delay=timedelta(seconds=-1))])) == (  # type: ignore[arg-type]
        "job 0: delay must not be negative, got -1"
    )


def test_conn_that_is_not_a_connection_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"^conn must be a psycopg connection \(or None\), got int$"):
        dispatch("Noop", conn=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^conn must be a psycopg connection"):
        dispatch_many([{"type": "Noop"}], conn="postgresql://")  # type: ignore[arg-type]
