"""The admin API's job shows the job's whole flow: parents, and descendants with their states,
bounded (issue 14)."""

from __future__ import annotations

from typing import Any

import psycopg
from starlette.testclient import TestClient

from passito_jobs import dispatch
from passito_jobs.queue.store import MAX_FLOW_SHOWN, Store


def test_the_job_endpoint_shows_parents_and_descendants_with_their_states(
    client: TestClient, conn: psycopg.Connection[Any]
) -> None:
    first = dispatch("Noop", conn=conn)
    second = dispatch("Noop", conn=conn)
    job = dispatch("Report", depends_on=[first, second], depends_on_mode="finished", conn=conn)
    child = dispatch("Noop", depends_on=[job], conn=conn)
    grandchild = dispatch("Email", depends_on=[child, job], conn=conn)
    Store(conn).cancel([first])
    body = client.get(f"/api/v1/jobs/{job}").json()
    assert body["depends_on_mode"] == "finished"
    assert body["flow"] == {
        "parents": [
            {"id": first, "type": "Noop", "state": "cancelled"},
            {"id": second, "type": "Noop", "state": "pending"},
        ],
        "more_parents": 0,
        "descendants": [
            {"id": child, "type": "Noop", "state": "blocked", "after": job, "depth": 1},
            {"id": grandchild, "type": "Email", "state": "blocked", "after": job, "depth": 1},
        ],
        "more_descendants": 0,
        "more_descendants_at_least": False,
    }
    assert client.get(f"/api/v1/jobs/{first}").json()["flow"]["descendants"][0] == {
        "id": job,
        "type": "Report",
        "state": "blocked",
        "after": first,
        "depth": 1,
    }


def test_a_wide_flow_lists_the_nearest_descendants_and_counts_the_rest(
    client: TestClient, conn: psycopg.Connection[Any]
) -> None:
    root = dispatch("Noop", delay=3600, conn=conn)
    children = [dispatch("Noop", depends_on=[root], conn=conn) for _ in range(MAX_FLOW_SHOWN + 20)]
    grandchild = dispatch("Noop", depends_on=[children[0]], conn=conn)
    flow = client.get(f"/api/v1/jobs/{root}").json()["flow"]
    assert [d["id"] for d in flow["descendants"]] == children[:MAX_FLOW_SHOWN]
    assert flow["more_descendants"] == 21
    assert grandchild not in [d["id"] for d in flow["descendants"]]
    fan_in = dispatch("Noop", depends_on=[root, *children], conn=conn)
    flow = client.get(f"/api/v1/jobs/{fan_in}").json()["flow"]
    assert [p["id"] for p in flow["parents"]] == [root, *children[: MAX_FLOW_SHOWN - 1]]
    assert flow["more_parents"] == 21
