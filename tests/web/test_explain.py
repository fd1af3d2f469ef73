"""Every query the dashboard runs reads an index, never the whole jobs table (EXPLAIN).

The table is filled like a busy queue (mostly completed jobs, a dead-letter set, a backlog, jobs
in flight, over a week) and analysed; each list filter, the bulk-action candidates, the workers
view, the charts, the flow and the audit log are run through the real `Admin` methods, and every
statement they send is explained with its real parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from passito_jobs.queue import admin as admin_module
from passito_jobs.queue.admin import Admin, JobFilter
from passito_jobs.queue.models import JobState
from passito_jobs.queue.sqlfiles import query
from passito_jobs.queue.store import RARE_TAG_JOBS, Store, named_queries

FILL = """
INSERT INTO passito_jobs.jobs (queue, type, state, attempts, run_at, created_at, started_at, finished_at,
                               worker_id, heartbeat_at, last_error)
SELECT (ARRAY['default', 'emails', 'outpasses', 'qr', 'cleanup'])[1 + g % 5],
       (ARRAY['GenerateQrCode', 'GenerateOutpassPdf', 'SendOutpassEmail', 'Noop'])[1 + g % 4],
       s, 1, at, at, at, CASE WHEN s IN ('completed', 'failed') THEN at END,
       CASE WHEN s = 'processing' THEN 'host-' || g % 7 || ':1' END,
       CASE WHEN s = 'processing' THEN now() END,
       CASE WHEN s = 'failed' THEN 'boom' END
FROM generate_series(1, 80000) g,
     LATERAL (SELECT now() - (80000 - g) * interval '7 s' AS at,
                     (CASE WHEN g % 40 = 0 THEN 'failed' WHEN g > 79000 THEN 'pending'
                           WHEN g % 997 = 0 THEN 'processing' WHEN g % 1499 = 0 THEN 'blocked'
                           ELSE 'completed' END)::passito_jobs.job_state AS s) x
"""


@pytest.fixture
def busy(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(FILL)
    conn.execute("VACUUM ANALYZE passito_jobs.jobs")
    return conn


def scans(plan: dict[str, Any]) -> Iterator[tuple[str, str | None, str | None]]:
    """(node type, relation, index) of every scan in a plan."""
    if "Scan" in plan["Node Type"]:
        yield plan["Node Type"], plan.get("Relation Name"), plan.get("Index Name")
    for child in plan.get("Plans", []):
        yield from scans(child)


class Recorder:
    """Explains every admin.sql statement `Admin` sends, with its parameters."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.plans: list[tuple[str, list[tuple[str, str | None, str | None]]]] = []

    def explain(self, name: str, params: dict[str, Any]) -> None:
        row = self.conn.execute(
            "EXPLAIN (FORMAT JSON) " + named_queries("admin.sql")[name], params
        ).fetchone()
        assert row is not None
        self.plans.append((name, list(scans(row[0][0]["Plan"]))))


@pytest.fixture
def recorder(busy: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder(busy)
    original = Admin._rows

    def rows(self: Admin, cls: type[Any], query: str, params: dict[str, Any]) -> list[Any]:
        recorder.explain(query, params)
        return original(self, cls, query, params)

    monkeypatch.setattr(Admin, "_rows", rows)
    return recorder


NOW = datetime.now(UTC)
LIST_FILTERS = {
    "no filter": JobFilter(),
    "state=failed": JobFilter(state=JobState.FAILED),
    "state=pending": JobFilter(state=JobState.PENDING),
    "state=processing": JobFilter(state=JobState.PROCESSING),
    "state=blocked": JobFilter(state=JobState.BLOCKED),
    "state=cancelled (none)": JobFilter(state=JobState.CANCELLED),
    "state=completed": JobFilter(state=JobState.COMPLETED),
    "queue": JobFilter(queue="emails"),
    "type": JobFilter(type="SendOutpassEmail"),
    "id": JobFilter(id=40_000),
    "unknown queue": JobFilter(queue="nobody-uses-this"),
    "created range (a day, 3 days ago)": JobFilter(
        created_from=NOW - timedelta(days=4), created_to=NOW - timedelta(days=3)
    ),
    "created after": JobFilter(created_from=NOW - timedelta(hours=2)),
    "created before": JobFilter(created_to=NOW - timedelta(days=5)),
    "failed in a queue": JobFilter(state=JobState.FAILED, queue="emails"),
    "failed in a time range": JobFilter(
        state=JobState.FAILED, created_from=NOW - timedelta(days=2), created_to=NOW - timedelta(days=1)
    ),
    "completed of a type": JobFilter(state=JobState.COMPLETED, type="Noop"),
}


def assert_indexed(recorder: Recorder) -> None:
    assert recorder.plans
    for name, found in recorder.plans:
        on_jobs = [s for s in found if s[1] == "jobs"]
        assert not [s for s in on_jobs if s[0] == "Seq Scan"], f"{name} scans the jobs table: {found}"
        assert on_jobs, f"{name} reads no jobs? {found}"


@pytest.mark.parametrize("name", list(LIST_FILTERS))
def test_every_list_filter_uses_an_index(
    busy: psycopg.Connection[Any], recorder: Recorder, name: str
) -> None:
    page = Admin(Store(busy)).list_jobs(LIST_FILTERS[name], before=None, limit=50)
    assert_indexed(recorder)
    if page.next_before is not None:  # the next page too
        recorder.plans.clear()
        Admin(Store(busy)).list_jobs(LIST_FILTERS[name], before=page.next_before, limit=50)
        assert_indexed(recorder)


def test_a_filter_that_matches_nothing_reads_bounded_windows(
    busy: psycopg.Connection[Any], recorder: Recorder
) -> None:
    page = Admin(Store(busy)).list_jobs(JobFilter(queue="nobody-uses-this"), before=None, limit=50)
    assert (page.jobs, page.next_before) == ([], None)
    windows = math.ceil(min(80_000, admin_module.SCAN_BUDGET) / admin_module.ID_WINDOW)
    assert [name for name, _ in recorder.plans] == ["jobs_in_id_window"] * windows


def test_the_other_reads_use_indexes(busy: psycopg.Connection[Any], recorder: Recorder) -> None:
    admin = Admin(Store(busy))
    admin.workers()
    admin.throughput(span=3600, bucket=60)
    admin.throughput(span=86400, bucket=3600)
    job = admin.job(40_000)
    assert job is not None
    admin.relatives(job)
    admin.flow(40_000)
    admin.audit(before=None, limit=50)
    admin.audit_of_job(40_000)
    jobs_reads = [(name, found) for name, found in recorder.plans if any(s[1] == "jobs" for s in found)]
    assert {name for name, _ in jobs_reads} >= {"workers", "throughput", "relatives", "flow"}
    for name, found in jobs_reads:
        assert not [s for s in found if s[0] == "Seq Scan" and s[1] == "jobs"], f"{name}: {found}"


def test_bulk_candidates_use_the_state_index(busy: psycopg.Connection[Any]) -> None:
    params = {
        **JobFilter(queue="emails").params(),
        "states": ["failed", "cancelled"],
        "max": 10_001,
    }
    row = busy.execute(
        "EXPLAIN (FORMAT JSON) " + named_queries("admin.sql")["action_candidates"], params
    ).fetchone()
    assert row is not None
    found = list(scans(row[0][0]["Plan"]))
    assert ("Index Scan", "jobs", "jobs_state_id_idx") in found or any(
        s[2] == "jobs_state_id_idx" for s in found
    ), found
    ids = Admin(Store(busy)).candidates(JobFilter(queue="default"), admin_module.RETRYABLE, most=5)
    assert ids == sorted(ids)
    assert len(ids) == 5


@pytest.mark.parametrize(
    "where",
    [
        JobFilter(tag="outpass:rare"),
        JobFilter(tag="outpass:rare", state=JobState.FAILED),
        JobFilter(tag="hostel:common"),
        JobFilter(tag="hostel:common", state=JobState.FAILED, queue="default"),
    ],
    ids=["rare tag", "rare tag, failed", "common tag", "common tag, failed in a queue"],
)
def test_the_tag_filter_reads_the_tags_index_or_windows(
    busy: psycopg.Connection[Any], recorder: Recorder, where: JobFilter
) -> None:
    """A rare tag's jobs come from jobs_tags_idx (an exact page); a common tag's (more than
    RARE_TAG_JOBS) along the primary key or the state index, window by window, as other filters."""
    busy.execute(
        "UPDATE passito_jobs.jobs SET tags = CASE WHEN id % 1000 = 0 "
        "THEN ARRAY['outpass:rare', 'hostel:common'] ELSE ARRAY['hostel:common'] END WHERE id % 4 = 0"
    )
    busy.execute("VACUUM ANALYZE passito_jobs.jobs")
    admin = Admin(Store(busy))
    page = admin.list_jobs(where, before=None, limit=50)
    assert page.jobs
    assert_indexed(recorder)
    rare = where.tag == "outpass:rare"
    names = {name for name, _ in recorder.plans}
    assert names == ({"jobs_with_tag"} if rare else {"jobs_in_state" if where.state else "jobs_in_id_window"})
    if rare:
        assert "jobs_tags_idx" in {s[2] for _, found in recorder.plans for s in found}, recorder.plans
        # and the count that told it rare (the Store's query) reads the index too
        counted = busy.execute(
            "EXPLAIN (FORMAT JSON) " + query("tag_matches"), {"tag": where.tag, "cap": RARE_TAG_JOBS}
        ).fetchone()
        assert counted is not None
        assert "jobs_tags_idx" in {s[2] for s in scans(counted[0][0]["Plan"])}, counted
    if page.next_before is not None:
        recorder.plans.clear()
        admin.list_jobs(where, before=page.next_before, limit=50)
        assert_indexed(recorder)
