"""`make screenshots`: pictures of the dashboard's main pages for docs/dashboard.md.

Starts an embedded PostgreSQL in a temporary folder, fills it with a day of outpass jobs (a
history for the charts, flows in every state, a worker holding jobs, a dead-letter set), runs
`passito-jobs web` on it and photographs each page with Debian's chromium (Playwright), on a
desktop and on a phone-sized screen, into docs/images/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from playwright.sync_api import Page, sync_playwright
from psycopg.types.json import Jsonb

from passito_jobs.demo import sample_outpasses
from passito_jobs.jobs.flow import dispatch_outpass_flows
from passito_jobs.localdb import LocalDatabase
from passito_jobs.queue.store import Store

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
BROWSER = "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
SMTP_ERROR = """\
SMTPRecipientsRefused: {'kabir.das.9@example.org': (550, b'5.1.1 Recipient address rejected: User unknown')}
Traceback (most recent call last):
  File "/opt/passito-jobs/lib/python3.11/site-packages/passito_jobs/worker/runtime.py", line 402, in _run
    result = await handler(ctx)
  File "/opt/passito-jobs/lib/python3.11/site-packages/passito_jobs/jobs/outpass_email.py", line 56, in send
    return send_outpass_email(Outpass.from_payload(ctx.payload), Settings.from_env(), job_id=ctx.id)
  File "/opt/passito-jobs/lib/python3.11/site-packages/passito_jobs/jobs/mail.py", line 160, in _send_smtp
    smtp.send_message(message)
smtplib.SMTPRecipientsRefused: {'kabir.das.9@example.org': (550, b'5.1.1 Recipient address rejected')}"""


def _set(conn: psycopg.Connection[Any], ids: list[int], assignments: str, *values: Any) -> None:
    """UPDATE the jobs `ids` with `assignments` (a fixed SQL fragment with %s for `values`)."""
    conn.execute(f"UPDATE passito_jobs.jobs SET {assignments} WHERE id = ANY(%s)", (*values, ids))


HISTORY = """
INSERT INTO passito_jobs.jobs (queue, type, state, attempts, payload, created_at, started_at,
                               finished_at, result, last_error)
SELECT q, t, s, 1, '{"outpass_id": "hist"}', at - interval '2 s', at - interval '1 s', at,
       CASE WHEN s = 'completed' THEN '{"ok": true}'::jsonb END,
       CASE WHEN s = 'failed' THEN 'TimeoutError: SMTP server did not answer within 30s' END
FROM generate_series(1, 6000) g,
     LATERAL (SELECT now() - (random() ^ 1.6) * interval '24 hours' AS at,
                     (ARRAY['outpasses', 'outpasses', 'emails'])[1 + g % 3] AS q,
                     (ARRAY['GenerateQrCode', 'GenerateOutpassPdf', 'SendOutpassEmail'])[1 + g % 3] AS t,
                     (CASE WHEN random() < 0.015 THEN 'failed' ELSE 'completed' END)::passito_jobs.job_state
                         AS s) x
"""
DONE = "state = 'completed', attempts = 1, waiting_on = 0, finished_at = now() - %s::interval"


def seed(url: str) -> dict[str, int]:
    """A day of history and a dozen flows in telling states; returns ids worth a picture."""
    rng = random.Random(7)  # noqa: S311 - sample data, not secrets
    with psycopg.connect(url, autocommit=True) as conn:
        Store(conn).migrate()
        conn.execute(HISTORY)  # about 6,000 jobs over the last day, busier lately, a few failures
        flows = dispatch_outpass_flows(sample_outpasses(14, rng), conn=conn)
        _set(
            conn,
            [i for f in flows for i in f.job_ids],
            "created_at = now() - %s::interval, run_at = created_at",
            "10 min",
        )
        for flow in flows[:8]:
            _set(conn, flow.job_ids, DONE + ", started_at = finished_at - interval '2 s'", "30 s")
        broken, running = flows[8], flows[9]
        _set(conn, [broken.qr_code, broken.pdf], DONE + ", started_at = finished_at", "9 min")
        _set(
            conn,
            [broken.student_email],
            "state = 'failed', attempts = 3, waiting_on = 0, started_at = now() - interval '8 min', "
            "claimed_at = now() - interval '2 min', finished_at = now() - interval '2 min', "
            "worker_id = 'passito-jobs-worker-7c9f4:41', last_error = %s",
            SMTP_ERROR,
        )
        _set(conn, [running.qr_code], DONE + ", started_at = finished_at", "20 s")
        for index, job_id in enumerate([running.pdf, flows[10].qr_code, flows[11].qr_code]):
            worker = f"passito-jobs-worker-{'7c9f4' if index < 2 else 'b21e8'}:{41 + index}"
            _set(
                conn,
                [job_id],
                "state = 'processing', attempts = 1, waiting_on = 0, worker_id = %s, "
                "claimed_at = now() - interval '3 s', started_at = claimed_at, "
                "heartbeat_at = now() - interval '1 s', progress = %s",
                worker,
                Jsonb({"step": "rendering"}),
            )
        for flow in flows[12:]:
            _set(conn, [flow.qr_code, flow.pdf], DONE, "6 min")
            _set(
                conn,
                [flow.student_email],
                "state = 'failed', attempts = 3, finished_at = now() - interval '5 min', "
                "last_error = 'SMTPServerDisconnected: Connection unexpectedly closed'",
            )
        conn.execute("VACUUM ANALYZE passito_jobs.jobs")
    return {"failed_email": broken.student_email, "running_pdf": running.pdf, "cancel": flows[10].pdf}


def start_web(url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    env["PASSITO_DATABASE_URL"] = url
    proc = subprocess.Popen(
        [sys.executable, "-m", "passito_jobs", "web", "--port", "0"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"dashboard on (http://\S+?)/ ", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"the dashboard did not start:\n{log.read_text()}")


def shoot(page: Page, base: str, path: str, name: str, *, full: bool = True) -> None:
    page.goto(base + path)
    page.wait_for_timeout(300)
    target = IMAGES / f"{name}.png"
    page.screenshot(path=str(target), full_page=full)
    print(f"  {target.relative_to(ROOT)}")


def photograph(base: str, ids: dict[str, int]) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=BROWSER, args=BROWSER_ARGS)
        try:
            for size, suffix in ((DESKTOP, ""), (PHONE, "-phone")):
                context = browser.new_context(viewport=size, device_scale_factor=1 if suffix == "" else 2)
                page = context.new_page()
                shoot(page, base, "/", f"overview{suffix}")
                shoot(page, base, "/jobs?state=failed", f"dead-letters{suffix}")
                shoot(page, base, f"/jobs/{ids['failed_email']}", f"job{suffix}")
                if not suffix:
                    shoot(page, base, "/workers", "workers")
                    shoot(page, base, "/audit", "audit")
                    page.goto(base + "/jobs?state=failed")
                    page.click("button[value=retry]")
                    page.wait_for_selector("#confirm-count")
                    page.screenshot(path=str(IMAGES / "bulk-confirm.png"), full_page=True)
                    print("  docs/images/bulk-confirm.png")
                context.close()
        finally:
            browser.close()


def act(base: str, ids: dict[str, Any]) -> None:
    """Two actions for the audit log (through the API, as an admin on loopback)."""
    for path in (f"/api/v1/jobs/{ids['cancel']}/cancel", "/api/v1/jobs/retry"):
        body = json.dumps({} if path.endswith("cancel") else {"filter": {"type": "GenerateQrCode"}}).encode()
        request = urllib.request.Request(  # noqa: S310 - our own http:// server
            base + path, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=10).read()  # noqa: S310 - our own http:// server


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as folder:
        db = LocalDatabase(Path(folder) / "db")
        url = db.start()
        proc = None
        try:
            ids = seed(url)
            proc, base = start_web(url, Path(folder) / "web.log")
            act(base, ids)
            photograph(base, ids)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(20)
            db.stop()


if __name__ == "__main__":
    main()
