"""Everything through a real PgBouncer in transaction pooling (PASSITO_LISTEN=false): migrate,
dispatch, two worker processes, the health report; the server must see no LISTEN and no
prepared statement, which a transaction pooler would break."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from passito_jobs import dispatch
from passito_jobs.queue.connection import connect
from passito_jobs.queue.models import JobRequest
from passito_jobs.queue.store import Store
from tests.helpers import TESTS, WorkerProcess, count_states, free_port, http_get, run_cli, wait_for
from tests.pgservers import PgBouncer, PgServer, require_pgbouncer, scratch_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def pooled(tmp_path: Path) -> Iterator[tuple[PgServer, PgBouncer, str]]:
    """A server of this test's own that logs every statement, PgBouncer in front of it with a
    pool of 2 server connections, and the pooler's URL of an empty database."""
    require_pgbouncer()
    with scratch_dir() as root:
        server = PgServer(root, "server").initdb().start(fsync="off", log_statement="all")
        bouncer = PgBouncer(root, server, pool_size=2)
        try:
            server.create_database("queue")
            bouncer.start()
            yield server, bouncer, bouncer.url("queue")
        finally:
            bouncer.stop()
            server.stop()


def _env(url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    env.update(
        {
            "PASSITO_DATABASE_URL": url,
            "PASSITO_LISTEN": "false",
            "PASSITO_POLL_INTERVAL": "200ms",
            "PASSITO_DATA_DIR": str(tmp_path / "passito"),
            "PYTHONPATH": str(TESTS.parent),
        }
    )
    return env


def test_migrate_dispatch_work_and_health_through_pgbouncer_in_transaction_pooling(
    pooled: tuple[PgServer, PgBouncer, str], tmp_path: Path
) -> None:
    server, _, url = pooled
    env = _env(url, tmp_path)

    # Two migrators at once: they queue on a transaction advisory lock, which the pooler keeps.
    migrators = [
        subprocess.Popen(
            [sys.executable, "-m", "passito_jobs", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in migrators:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out

    ports = [free_port(), free_port()]
    workers = [
        WorkerProcess(
            {**env, "PASSITO_METRICS_PORT": str(port)},
            tmp_path / f"w{i}.log",
            "--concurrency",
            "5",
            "--no-log-jobs",
        )
        for i, port in enumerate(ports)
    ]
    try:
        for port in ports:
            wait_for(
                lambda port=port: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200,
                timeout=60,
                message="a worker to be ready",
            )
        # 1,000 jobs: one from the CLI, 99 one by one (the same statement, again and again,
        # would be prepared on the server by default), 900 with one COPY.
        done = run_cli(["dispatch", "Sleep", "--payload", '{"seconds": 0.01}'], env)
        assert done.returncode == 0, done.stderr
        with connect(url, prepare=False) as conn:
            for _ in range(99):
                dispatch("Sleep", {"seconds": 0.01}, conn=conn)
            Store(conn).dispatch_many([JobRequest("Sleep", {"seconds": 0.01}) for _ in range(900)])
        # Straight to the server, preparing nothing either: the server's log must stay clean.
        with psycopg.connect(server.url("queue"), autocommit=True, prepare_threshold=None) as direct:
            wait_for(
                lambda: count_states(direct) == {"completed": 1000},
                timeout=120,
                message="1,000 jobs completed",
            )
            per_worker = dict(
                direct.execute(
                    "SELECT worker_id, count(*) FROM passito_jobs.jobs GROUP BY worker_id"
                ).fetchall()
            )
            twice = direct.execute("SELECT count(*) FROM passito_jobs.jobs WHERE attempts <> 1").fetchone()
        assert twice == (0,)
        assert len(per_worker) == 2, per_worker  # both workers claimed through the pooler
        health = run_cli(["health", "--json"], env)
        assert health.returncode == 0, health.stderr
        assert json.loads(health.stdout)["healthy"] is True
        _scrape_the_exporter(env, tmp_path)
        _ask_the_dashboard(env, tmp_path)
        for port in ports:
            assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        codes = [worker.stop() for worker in workers]
    for worker in workers:
        assert "wakeup=poll every 0.2s" in worker.log(), worker.log()[-2000:]
        assert "Traceback" not in worker.log(), worker.log()[-3000:]
    assert codes == [0, 0]

    statements = server.log_text()
    # The log can tell: every statement came as an unnamed one, none prepared, no LISTEN.
    assert "execute <unnamed>: SELECT id, queue, type" in statements
    named = re.findall(r"execute (?!<unnamed>)(\S+):", statements)
    assert named == [], f"prepared statements reached the server: {sorted(set(named))}"
    assert not re.search(r"statement: LISTEN|execute <unnamed>: LISTEN", statements)
    assert not re.search(r"\bPREPARE\b", statements)


def test_the_control_prepared_statements_break_behind_a_transaction_pooler(
    pooled: tuple[PgServer, PgBouncer, str],
) -> None:
    """Why PASSITO_LISTEN=false turns psycopg's prepared statements off: two clients that each
    prepare their statement collide on the pooler's shared server connections."""
    _, _, url = pooled
    first, second = connect(url), connect(url)
    try:
        collided = (psycopg.errors.DuplicatePreparedStatement, psycopg.errors.InvalidSqlStatementName)
        with pytest.raises(collided):
            _take_turns(first, second, "SELECT 1", times=10)
    finally:
        first.close()
        second.close()


def _take_turns(
    first: psycopg.Connection[object], second: psycopg.Connection[object], sql: str, times: int
) -> None:
    for _ in range(times):
        first.execute(sql)
        second.execute(sql)


def _scrape_the_exporter(env: dict[str, str], tmp_path: Path) -> None:
    """`passito-jobs health serve` through the pooler: its gauges say the queue drained."""
    port = free_port()
    log = tmp_path / "exporter.log"
    with open(log, "w") as out:
        exporter = subprocess.Popen(
            [sys.executable, "-m", "passito_jobs", "health", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            body = wait_for(
                lambda: _metrics(port),
                timeout=60,
                message="the exporter to report the database up",
            )
        finally:
            exporter.terminate()
            exporter.wait(30)
    assert 'passito_jobs_queue_jobs{queue="default",state="pending"} 0.0' in body, log.read_text()


def _metrics(port: int) -> str:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    text = body.decode()
    return text if status == 200 and "passito_jobs_exporter_database_up 1.0" in text else ""


def _ask_the_dashboard(env: dict[str, str], tmp_path: Path) -> None:
    """`passito-jobs web` through the pooler (loopback, no login): its API lists the jobs,
    many times over (the same statements, which would be prepared by default)."""
    port = free_port()
    web_env = {**env, "PASSITO_WEB_HOST": "127.0.0.1", "PASSITO_WEB_PORT": str(port)}
    log = tmp_path / "web.log"
    with open(log, "w") as out:
        web = subprocess.Popen(
            [sys.executable, "-m", "passito_jobs", "web"],
            env=web_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            api = f"http://127.0.0.1:{port}/api/v1/jobs?state=completed"
            wait_for(lambda: http_get(api)[0] == 200, timeout=60, message="the dashboard to answer")
            answers = [http_get(api)[0] for _ in range(10)]
        finally:
            web.terminate()
            web.wait(30)
    assert answers == [200] * 10, log.read_text()
