"""The poison suite: no job can stop a worker.

Each poison is one job whose result, error, progress, duration, payload or timing is something
a database or a JSON encoder refuses. Next to 50 normal jobs, on a real worker process (with
sync handlers in threads and in child processes): every normal job completes, the poisoned one
ends with a clear reason, and the worker keeps claiming. A second worker that receives a
poisoned job from the rescue (the first was killed while it held it) keeps working too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from passito_jobs import JobRequest, dispatch, dispatch_many
from passito_jobs.config import ConfigError, Settings
from passito_jobs.queue.backoff import MAX_RETRY_DELAY
from tests.conftest import TEST_SECRET_KEY, drop_database, fresh_database
from tests.helpers import WorkerProcess, job_state, processes, wait_for

pytestmark = pytest.mark.slow

Conn = psycopg.Connection[Any]
NORMAL_JOBS = 50
FAST = {
    "PASSITO_HEARTBEAT_INTERVAL": "0.3",
    "PASSITO_STUCK_TIMEOUT": "2",
    "PASSITO_MAINTENANCE_INTERVAL": "0.5",
    "PASSITO_RETRY_BACKOFF_BASE": "0.05",
    "PASSITO_RETRY_BACKOFF_CAP": "0.2",
    "PASSITO_SHUTDOWN_TIMEOUT": "2",
}
# The rules (queue/limits.py) the messages state, before what was found and where.
FINITE = "must not hold NaN or Infinity (JSON has no such numbers): "
JSON_VALUES = "must hold only JSON values (dicts, lists, strings, numbers, booleans and None): "
NUL = "must not hold the NUL character (\\u0000), which PostgreSQL cannot store: "
UNICODE = "must be valid Unicode text (it holds an unpaired surrogate): "


def worker_env(database_url: str, folder: Path, isolation: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    env.update(
        {
            "PASSITO_DATABASE_URL": database_url,
            "PASSITO_DATA_DIR": str(folder / "passito"),
            "PASSITO_STORAGE_DIR": str(folder / "storage"),
            "PASSITO_METRICS_PORT": "0",
            "PASSITO_SECRET_KEY": TEST_SECRET_KEY,
            "PASSITO_SYNC_ISOLATION": isolation,
            "PYTHONPATH": str(Path(__file__).parents[2]),
            **FAST,
            **extra,
        }
    )
    return env


@dataclass(frozen=True)
class Poison:
    name: str
    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    state: str = "failed"
    error: str | None = None  # the start of last_error
    check: Callable[[dict[str, Any]], None] | None = None  # more checks on the job row
    holdable: bool = True  # its job type can hold attempt 1 until the worker is killed


def result_poison(kind: str, detail: str) -> Poison:
    return Poison(
        f"result-{kind}",
        "PoisonResult",
        {"kind": kind},
        error=f"PermanentError: result {detail}",
        check=lambda job: _assert(job["result"] is None and "\n" not in job["last_error"], job),
    )


def error_poison(kind: str, start: str) -> Poison:
    return Poison(f"error-{kind}", "PoisonError", {"kind": kind}, error=start)


def _assert(ok: bool, job: dict[str, Any]) -> None:
    assert ok, job


def _bounded_huge_error(job: dict[str, Any]) -> None:
    assert len(job["last_error"]) <= 4000
    assert job["last_error"].endswith("...")


def _survived(job: dict[str, Any]) -> None:
    assert job["result"] == "survived"
    assert job["progress"] == {"refused": f"progress {FINITE}NaN at progress[0]"}


POISONS = [
    result_poison("nan", f"{FINITE}NaN at result['r']"),
    result_poison("infinity", f"{FINITE}Infinity at result[1]"),
    result_poison("set", f"{JSON_VALUES}a value of type set at result['s']"),
    result_poison("object", f"{JSON_VALUES}a value of type Opaque at result"),
    result_poison("bytes", f"{JSON_VALUES}a value of type bytes at result['b']"),
    result_poison("nul", f"{NUL}\\x00 in the string at result['text']"),
    result_poison("nul_key", f"{NUL}\\x00 in a key at result"),
    result_poison("surrogate", f"{UNICODE}\\ud800 in the string at result['text']"),
    result_poison("oversized", "must be at most 1048576 bytes of JSON text, got 2097154"),
    result_poison("deep", "is nested too deeply to be written as JSON"),
    error_poison("nul", "ValueError: bad\\x00byte\nTraceback"),
    error_poison("surrogate", "ValueError: bad\\udc80byte\nTraceback"),
    error_poison("unprintable", "Unprintable: <Unprintable whose str() failed>\nTraceback"),
    error_poison("system_exit", "SystemExit: 3\nTraceback"),
    Poison(
        "error-huge", "PoisonError", {"kind": "huge"}, error="RuntimeError: xxxx", check=_bounded_huge_error
    ),
    Poison(
        "progress-datetime",
        "PoisonProgress",
        {"kind": "datetime"},
        error=(
            f"UnstorableValueError: progress {JSON_VALUES}"
            "a value of type datetime at progress['at']\nTraceback"
        ),
    ),
    Poison(
        "progress-nul",
        "PoisonProgress",
        {"kind": "nul"},
        error=(f"UnstorableValueError: progress {NUL}\\x00 in the string at progress"),
    ),
    Poison(
        "progress-surrogate",
        "PoisonProgress",
        {"kind": "surrogate"},
        error=(f"UnstorableValueError: progress {UNICODE}\\udfff in a key at progress"),
    ),
    Poison(
        "progress-caught",  # the handler catches the error and runs on through heartbeats
        "PoisonProgress",
        {"kind": "nan", "catch": True, "seconds": 1.2},
        state="completed",
        check=_survived,
    ),
    Poison(
        "sync-never-returns",
        "NeverReturns",
        error="AttemptTimeoutError: attempt exceeded the 0.5s timeout of job type NeverReturns",
        holdable=False,
    ),
    Poison(
        "async-ignores-cancellation",
        "IgnoresCancellation",
        error="AttemptTimeoutError: attempt exceeded the 0.5s timeout of job type IgnoresCancellation",
        holdable=False,
    ),
]


def job_row(conn: Conn, job_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        found = cur.execute("SELECT * FROM passito_jobs.jobs WHERE id = %s", (job_id,)).fetchone()
    assert found is not None
    return dict(found)


def assert_poisoned(conn: Conn, job_id: int, poison: Poison) -> None:
    job = job_row(conn, job_id)
    assert job["state"] == poison.state, job
    if poison.error is not None:
        assert job["last_error"].startswith(poison.error), job["last_error"][:500]
    if poison.check is not None:
        poison.check(job)


def finished(conn: Conn, ids: list[int]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM passito_jobs.jobs WHERE id = ANY(%s) AND state IN ('completed', 'failed')",
        (ids,),
    ).fetchone()
    return row is not None and row[0] == len(ids)


def completed(conn: Conn, ids: list[int]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM passito_jobs.jobs WHERE id = ANY(%s) AND state = 'completed'", (ids,)
    ).fetchone()
    return row is not None and row[0] == len(ids)


def normal_jobs(conn: Conn, tag: str) -> list[int]:
    return dispatch_many(
        [JobRequest("SyncEcho", {"tag": tag, "n": n}) for n in range(NORMAL_JOBS)], conn=conn
    )


def keeps_claiming(conn: Conn, worker: WorkerProcess) -> None:
    assert worker.proc.poll() is None, worker.log()[-3000:]
    after = dispatch("SyncEcho", {"after": True}, conn=conn)
    wait_for(lambda: job_state(conn, after) == "completed", message="a job after the poison")


def force(conn: Conn, statement: str, params: tuple[Any, ...] = ()) -> None:
    """Run an UPDATE that may break a limit newer migrations enforce, as a row written before
    them would: a check constraint that refuses it is dropped (in this test's database)."""
    for _ in range(5):
        try:
            conn.execute(statement, params)
            return
        except psycopg.errors.CheckViolation as exc:
            constraint = exc.diag.constraint_name
            if not constraint:
                raise
            conn.execute(f'ALTER TABLE passito_jobs.jobs DROP CONSTRAINT "{constraint}"')
    raise AssertionError(f"could not run {statement}")


# ---------------------------------------------------------------- one worker per isolation mode


@pytest.fixture(scope="module")
def shared_database(pg_admin_url: str, template_url: str) -> Iterator[str]:
    url = fresh_database(pg_admin_url)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture(scope="module")
def shared_conn(shared_database: str) -> Iterator[Conn]:
    with psycopg.connect(shared_database, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module", params=["thread", "process"])
def poisoned_worker(
    request: pytest.FixtureRequest, shared_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One worker with a single slot: a poison that held it, or its thread, would stop it."""
    folder = tmp_path_factory.mktemp(f"poison-{request.param}")
    env = worker_env(shared_database, folder, request.param)
    worker = WorkerProcess(env, folder / "worker.log", "--concurrency", "1")
    wait_for(lambda: "Worker started" in worker.log(), message="the worker to start")
    yield worker
    assert worker.stop() == 0, worker.log()[-3000:]


@pytest.mark.parametrize("poison", POISONS, ids=[p.name for p in POISONS])
def test_a_poisoned_job_fails_alone(
    poison: Poison, poisoned_worker: WorkerProcess, shared_conn: Conn
) -> None:
    conn = shared_conn
    poisoned = dispatch(poison.type, poison.payload, max_attempts=1, priority=10, conn=conn)
    normal = normal_jobs(conn, poison.name)
    wait_for(
        lambda: finished(conn, [poisoned]) and completed(conn, normal),
        timeout=60,
        message=f"the poisoned job and {NORMAL_JOBS} normal jobs",
    )
    assert_poisoned(conn, poisoned, poison)
    keeps_claiming(conn, poisoned_worker)


def test_an_unreadable_payload_fails_its_job(poisoned_worker: WorkerProcess, shared_conn: Conn) -> None:
    """A payload nested deeper than Python's JSON parser goes (written by SQL or an older
    release): the claim still succeeds, and the job fails saying why."""
    conn = shared_conn
    job_id = dispatch("SyncEcho", delay=3600, max_attempts=1, priority=10, conn=conn)
    deep = '{"deep": ' + "[" * 5000 + "]" * 5000 + "}"
    force(
        conn, "UPDATE passito_jobs.jobs SET payload = %s::jsonb, run_at = now() WHERE id = %s", (deep, job_id)
    )
    normal = normal_jobs(conn, "payload")
    wait_for(lambda: finished(conn, [job_id]) and completed(conn, normal), message="the jobs to finish")
    # (read without the payload: the test's own driver cannot decode it either)
    job = conn.execute("SELECT state::text, last_error FROM passito_jobs.jobs WHERE id = %s", (job_id,))
    assert job.fetchone() == (
        "failed",
        "PermanentError: payload is not readable: it is nested too deeply for Python's JSON parser",
    )
    keeps_claiming(conn, poisoned_worker)


def test_a_far_future_or_infinite_run_at_does_not_stop_the_idle_poll(
    poisoned_worker: WorkerProcess, shared_conn: Conn
) -> None:
    conn = shared_conn
    far = dispatch("SyncEcho", run_at=datetime(9999, 12, 31, tzinfo=UTC), conn=conn)
    normal = normal_jobs(conn, "far")
    wait_for(lambda: completed(conn, normal), message="normal jobs next to a job due in year 9999")
    # The queue is idle now: each poll reads when the next delayed job is due.
    force(conn, "UPDATE passito_jobs.jobs SET run_at = 'infinity' WHERE id = %s", (far,))
    normal = normal_jobs(conn, "infinity")
    wait_for(lambda: completed(conn, normal), message="normal jobs next to a job due at infinity")
    keeps_claiming(conn, poisoned_worker)
    assert job_state(conn, far) == "pending"
    force(conn, "UPDATE passito_jobs.jobs SET run_at = '9999-12-31' WHERE id = %s", (far,))


# ---------------------------------------------------------------- settings that poison every retry


def largest_accepted_backoff() -> str:
    """The longest retry backoff the settings accept (the limits may bound it)."""
    for seconds in ("100000000000000", "10000000000000", "1000000000000", "100000000000", "3153600000"):
        try:
            Settings.from_env({"PASSITO_RETRY_BACKOFF_BASE": seconds, "PASSITO_RETRY_BACKOFF_CAP": seconds})
        except ConfigError:
            continue
        return seconds
    raise AssertionError("no huge backoff is accepted")


def test_a_huge_retry_delay_is_clamped(conn: Conn, database_url: str, tmp_path: Path) -> None:
    huge = largest_accepted_backoff()
    env = worker_env(
        database_url, tmp_path, "thread", PASSITO_RETRY_BACKOFF_BASE=huge, PASSITO_RETRY_BACKOFF_CAP=huge
    )
    retried = dispatch("FailUntilAttempt", {"succeed_on": 2}, priority=10, conn=conn)
    worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "1")
    try:
        normal = normal_jobs(conn, "retry")
        wait_for(lambda: completed(conn, normal), message="normal jobs next to a job retried far ahead")
        keeps_claiming(conn, worker)
    finally:
        assert worker.stop() == 0
    job = job_row(conn, retried)
    assert (job["state"], job["attempts"]) == ("pending", 1)
    assert job["last_error"].startswith("RuntimeError: boom on attempt 1\n")
    now = datetime.now(UTC)
    assert now + timedelta(seconds=min(float(huge) / 2, MAX_RETRY_DELAY) - 86400) < job["run_at"]
    assert job["run_at"] < now + timedelta(seconds=MAX_RETRY_DELAY + 86400)


# ---------------------------------------------------------------- the poison goes to the next worker


def writers_of(log: Path) -> list[int]:
    """The processes whose standard output is `log`."""
    return processes(lambda proc: Path(os.readlink(proc / "fd" / "1")) == log)


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_rescued_poison_does_not_stop_the_next_worker(
    isolation: str, conn: Conn, database_url: str, tmp_path: Path
) -> None:
    poisons = [p for p in POISONS if p.holdable]
    ids = {dispatch(p.type, {**p.payload, "hold": True}, max_attempts=2, conn=conn): p for p in poisons}
    env = worker_env(database_url, tmp_path, isolation)
    first = WorkerProcess(env, tmp_path / "first.log", "--concurrency", str(len(ids) + 2))
    wait_for(
        lambda: (
            conn.execute(
                "SELECT count(*) FROM passito_jobs.jobs WHERE id = ANY(%s) AND state = 'processing'",
                (list(ids),),
            ).fetchone()
            == (len(ids),)
        ),
        timeout=60,
        message="the first worker to hold every poisoned job",
    )
    first.kill()
    # A handler that never returns, in a child process, must not outlive its SIGKILLed worker.
    wait_for(
        lambda: not writers_of(tmp_path / "first.log"),
        timeout=30,
        message="every process of the SIGKILLed worker (its children's output goes to its log) to end",
    )
    second = WorkerProcess(env, tmp_path / "second.log", "--concurrency", "4")
    try:
        normal = normal_jobs(conn, "rescue")
        wait_for(
            lambda: finished(conn, list(ids)) and completed(conn, normal),
            timeout=90,
            message="the rescued poisons and the normal jobs",
        )
        for job_id, poison in ids.items():
            assert_poisoned(conn, job_id, poison)
            assert job_row(conn, job_id)["attempts"] == 2  # the rescued attempt was counted
        keeps_claiming(conn, second)
    finally:
        assert second.stop() == 0, second.log()[-3000:]


def test_a_worker_with_too_many_hung_handlers_drains_and_exits_1(
    conn: Conn, database_url: str, tmp_path: Path
) -> None:
    """Threads of handlers that never return cannot be stopped: past the bound the worker stops
    claiming, finishes what it runs and exits 1, so that Kubernetes replaces the pod."""
    env = worker_env(database_url, tmp_path, "thread", PASSITO_MAX_ABANDONED_ATTEMPTS="2")
    hung = [dispatch("NeverReturns", max_attempts=1, priority=10, conn=conn) for _ in range(2)]
    in_flight = dispatch("Sleep", {"seconds": 1.5}, priority=5, conn=conn)
    worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "3")
    assert worker.wait(60) == 1
    assert [job_state(conn, i) for i in hung] == ["failed", "failed"]
    assert job_state(conn, in_flight) == "completed"
    log = worker.log()
    assert "Stopping: 2 abandoned attempts still run (PASSITO_MAX_ABANDONED_ATTEMPTS=2): the worker " in log
    assert "Traceback" not in log
