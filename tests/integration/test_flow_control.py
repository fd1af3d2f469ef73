"""Flow control in `claim`: pause, concurrency, rate and key concurrency, as the SQL functions
(what every worker and the PHP app call) enforce them, and the load and counts they report."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from passito_jobs import InvalidJobError, JobRequest, dispatch, dispatch_many
from passito_jobs.health.exporter import QueueCollector
from passito_jobs.queue.flow import Rate, parse_rate
from passito_jobs.queue.sqlfiles import query
from passito_jobs.queue.store import Store
from passito_jobs.supervisor.load import LoadReader
from passito_jobs.supervisor.policy import ScalingPolicy, decide
from tests.helpers import run_cli
from tests.integration.test_load import keda_query

Conn = psycopg.Connection[Any]


def claim(
    conn: Conn, batch: int = 100, queues: list[str] | None = None, worker: str = "w:1"
) -> list[tuple[int, str]]:
    rows = conn.execute(
        "SELECT id, queue FROM passito_jobs.claim(%s, %s::text[], %s)", (worker, queues, batch)
    ).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


def complete(conn: Conn, ids: list[int], worker: str = "w:1") -> None:
    conn.execute(
        "SELECT passito_jobs.complete(%s, %s::bigint[], "
        "ARRAY(SELECT attempts FROM passito_jobs.jobs WHERE id = ANY(%s) ORDER BY array_position(%s, id)),"
        " array_fill(NULL::jsonb, ARRAY[cardinality(%s::bigint[])]))",
        (worker, ids, ids, ids, ids),
    )


def flow(store: Store, queue: str) -> dict[str, Any]:
    (row,) = store.flow.queues([queue])
    return {"ready": row.ready, "processing": row.processing, "held_back": row.held_back}


def test_a_paused_queue_is_claimed_from_by_nobody_and_still_takes_jobs(conn: Conn, store: Store) -> None:
    assert store.flow.pause("mail") is True  # the row is created on first use
    mail = dispatch_many([JobRequest("Noop", queue="mail") for _ in range(3)], conn=conn)
    other = dispatch("Noop", queue="pdf", conn=conn)
    assert claim(conn) == [(other, "pdf")]
    assert claim(conn, queues=["mail"]) == []
    assert flow(store, "mail") == {"ready": 3, "processing": 0, "held_back": 3}
    assert store.load(["mail"]).ready == 0  # nothing for a new worker to do
    assert store.flow.resume("mail") is False
    assert sorted(i for i, _ in claim(conn)) == mail


def test_concurrency_caps_the_processing_jobs_of_a_queue(conn: Conn, store: Store) -> None:
    store.flow.set_limits("pdf", concurrency=2)
    ids = dispatch_many([JobRequest("Noop", queue="pdf") for _ in range(5)], conn=conn)
    first = claim(conn)
    assert [i for i, _ in first] == ids[:2]
    assert claim(conn, worker="w:2") == []
    assert flow(store, "pdf") == {"ready": 3, "processing": 2, "held_back": 3}
    assert store.load(["pdf"]).total == 2
    complete(conn, [ids[0]])
    assert [i for i, _ in claim(conn, worker="w:2")] == [ids[2]]
    store.flow.set_limits("pdf", concurrency=None)
    assert [i for i, _ in claim(conn)] == ids[3:]


def test_a_limited_queue_does_not_hold_back_the_others(conn: Conn, store: Store) -> None:
    store.flow.set_limits("pdf", concurrency=1)
    pdfs = dispatch_many([JobRequest("Noop", queue="pdf", priority=5) for _ in range(3)], conn=conn)
    mails = dispatch_many([JobRequest("Noop", queue="mail") for _ in range(3)], conn=conn)
    got = claim(conn, batch=3)
    # Claim order still holds across queues: the pdf job first (priority), then mail.
    assert got == [(pdfs[0], "pdf"), (mails[0], "mail"), (mails[1], "mail")]
    assert claim(conn, batch=10, queues=["pdf", "mail"]) == [(mails[2], "mail")]


def test_key_concurrency_lets_other_keys_past_a_long_backlog(conn: Conn, store: Store) -> None:
    store.flow.set_limits("outpass", key_concurrency=2)
    backlog = dispatch_many(
        [JobRequest("Noop", queue="outpass", concurrency_key="hostel:ganga") for _ in range(200)], conn=conn
    )
    other = dispatch("Noop", queue="outpass", concurrency_key="hostel:yamuna", conn=conn)
    unkeyed = dispatch("Noop", queue="outpass", conn=conn)
    got = sorted(i for i, _ in claim(conn, batch=50))
    assert got == sorted([*backlog[:2], other, unkeyed])
    assert claim(conn, batch=50) == []
    assert flow(store, "outpass") == {"ready": 198, "processing": 4, "held_back": 198}
    assert store.load(["outpass"]).ready == 0
    complete(conn, [backlog[0]])
    assert [i for i, _ in claim(conn, batch=50)] == [backlog[2]]


def test_rate_spaces_starts_and_tells_workers_when_to_come_back(conn: Conn, store: Store) -> None:
    # One start per 5 s: the checks between the two claims have 5 s to run, not 100 ms (with
    # 10/1s a loaded machine passed the pacing gap before next_run_at was asked, and it was None).
    store.flow.set_limits("mail", rate=parse_rate("1/5s"))
    dispatch_many([JobRequest("Noop", queue="mail") for _ in range(5)], conn=conn)
    assert len(claim(conn)) == 1  # a slow rate allows no burst: one start per 5 s
    assert claim(conn) == []
    row = conn.execute(
        "SELECT extract(epoch FROM rate_next_at - clock_timestamp()) FROM passito_jobs.queues"
        " WHERE name = 'mail'"
    ).fetchone()
    assert row is not None
    assert 0 < row[0] <= 5
    due = conn.execute(
        "SELECT extract(epoch FROM rate_next_at) FROM passito_jobs.queues WHERE name = 'mail'"
    ).fetchone()
    (next_run_at,) = conn.execute(query("next_run_at"), {"queues": ["mail"]}).fetchone() or (None,)
    assert due is not None
    assert next_run_at == pytest.approx(float(due[0]))
    deadline = time.monotonic() + 20
    while not claim(conn) and time.monotonic() < deadline:
        time.sleep(0.01)
    starts = conn.execute(
        "SELECT started_at FROM passito_jobs.jobs WHERE started_at IS NOT NULL ORDER BY started_at"
    ).fetchall()
    assert len(starts) == 2
    assert (starts[1][0] - starts[0][0]).total_seconds() >= 5


def test_a_fast_rate_lets_a_late_claim_catch_up_a_little(conn: Conn, store: Store) -> None:
    store.flow.set_limits("mail", rate=Rate(1000, 1.0))  # 1 ms apart, 50 ms of catching up
    dispatch_many([JobRequest("Noop", queue="mail") for _ in range(200)], conn=conn)
    assert len(claim(conn, batch=200)) == 50


def test_limits_given_to_set_stay_and_the_others_are_kept(store: Store) -> None:
    store.flow.set_limits("mail", concurrency=3, rate=Rate(600, 60.0), key_concurrency=2)
    store.flow.set_limits("mail", concurrency=None)
    (row,) = store.flow.queues(["mail"])
    assert (row.concurrency, row.rate_limit, row.rate_period, row.key_concurrency) == (None, 600, 60.0, 2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("set_queue_concurrency('q', 0)", "concurrency must be at least 1, got 0"),
        ("set_queue_concurrency('q', -1)", "concurrency must be at least 1, got -1"),
        ("set_queue_key_concurrency('q', 1000001)", "key concurrency must be at most 1000000, got 1000001"),
        ("set_queue_rate('q', 0, '1 second')", "rate must allow at least 1 job per period, got 0"),
        ("set_queue_rate('q', 10, '0 seconds')", "rate period must be from 1ms to 7d"),
        ("set_queue_rate('q', 10, '-1 second')", "rate period must be from 1ms to 7d"),
        ("set_queue_rate('q', 10, '8 days')", "rate period must be from 1ms to 7d"),
        ("set_queue_rate('q', 10, NULL)", "rate needs both a number of jobs and a period (e.g. 50/1s)"),
        ("set_queue_rate('q', 1000000, '1 millisecond')", "rate must be at most 1000000 jobs per second"),
        ("pause_queue(repeat('x', 129))", "queue must be at most 128 characters, got 129"),
        ("resume_queue(' ')", "queue must be a non-empty string"),
        ("pause_queue(NULL)", "queue must be a non-empty string"),
        (
            "dispatch('Noop', concurrency_key => repeat('k', 129))",
            "concurrency_key must be at most 128 characters, got 129",
        ),
    ],
)
def test_the_sql_functions_refuse_bad_settings(conn: Conn, call: str, message: str) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        conn.execute(f"SELECT passito_jobs.{call}")
    assert caught.value.diag.message_primary == message
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM passito_jobs.queues").fetchone() == (0,)


@pytest.mark.parametrize("key", ["", " ", "a\x00b", "x" * 129, "\ud800", 5])
def test_python_dispatch_refuses_a_bad_concurrency_key(conn: Conn, key: Any) -> None:
    with pytest.raises(InvalidJobError, match=r"^concurrency_key must "):
        dispatch("Noop", concurrency_key=key, conn=conn)
    with pytest.raises(InvalidJobError, match=r"^job 0: concurrency_key must "):
        dispatch_many([{"type": "Noop", "concurrency_key": key}], conn=conn)


def test_the_concurrency_key_is_stored_by_every_dispatch_path(conn: Conn, store: Store) -> None:
    one = dispatch("Noop", concurrency_key="hostel:ganga", conn=conn)
    copied = dispatch_many(
        [JobRequest("Noop", concurrency_key="hostel:yamuna"), JobRequest("Noop")], conn=conn
    )
    (php,) = (
        conn.execute("SELECT passito_jobs.dispatch('Noop', concurrency_key => 'hostel:kaveri')").fetchone()
        or ()
    )
    keys = dict(conn.execute("SELECT id, concurrency_key FROM passito_jobs.jobs").fetchall())
    assert keys == {one: "hostel:ganga", copied[0]: "hostel:yamuna", copied[1]: None, php: "hostel:kaveri"}
    job = store.get_job(one)
    assert job is not None
    assert job.concurrency_key == "hostel:ganga"


def test_health_shows_what_is_held_back_and_a_paused_queue_is_not_stale(
    conn: Conn, store: Store, cli_env: dict[str, str]
) -> None:
    ids = dispatch_many([JobRequest("Noop", queue="mail") for _ in range(3)], conn=conn)
    dispatch_many([JobRequest("Noop", queue="pdf") for _ in range(4)], conn=conn)
    conn.execute(
        "UPDATE passito_jobs.jobs SET run_at = now() - interval '10 minutes' WHERE id = ANY(%s)", (ids,)
    )
    store.flow.pause("mail")
    store.flow.set_limits("pdf", concurrency=1)
    claim(conn, queues=["pdf"])
    conn.commit()
    result = run_cli(["health", "--exit-code-on-failure"], cli_env)
    assert result.returncode == 0, result.stdout
    assert "Stale Jobs:      0 (older than 5m)\nHeld Back:       6 (paused queues: mail)\n" in result.stdout
    report = json.loads(run_cli(["health", "--json"], cli_env).stdout)
    assert {q: (n["paused"], n["held_back"]) for q, n in report["queues"].items()} == {
        "mail": (True, 3),
        "pdf": (False, 3),
    }
    collector = QueueCollector(
        cli_env["PASSITO_DATABASE_URL"],
        stale_after=300,
        stuck_after=60,
        window=3600,
        query_timeout=5,
        connect_timeout=5,
    )
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        text = generate_latest(registry).decode()
    finally:
        collector.close()
    assert 'passito_jobs_queue_paused{queue="mail"} 1.0' in text
    assert 'passito_jobs_queue_paused{queue="pdf"} 0.0' in text
    assert 'passito_jobs_queue_held_back_jobs{queue="mail"} 3.0' in text
    assert 'passito_jobs_queue_held_back_jobs{queue="pdf"} 3.0' in text
    store.flow.resume("mail")
    conn.commit()
    result = run_cli(["health", "--exit-code-on-failure"], cli_env)
    assert result.returncode == 1  # resumed, its jobs are stale again: nobody runs them


def test_the_scalers_see_no_load_in_what_a_pause_or_a_limit_holds_back(
    conn: Conn, store: Store, database_url: str
) -> None:
    dispatch_many([JobRequest("Noop", queue="mail") for _ in range(5)], conn=conn)
    dispatch_many([JobRequest("Noop", queue="pdf") for _ in range(6)], conn=conn)
    dispatch_many([JobRequest("Noop", queue="free") for _ in range(2)], conn=conn)
    store.flow.pause("mail")
    store.flow.set_limits("pdf", concurrency=2)
    claim(conn, queues=["pdf"], batch=1)
    conn.commit()
    reader = LoadReader(database_url)
    try:
        # mail: paused, 0; pdf: 1 processing + 1 more it may start; free: 2.
        assert reader.read(["mail"]) == 0
        assert reader.read(["pdf"]) == 2
        assert reader.read() == 4
        row = conn.execute(keda_query(["mail", "pdf", "free"])).fetchone()
        assert row is not None
        assert int(row[0]) == 4  # the chart's KEDA query calls the same function
        store.flow.resume("mail")
        conn.commit()
        assert reader.read() == 9
    finally:
        reader.close()


def test_the_load_and_the_flow_read_partial_indexes_only(conn: Conn, store: Store) -> None:
    """A table with many finished jobs: the scalers' load and `queues list` never scan it whole."""
    conn.execute(
        "INSERT INTO passito_jobs.jobs (queue, type, state, attempts, finished_at, concurrency_key)"
        " SELECT 'q' || (g % 4), 'Noop', 'completed', 1, now() - g * interval '1 s', 'k' || (g % 7)"
        " FROM generate_series(1, 200000) g"
    )
    dispatch_many(
        [JobRequest("Noop", queue=f"q{i % 4}", concurrency_key=f"k{i % 7}") for i in range(400)], conn=conn
    )
    store.flow.pause("q0")
    store.flow.set_limits("q1", concurrency=5, key_concurrency=2)
    claim(conn, queues=["q1", "q2"], batch=20)
    conn.execute("ANALYZE passito_jobs.jobs")
    for statement in ("SELECT * FROM passito_jobs.load(NULL)", "SELECT * FROM passito_jobs.queue_flow()"):
        (plan,) = conn.execute("EXPLAIN (FORMAT JSON) " + statement).fetchone() or (None,)
        scans: list[tuple[str, str | None]] = []

        def walk(node: dict[str, Any], found: list[tuple[str, str | None]] = scans) -> None:
            if node.get("Relation Name") == "jobs":
                found.append((node["Node Type"], node.get("Index Name")))
            for child in node.get("Plans", []):
                walk(child)

        walk(plan[0]["Plan"])
        assert scans, statement  # the function was inlined: its plan is visible
        assert not [s for s in scans if "Seq Scan" in s[0]], (statement, scans)


def scrape(database_url: str) -> str:
    collector = QueueCollector(
        database_url, stale_after=300, stuck_after=60, window=3600, query_timeout=5, connect_timeout=5
    )
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        return generate_latest(registry).decode()
    finally:
        collector.close()


def test_the_exporter_shows_each_queues_limits_and_none_for_a_limit_not_set(
    conn: Conn, store: Store, database_url: str
) -> None:
    dispatch_many([JobRequest("Noop", queue=q) for q in ("plain", "mail", "pdf")], conn=conn)
    store.flow.set_limits("mail", rate=parse_rate("600/1m"))
    store.flow.set_limits("pdf", concurrency=4, key_concurrency=2)
    store.flow.pause("reports")  # a queue without jobs, paused
    conn.commit()
    lines = {line for line in scrape(database_url).splitlines() if "_limit" in line or "paused{" in line}
    samples = {line for line in lines if not line.startswith("#")}
    assert samples == {
        'passito_jobs_queue_paused{queue="mail"} 0.0',
        'passito_jobs_queue_paused{queue="pdf"} 0.0',
        'passito_jobs_queue_paused{queue="reports"} 1.0',
        'passito_jobs_queue_rate_limit_per_second{queue="mail"} 10.0',
        'passito_jobs_queue_concurrency_limit{queue="pdf"} 4.0',
        'passito_jobs_queue_key_concurrency_limit{queue="pdf"} 2.0',
    }  # "plain" has no settings: no flow control sample at all
    store.flow.set_limits("pdf", concurrency=None, key_concurrency=None)
    store.flow.set_limits("mail", rate=None)
    conn.commit()
    text = scrape(database_url)
    assert "_limit{" not in text
    assert 'passito_jobs_queue_paused{queue="pdf"}' not in text


def test_the_scaling_policy_on_the_real_load_adds_workers_only_for_what_can_run(
    conn: Conn, store: Store, database_url: str
) -> None:
    """The policy is pure (policy.decide takes a number); the number is passito_jobs.load(), as the
    operator and supervise read it. 200 ready jobs, 5 jobs per worker, at most 10 workers."""
    policy = ScalingPolicy(min_replicas=1, max_replicas=10, scale_up_threshold=5, scale_down_threshold=2)
    keys = [f"hostel:{n}" for n in range(5)]
    dispatch_many(
        [JobRequest("Noop", queue="outpass", concurrency_key=keys[n % 5]) for n in range(200)], conn=conn
    )
    reader = LoadReader(database_url)

    def workers() -> int:
        return decide(policy, load=reader.read(["outpass"]), current=1, now=0, last_scale_time=None).desired

    try:
        assert workers() == 10  # no limit: 200 jobs, as many workers as allowed
        store.flow.pause("outpass")
        assert workers() == 1  # paused: no worker added
        store.flow.resume("outpass")
        store.flow.set_limits("outpass", concurrency=10)
        assert workers() == 2  # at most 10 at once: 10 / 5 per worker
        store.flow.set_limits("outpass", concurrency=None, key_concurrency=2)
        assert workers() == 2  # 5 keys, 2 each: 10 at once
        claim(conn, queues=["outpass"])  # the 10 running count too, and nothing more can start
        assert reader.read(["outpass"]) == 10
        assert workers() == 2
    finally:
        reader.close()
