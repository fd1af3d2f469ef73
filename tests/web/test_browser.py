"""The dashboard in a real browser (Debian's chromium driven by Playwright) against a real server,
a real worker and a real PostgreSQL, as a Passito admin would use it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from psycopg.types.json import Jsonb

from passito_jobs import dispatch as passito_dispatch
from passito_jobs.web.auth import hash_password
from tests.helpers import WorkerProcess, job_state, wait_for
from tests.web.conftest import BROWSER, BROWSER_ARGS, Server, have_browser, insert_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not have_browser():
        reason = f"Debian's chromium is not installed at {BROWSER} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=BROWSER, args=BROWSER_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


def dispatch(conn: psycopg.Connection[Any], job_type: str, payload: dict[str, Any], **options: Any) -> int:
    named = "".join(f", {name} => %({name})s" for name in options)
    row = conn.execute(
        f"SELECT passito_jobs.dispatch(%(type)s, %(payload)s{named})",
        {"type": job_type, "payload": Jsonb(payload), **options},
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_admin_retries_a_failed_job_and_watches_it_complete(
    page: Page,
    web_server: Callable[..., Server],
    cli_env: dict[str, str],
    conn: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    flag = tmp_path / "smtp-is-back"
    job = dispatch(conn, "FailUntilFlag", {"flag": str(flag)}, queue="emails", max_attempts=1)
    worker = WorkerProcess(cli_env, tmp_path / "worker-1.log", "--queues", "emails")
    try:
        wait_for(lambda: job_state(conn, job) == "failed", message="the job to fail")
    finally:
        worker.stop()
    server = web_server()

    page.goto(server.url + "/")
    assert page.inner_text(".card.state-failed .n") == "1"
    page.click("nav >> text=Jobs")
    page.select_option("select[name=state]", "failed")
    page.click("button:has-text('Filter')")
    page.wait_for_url("**/jobs?state=failed*")
    page.click(f"a[href='/jobs/{job}']")
    error = page.inner_text("pre.error")
    assert f"flag {flag} is not there yet" in error
    assert "Traceback" in error

    page.click("button:has-text('Retry')")
    page.wait_for_url(f"**/jobs/{job}?notice=retried")
    assert page.inner_text(".job-head .badge") == "pending"
    page.evaluate("window.stillTheSamePage = true")
    flag.write_text("ok")
    worker = WorkerProcess(cli_env, tmp_path / "worker-2.log", "--queues", "emails")
    try:
        page.wait_for_selector(".job-head .badge.state-completed", timeout=60_000)
    finally:
        worker.stop()
    assert page.evaluate("window.stillTheSamePage") is True, "the page was reloaded"
    assert job_state(conn, job) == "completed"
    assert "retry by anonymous (dashboard): changed it" in page.inner_text(".timeline")


def test_bulk_retry_confirms_the_count_first(
    page: Page, web_server: Callable[..., Server], conn: psycopg.Connection[Any]
) -> None:
    ids = [
        insert_job(conn, type="SendOutpassEmail", state="failed", last_error="SMTP down") for _ in range(3)
    ]
    other = insert_job(conn, type="GenerateQrCode", state="failed", last_error="disk full")
    server = web_server()
    page.goto(server.url + "/jobs?state=failed&type=SendOutpassEmail")
    page.click("button:has-text('Retry all')")
    assert "Retry 3 jobs matching" in page.inner_text("#confirm-count")
    assert [job_state(conn, i) for i in ids] == ["failed"] * 3  # nothing happens before the confirmation
    page.click("button:has-text('Yes, retry 3')")
    assert page.inner_text("[role=status]") == "Retried 3 job(s)."
    assert [job_state(conn, i) for i in ids] == ["pending"] * 3
    assert job_state(conn, other) == "failed"
    page.goto(server.url + "/audit")
    assert "type=SendOutpassEmail" in page.inner_text("table")


def test_a_viewer_sees_masked_fields_and_no_actions(
    browser: Browser, web_server: Callable[..., Server], conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    job = insert_job(
        conn,
        type="SendOutpassEmail",
        state="failed",
        payload=Jsonb(
            {"outpass_id": "OP-9", "student_name": "Meera Nair", "student_email": "meera@example.org"}
        ),
        last_error="SMTPRecipientsRefused: meera@example.org",
    )
    users = tmp_path / "users"
    users.write_text(f"ravi:viewer:{hash_password('battery')}\n")
    server = web_server(env={"PASSITO_WEB_AUTH": "basic", "PASSITO_WEB_USERS_FILE": str(users)})
    context = browser.new_context(http_credentials={"username": "ravi", "password": "battery"})
    try:
        page = context.new_page()
        page.goto(f"{server.url}/jobs/{job}")
        shown = page.inner_text("main")
        assert "OP-9" in shown
        assert "Meera Nair" not in shown
        assert "meera@example.org" not in shown
        assert '"student_name": "•••"' in page.inner_text("pre.json")
        assert page.query_selector("button:has-text('Retry')") is None
        page.goto(server.url + "/jobs?state=failed")
        assert page.query_selector("form.bulk") is None
        assert "ravi · viewer" in page.inner_text("header")
    finally:
        context.close()


def test_an_unauthenticated_visit_to_a_public_server_is_refused(
    page: Page, web_server: Callable[..., Server], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("ci:admin:sha256:" + "ab" * 32 + "\n")
    server = web_server(
        "--host", "0.0.0.0", env={"PASSITO_WEB_AUTH": "token", "PASSITO_WEB_TOKENS_FILE": str(tokens)}
    )
    for path in ("/", "/jobs?state=failed", "/api/v1/jobs"):
        response = page.goto(server.url.replace("0.0.0.0", "127.0.0.1") + path)
        assert response is not None
        assert response.status == 401, path
        assert "authentication required" in page.inner_text("body")


EVIL = """<!doctype html><html><body>
<form id="f" method="post" action="{url}/jobs/{job}/retry"><input name="csrf" value="guessed"></form>
<script>
fetch("{url}/api/v1/jobs/{job}/retry", {{method: "POST", mode: "no-cors", credentials: "include",
                                          headers: {{"Content-Type": "text/plain"}}, body: "{{}}"}})
  .finally(function () {{ document.getElementById("f").submit(); }});
</script></body></html>"""


def test_a_cross_site_post_is_rejected(
    page: Page, web_server: Callable[..., Server], conn: psycopg.Connection[Any]
) -> None:
    job = insert_job(conn, state="failed", last_error="boom")
    server = web_server()
    page.goto(f"{server.url}/jobs/{job}")  # the admin has the dashboard open: its cookie is set
    page.route(
        "http://evil.example/**",
        lambda route: route.fulfill(content_type="text/html", body=EVIL.format(url=server.url, job=job)),
    )
    with page.expect_response(f"{server.url}/jobs/{job}/retry") as posted:
        page.goto("http://evil.example/")
    assert posted.value.status == 403
    assert job_state(conn, job) == "failed"
    assert conn.execute("SELECT count(*) FROM passito_jobs.audit_log").fetchone() == (0,)


def test_an_admin_pauses_and_resumes_a_schedule_a_worker_runs(
    page: Page,
    web_server: Callable[..., Server],
    cli_env: dict[str, str],
    conn: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    def last_job() -> int | None:
        row = conn.execute(
            "SELECT last_job_id FROM passito_jobs.schedules WHERE name = 'every-second'"
        ).fetchone()
        return None if row is None else row[0]

    env = {**cli_env, "PASSITO_MAINTENANCE_INTERVAL": "1s", "PASSITO_HEARTBEAT_INTERVAL": "0.5s"}
    worker = WorkerProcess(env, tmp_path / "worker.log", "--import", "tests.periodic_jobs")
    try:
        wait_for(last_job, timeout=90, message="the schedule's first run")
        server = web_server()
        page.goto(server.url + "/")
        page.click("nav >> text=Schedules")
        page.wait_for_url("**/schedules")
        row = page.locator("tr", has_text="every-second")
        assert "every 1s" in row.inner_text()
        assert row.locator(".badge").inner_text() == "active"
        assert row.locator("a[href^='/jobs/']").count() == 1  # the last run's job
        page.screenshot(path=str(tmp_path / "schedules.png"), full_page=True)

        row.locator("button:has-text('Pause')").click()
        page.wait_for_url("**/schedules?notice=schedule-paused")
        assert page.inner_text("[role=status]").startswith("Schedule paused")
        row = page.locator("tr", has_text="every-second")
        assert row.locator(".badge").inner_text() == "paused"
        page.screenshot(path=str(tmp_path / "schedules-paused.png"), full_page=True)
        paused_at = last_job()
        row.locator("button:has-text('Resume')").click()
        page.wait_for_url("**/schedules?notice=schedule-resumed")
        wait_for(lambda: last_job() != paused_at, timeout=30, message="a run after the resume")
    finally:
        assert worker.stop() == 0
    page.click("nav >> text=Audit")
    audit = page.inner_text("table")
    assert "schedule=every-second" in audit
    assert "pause" in audit
    assert "resume" in audit


def test_an_admin_sets_a_queues_limits_from_the_overview_and_removes_one(
    page: Page, web_server: Callable[..., Server], conn: psycopg.Connection[Any]
) -> None:
    for _ in range(3):
        insert_job(conn, state="pending", queue="emails")
    server = web_server()
    page.goto(server.url + "/")
    page.click("summary[aria-label='Limits of emails']")
    form = page.locator("form[action='/queues/emails/limits']")
    form.locator("input[name=concurrency]").fill("2")
    form.locator("input[name=rate]").fill("50/1s")
    form.locator("button:has-text('Save')").click()
    page.wait_for_url("**/?notice=limits")
    assert (
        page.inner_text("[role=status]") == "Queue limits saved: every worker obeys them at its next claim."
    )
    flow = page.inner_text("tr:has(a:text-is('emails')) td.flow")
    assert "concurrency 2" in flow
    assert "rate 50/1s" in flow
    assert "1 held back" in flow  # 3 ready, 2 at once
    row = conn.execute("SELECT concurrency, rate_limit, key_concurrency FROM passito_jobs.queues").fetchone()
    assert row == (2, 50, None)

    page.click("summary[aria-label='Limits of emails']")
    form = page.locator("form[action='/queues/emails/limits']")
    assert form.locator("input[name=concurrency]").input_value() == "2"  # the form shows what is set
    form.locator("input[name=concurrency]").fill("")
    form.locator("input[name=key_concurrency]").fill("0")
    form.locator("button:has-text('Save')").click()
    assert "key concurrency must be at least 1, got 0" in page.inner_text("body")  # refused, nothing changed
    row = conn.execute("SELECT concurrency, rate_limit, key_concurrency FROM passito_jobs.queues").fetchone()
    assert row == (2, 50, None)
    page.go_back()
    page.reload()
    page.click("summary[aria-label='Limits of emails']")
    form = page.locator("form[action='/queues/emails/limits']")
    form.locator("input[name=concurrency]").fill("none")
    form.locator("button:has-text('Save')").click()
    page.wait_for_url("**/?notice=limits")
    row = conn.execute("SELECT concurrency, rate_limit, key_concurrency FROM passito_jobs.queues").fetchone()
    assert row == (None, 50, None)
    page.goto(server.url + "/audit")
    assert page.inner_text("table").count("limit") >= 2


def test_the_workers_page_shows_an_idle_worker_waiting_and_then_the_job_it_was_handed(
    page: Page,
    web_server: Callable[..., Server],
    cli_env: dict[str, str],
    conn: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    """An idle worker holds no job, so no heartbeat shows it: the page shows it waiting with its
    free slots; a job dispatched then goes straight to it (handoff) and the page shows it held."""
    worker = WorkerProcess(cli_env, tmp_path / "worker.log", "--concurrency", "3")
    try:
        wait_for(
            lambda: conn.execute("SELECT slots FROM passito_jobs.waiting_workers").fetchone(),
            message="the worker to wait for jobs",
        )
        server = web_server()
        page.goto(server.url + "/")
        page.click("nav >> text=Workers")
        page.wait_for_url("**/workers")
        row = page.locator("table.data tbody tr")
        assert row.count() == 1
        assert row.locator("[data-label=Waiting]").inner_text() == "3 free slots"
        assert row.locator("[data-label=Queues]").inner_text() == "every queue"
        assert row.locator("[data-label=Jobs]").inner_text() == "0"
        page.screenshot(path=str(tmp_path / "workers-idle.png"), full_page=True)

        job = passito_dispatch("Sleep", {"seconds": 60}, conn=conn)
        assert job_state(conn, job) == "processing"  # handed at its dispatch, no claim
        page.reload()
        row = page.locator("table.data tbody tr")
        assert row.locator("[data-label=Jobs]").inner_text() == "1"
        assert row.locator(f"a[href='/jobs/{job}']").count() == 1
        assert row.locator("[data-label=Waiting]").inner_text() == "2 free slots"
        page.screenshot(path=str(tmp_path / "workers-busy.png"), full_page=True)
    finally:
        worker.stop()
