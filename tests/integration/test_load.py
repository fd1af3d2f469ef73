"""The load the autoscalers scale on: `passito_jobs.load()`, read by the operator's load reader,
and the query the chart gives KEDA, which must count the very same jobs."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from passito_jobs import JobRequest, dispatch, dispatch_many
from passito_jobs.supervisor.load import LoadReader
from tests.chart.render import SCENARIOS, by_kind, render

Conn = psycopg.Connection[Any]


def keda_query(queues: list[str]) -> str:
    """The query the chart renders into its KEDA ScaledObject for `autoscaling.queues`."""
    values = {**SCENARIOS["keda"], "autoscaling": {**SCENARIOS["keda"]["autoscaling"], "queues": queues}}
    (scaled,) = by_kind(render(values), "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    query: str = trigger["metadata"]["query"]
    return query


@pytest.fixture
def busy(conn: Conn) -> dict[str, int]:
    """Jobs in every state across three queues (one named with a quote), and the load of each."""
    dispatch_many([JobRequest("Noop", queue="emails") for _ in range(4)], conn=conn)
    dispatch_many([JobRequest("Noop", queue="pdfs") for _ in range(3)], conn=conn)
    dispatch_many([JobRequest("Noop", queue="o'brien") for _ in range(2)], conn=conn)
    dispatch("Noop", queue="emails", delay=3600, conn=conn)  # pending, not ready: not load
    parent = dispatch("Noop", queue="emails", conn=conn)
    dispatch("Noop", queue="emails", depends_on=[parent], conn=conn)  # blocked: not load
    conn.execute(
        "UPDATE passito_jobs.jobs SET state = 'processing', attempts = 1, worker_id = 'w:1',"
        " heartbeat_at = now() WHERE queue = 'pdfs' AND id IN (SELECT min(id) FROM passito_jobs.jobs"
        " WHERE queue = 'pdfs')"
    )
    done = dispatch("Noop", queue="emails", conn=conn)
    conn.execute(
        "UPDATE passito_jobs.jobs SET state = 'completed', finished_at = now() WHERE id = %s", (done,)
    )
    # emails: 4 + the parent ready; pdfs: 2 ready + 1 processing; o'brien: 2 ready.
    return {"emails": 5, "pdfs": 3, "o'brien": 2}


@pytest.mark.parametrize(
    "queues",
    [[], ["emails"], ["pdfs", "o'brien"], ["emails", "pdfs", "o'brien", "nobody"], ["nobody"]],
    ids=["all", "one", "quoted-name", "all-named", "empty-queue"],
)
def test_keda_counts_what_the_load_reader_counts(
    conn: Conn, database_url: str, busy: dict[str, int], queues: list[str]
) -> None:
    expected = sum(busy.get(q, 0) for q in queues) if queues else sum(busy.values())
    row = conn.execute(keda_query(queues)).fetchone()
    assert row is not None
    reader = LoadReader(database_url)
    try:
        assert row[0] == reader.read(queues) == expected
    finally:
        reader.close()


def test_the_function_takes_null_or_an_empty_array_for_every_queue(conn: Conn, busy: dict[str, int]) -> None:
    total = sum(busy.values())
    for argument in ("NULL::text[]", "'{}'::text[]", "DEFAULT"):
        call = "passito_jobs.load()" if argument == "DEFAULT" else f"passito_jobs.load({argument})"
        row = conn.execute(f"SELECT ready, processing FROM {call}").fetchone()
        assert row == (total - 1, 1), argument
    assert conn.execute("SELECT * FROM passito_jobs.load(ARRAY['pdfs'])").fetchone() == (2, 1)
