"""The HTML pages: hostile job content shown safely, long values cut with a download, the flow
graph drawn from dependencies, bad input answered with an error page."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from starlette.testclient import TestClient

from passito_jobs.web.pages import SHOWN_JSON
from tests.web.conftest import insert_job

SCRIPT = "<script>alert('x')</script>"


def test_hostile_job_content_is_escaped(client: TestClient, conn: psycopg.Connection[Any]) -> None:
    job = insert_job(
        conn,
        type=f"Evil{SCRIPT}",
        queue="q<img src=x onerror=alert(1)>",
        state="failed",
        payload=Jsonb({SCRIPT: SCRIPT, "nested": [{"deep": "\u202e\u0007"}]}),
        last_error=f"{SCRIPT}\nTraceback",
        worker_id=SCRIPT,
    )
    for path in (f"/jobs/{job}", "/jobs", "/jobs?state=failed", "/"):
        html = client.get(path).text
        assert SCRIPT not in html, path
        assert "<img src=x" not in html, path
    assert "&lt;script&gt;" in client.get(f"/jobs/{job}").text


def test_a_huge_payload_is_cut_with_a_download_of_the_whole_job(
    client: TestClient, conn: psycopg.Connection[Any]
) -> None:
    payload = {"rows": ["x" * 100 for _ in range(2000)]}
    job = insert_job(conn, state="completed", payload=Jsonb(payload))
    html = client.get(f"/jobs/{job}").text
    assert f'href="/jobs/{job}/json"' in html
    assert len(html) < SHOWN_JSON * 2
    download = client.get(f"/jobs/{job}/json")
    assert download.headers["content-disposition"] == f'attachment; filename="job-{job}.json"'
    assert json.loads(download.text)["payload"] == payload


def test_the_flow_graph_follows_the_dependencies(client: TestClient, conn: psycopg.Connection[Any]) -> None:
    qr = insert_job(conn, type="GenerateQrCode", state="completed")
    pdf = insert_job(conn, type="GenerateOutpassPdf", state="completed", depends_on=[qr])
    email = insert_job(conn, type="SendOutpassEmail", state="failed", depends_on=[pdf])
    conn.execute("INSERT INTO passito_jobs.job_dependencies VALUES (%s, %s), (%s, %s)", (pdf, qr, email, pdf))
    html = client.get(f"/jobs/{qr}").text
    assert html.count('class="node state-') == 3
    for job_id, state in ((qr, "completed"), (pdf, "completed"), (email, "failed")):
        assert f'<a href="/jobs/{job_id}" class="node state-{state}' in html
    assert html.count('class="edge edge-completed"') == 2
    lone = insert_job(conn, state="pending")
    assert 'class="node' not in client.get(f"/jobs/{lone}").text  # no graph for a job alone


def test_bad_page_input_gets_an_error_page(client: TestClient) -> None:
    for path, status in (
        ("/jobs?state=lost", 400),
        ("/jobs/99999999", 404),
        ("/jobs/-1", 400),
        ("/nope", 404),
    ):
        response = client.get(path)
        assert response.status_code == status, path
        assert response.headers["content-type"].startswith("text/html")
        assert '<p class="notice error">' in response.text


def test_the_live_fragment_and_the_stream(client: TestClient, conn: psycopg.Connection[Any]) -> None:
    job = insert_job(conn, state="failed", last_error="boom")
    fragment = client.get(f"/fragments/jobs/{job}").text
    assert "<html" not in fragment
    assert "boom" in fragment
    with client.stream("GET", f"/events?topic=job:{job}") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in stream.iter_lines():
            lines.append(line)
            if line == "" and any(x.startswith("event: update") for x in lines):
                break
    assert "event: update" in lines
    assert any("boom" in line for line in lines if line.startswith("data: "))
    assert client.get("/events?topic=everything").status_code == 400
