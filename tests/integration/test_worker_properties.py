"""Property: whatever a handler does with its result, its exceptions and its progress, its job
reaches a final state with the outcome it earned, and the worker stays healthy.

Handlers are generated (hypothesis) and run by a real Worker, in-process, on a real
PostgreSQL; each job's behaviour is looked up by a key in its payload.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passito_jobs import JobContext, JobRequest, PermanentError, dispatch_many
from passito_jobs.registry import Registry
from tests.helpers import wait_for
from tests.inprocess import InProcessWorker

Conn = psycopg.Connection[Any]


class Opaque:
    """An object JSON cannot encode."""


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot print this exception")


@dataclass
class Behaviour:
    value: Any
    raises: BaseException | None = None
    progress: list[Any] = field(default_factory=list)
    catch_progress: bool = False
    is_async: bool = False


BEHAVIOURS: dict[int, Behaviour] = {}
_keys = itertools.count()


def _act(ctx: JobContext) -> Any:
    behaviour = BEHAVIOURS[ctx.payload["key"]]
    for value in behaviour.progress:
        try:
            ctx.set_progress(value)
        except ValueError:
            if not behaviour.catch_progress:
                raise
    if behaviour.raises is not None:
        raise behaviour.raises
    return behaviour.value


def behave(ctx: JobContext) -> Any:
    return _act(ctx)


async def behave_async(ctx: JobContext) -> Any:
    await asyncio.sleep(0)
    return _act(ctx)


# ---------------------------------------------------------------- what a handler may produce

every_char = st.characters(codec=None, exclude_categories=())  # NUL and lone surrogates too
texts = st.text(alphabet=every_char, max_size=12)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | texts
strange = (
    st.binary(max_size=6)
    | st.datetimes()
    | st.builds(object)
    | st.builds(Opaque)
    | st.sets(st.integers(), max_size=3)
    | st.complex_numbers()
)
keys = texts | st.integers() | st.floats() | st.none() | st.booleans()
values = st.recursive(
    scalars | strange,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=10,
)
exception_types = st.sampled_from(
    [ValueError, RuntimeError, KeyError, TypeError, PermanentError, SystemExit, KeyboardInterrupt]
)
exceptions = st.builds(lambda cls, text: cls(text), exception_types, texts) | st.builds(Unprintable)
behaviours = st.builds(
    Behaviour,
    value=values,
    raises=st.none() | st.none() | exceptions,
    progress=st.lists(values, max_size=3),
    catch_progress=st.booleans(),
    is_async=st.booleans(),
)


# ---------------------------------------------------------------- what the database should hold


def _clean_text(text: str) -> bool:
    return "\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text)


def storable(value: Any) -> bool:
    """An oracle written apart from the worker's: JSON's types, finite numbers, no NUL and no
    unpaired surrogate in any string or key."""
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, list | tuple):
        return all(storable(item) for item in value)
    if isinstance(value, dict):
        return all(_storable_key(key) and storable(item) for key, item in value.items())
    return False


def _storable_key(key: Any) -> bool:
    if isinstance(key, str):
        return _clean_text(key)
    if isinstance(key, float):
        return math.isfinite(key)
    return key is None or isinstance(key, bool | int)


# What a refusal of a value says: one of the rules of queue/limits.py, then what and where.
_RULE = (
    r"(must not hold|must hold only JSON values|must be valid Unicode text|must be at most \d+ bytes"
    r"|cannot be written as JSON|is nested too deeply|must not contain itself)"
)
PROGRESS_REFUSED = re.compile(rf"UnstorableValueError: progress {_RULE}")
RESULT_REFUSED = re.compile(rf"PermanentError: result {_RULE}")


def expected(behaviour: Behaviour) -> tuple[str, str | re.Pattern[str] | None, Any]:
    """(state, start of last_error, result) the job must end with."""
    if not behaviour.catch_progress and not all(storable(p) for p in behaviour.progress):
        return "failed", PROGRESS_REFUSED, None
    if behaviour.raises is not None:
        return "failed", type(behaviour.raises).__name__, None
    if behaviour.value is None:
        return "completed", None, None
    if not storable(behaviour.value):
        return "failed", RESULT_REFUSED, None
    return "completed", None, json.loads(json.dumps(behaviour.value))


def test_any_handler_behaviour_ends_in_a_final_state_and_the_worker_stays_healthy(
    conn: Conn, database_url: str
) -> None:
    registry = Registry()
    registry.register("Behave", behave)
    registry.register("BehaveAsync", behave_async)
    with InProcessWorker(database_url, registry=registry, concurrency=8, heartbeat_interval=0.1) as running:

        @settings(
            max_examples=200,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.lists(behaviours, min_size=1, max_size=5))
        def check(batch: list[Behaviour]) -> None:
            requests = []
            for behaviour in batch:
                key = next(_keys)
                BEHAVIOURS[key] = behaviour
                job_type = "BehaveAsync" if behaviour.is_async else "Behave"
                requests.append(JobRequest(job_type, {"key": key}, max_attempts=1))
            ids = dispatch_many(requests, conn=conn)
            rows = wait_for(lambda: final_rows(conn, ids), timeout=30, message="every job to finish")
            for behaviour, (state, error, result) in zip(batch, rows, strict=True):
                want_state, want_error, want_result = expected(behaviour)
                assert state == want_state, (behaviour, error)
                if want_error is not None:
                    if isinstance(want_error, re.Pattern):
                        assert want_error.match(error), (behaviour, error)
                    else:
                        assert error.startswith(want_error), (behaviour, error)
                    assert len(error) <= 4000
                else:
                    assert same_json(result, want_result), (behaviour, result)
            assert running.running
            assert running.worker.health_problem() is None

        check()


def same_json(got: Any, want: Any) -> bool:
    """Equal as JSON: jsonb keeps numbers as decimals, so 1e16 may come back as an int."""
    if isinstance(want, float):
        return isinstance(got, int | float) and not isinstance(got, bool) and float(got) == want
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(same_json, got, want))
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(same_json(got[k], want[k]) for k in want)
        )
    return type(got) is type(want) and got == want


def final_rows(conn: Conn, ids: list[int]) -> list[tuple[str, str | None, Any]] | None:
    rows = conn.execute(
        "SELECT state::text, last_error, result FROM passito_jobs.jobs WHERE id = ANY(%s) ORDER BY id",
        (ids,),
    ).fetchall()
    if any(state not in ("completed", "failed") for state, _, _ in rows):
        return None
    return [(str(state), error, result) for state, error, result in rows]
