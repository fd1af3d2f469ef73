"""Failover: a primary and its hot standby on loopback, workers and a dispatcher on a multi-host
URL (`target_session_attrs=read-write`). Under a steady load the primary is stopped hard and the
standby promoted: the workers reconnect without exiting, /readyz goes false and true again,
and every dispatch that committed and reached the new primary ends completed. Asynchronous
replication may lose the last commits before the crash (reported); synchronous loses none.

Each run prints what it measured (pytest -s shows it): time to recover, dispatches lost,
attempts run twice.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from passito_jobs.queue.asyncstore import AsyncStore
from passito_jobs.queue.connection import connect, connect_async
from passito_jobs.queue.errors import QueueError
from passito_jobs.queue.models import ClaimedJob, JobRequest
from passito_jobs.queue.store import Store, StoreHandle
from tests.helpers import TESTS, WorkerProcess, free_port, http_get, wait_for, wal_writes
from tests.pgservers import PgServer, scratch_dir

pytestmark = pytest.mark.slow

RATE = 40  # dispatches per second, one transaction each


@dataclass
class Dispatcher:
    """The application: dispatches one job per transaction at a steady rate through the
    multi-host URL, reconnecting after an error; remembers each id whose commit returned."""

    url: str
    committed: list[tuple[float, int]] = field(default_factory=list)  # (when, id)
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        handle = StoreHandle.to(self.url, timeout=2)
        request = JobRequest("Sleep", {"seconds": 0.02})
        while not self.stop.wait(1 / RATE):
            try:
                job_id = handle.run(lambda store: store.dispatch(request))
            except QueueError:
                self.errors += 1
                continue
            self.committed.append((time.monotonic(), job_id))
        handle.close()


@dataclass
class Readiness:
    """Polls every worker's /readyz and remembers what each answered, in order."""

    ports: list[int]
    seen: dict[int, list[int]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(0.05):
            for port in self.ports:
                status = http_get(f"http://127.0.0.1:{port}/readyz", timeout=2)[0]
                answers = self.seen.setdefault(port, [])
                if not answers or answers[-1] != status:
                    answers.append(status)


@pytest.fixture
def servers() -> Iterator[tuple[PgServer, PgServer]]:
    with scratch_dir() as root:
        primary = PgServer(root, "primary").initdb().start(fsync="off", wal_sender_timeout="5s")
        standby = PgServer(root, "standby")
        try:
            url = primary.create_database("queue")
            with connect(url) as conn:
                Store(conn).migrate()
            standby.basebackup_of(primary).start(fsync="off")
            yield primary, standby
        finally:
            standby.stop("immediate")
            primary.stop("immediate")


def _replication(primary: PgServer, sync: bool) -> None:
    """Wait until the standby streams (and, for `sync`, confirms every commit)."""
    with psycopg.connect(primary.url(), autocommit=True) as conn:
        if sync:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
        wanted = "sync" if sync else "async"
        wait_for(
            lambda: conn.execute(
                "SELECT 1 FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = %s", (wanted,)
            ).fetchone(),
            timeout=30,
            message=f"the standby to stream ({wanted})",
        )


def _env(url: str, tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    env.update(
        {
            "PASSITO_DATABASE_URL": url,
            "PASSITO_DATA_DIR": str(tmp_path / "passito"),
            "PASSITO_METRICS_PORT": str(port),
            "PASSITO_CONNECT_TIMEOUT": "2s",
            "PASSITO_POLL_INTERVAL": "500ms",
            "PASSITO_HEARTBEAT_INTERVAL": "1s",
            # A completion the old primary took but never sent on leaves its job processing on
            # the new one: the rescue runs it again after this long.
            "PASSITO_STUCK_AFTER": "4s",
            "PASSITO_MAINTENANCE_INTERVAL": "1s",
            "PYTHONPATH": str(TESTS.parent),
        }
    )
    return env


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
def test_workers_ride_through_a_failover(
    servers: tuple[PgServer, PgServer], sync: bool, tmp_path: Path
) -> None:
    primary, standby = servers
    _replication(primary, sync)
    url = (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/queue"
        "?target_session_attrs=read-write"
    )
    ports = [free_port(), free_port()]
    workers = [
        WorkerProcess(_env(url, tmp_path, port), tmp_path / f"w{i}.log", "--concurrency", "4")
        for i, port in enumerate(ports)
    ]
    dispatcher, readiness = Dispatcher(url), Readiness(ports)
    threads = [threading.Thread(target=dispatcher.run), threading.Thread(target=readiness.run)]
    try:
        for port in ports:
            wait_for(lambda port=port: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout=60)
        for thread in threads:
            thread.start()
        wait_for(lambda: len(dispatcher.committed) >= 3 * RATE, timeout=60, message="a steady load")

        crashed_at = time.monotonic()
        primary.stop("immediate")
        standby.promote()
        promoted_at = time.monotonic()
        wait_for(
            lambda: any(when > promoted_at for when, _ in dispatcher.committed),
            timeout=60,
            message="a dispatch to the new primary",
        )
        wait_for(
            lambda: all(seen[-1] == 200 and 503 in seen for seen in readiness.seen.values()),
            timeout=60,
            message="every worker not ready, then ready again",
        )
        ready_again_at = time.monotonic()
        wait_for(lambda: len(dispatcher.committed) >= 6 * RATE, timeout=60, message="more load after")
        dispatcher.stop.set()
        threads[0].join(30)

        committed = {job_id for _, job_id in dispatcher.committed}
        with psycopg.connect(standby.url("queue"), autocommit=True, prepare_threshold=None) as conn:
            wait_for(
                lambda: (
                    not conn.execute(
                        "SELECT 1 FROM passito_jobs.jobs WHERE state <> 'completed' LIMIT 1"
                    ).fetchone()
                ),
                timeout=60,
                message="every job on the new primary completed",
            )
            present = {row[0] for row in conn.execute("SELECT id FROM passito_jobs.jobs")}
        for worker in workers:
            assert worker.proc.poll() is None, f"a worker exited: {worker.log()[-3000:]}"
    finally:
        dispatcher.stop.set()
        readiness.stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(30)
        codes = [worker.stop() for worker in workers]

    lost = committed - present
    runs = Counter(int(job_id) for w in workers for job_id in re.findall(r"Processing Job #(\d+)", w.log()))
    twice = sum(1 for count in runs.values() if count > 1)
    print(
        f"\nfailover ({'sync' if sync else 'async'}): {len(committed)} dispatches committed, "
        f"{len(lost)} lost; workers ready again {ready_again_at - crashed_at:.2f}s after the "
        f"crash (promotion took {promoted_at - crashed_at:.2f}s); {twice} job(s) run twice; "
        f"dispatch errors during the failover: {dispatcher.errors}"
    )
    assert codes == [0, 0]
    for worker in workers:
        assert "Database connection restored" in worker.log()
        assert "Traceback" not in worker.log(), worker.log()[-3000:]
    assert present <= set(runs), "a job completed that no worker ran"
    if sync:
        assert lost == set(), f"synchronous replication lost committed dispatches: {sorted(lost)}"


def test_with_a_synchronous_standby_an_idle_claim_waits_for_it(servers: tuple[PgServer, PgServer]) -> None:
    """Without synchronous standbys an idle worker's claim commits without waiting for the WAL
    flush (test_queue_rules); with one named, the claim keeps the session's setting, so a claim
    that returned is on the standby and a failover cannot undo it (docs/operations.md). The
    claim's own WAL writes on the primary (pg_stat_get_backend_io) show which it did."""
    primary, _ = servers
    _replication(primary, sync=True)
    url = primary.url("queue")

    async def claim_alone() -> tuple[list[ClaimedJob], int, int]:
        with connect(url) as observer:
            Store(observer).dispatch(JobRequest("Noop"))
            async with await connect_async(url) as aconn:
                writes, full = await wal_writes(aconn, observer)
                jobs = await AsyncStore(aconn, "w1").settle_and_claim([], [], None, 1)
                writes_after, full_after = await wal_writes(aconn, observer)
                return jobs, writes_after - writes, full_after - full

    jobs, writes, _ = asyncio.run(claim_alone())
    assert len(jobs) == 1
    assert writes >= 1, "with a synchronous standby named, the idle claim did not wait for the WAL flush"


def test_connections_give_up_on_a_vanished_host_within_a_minute(database_url: str) -> None:
    """A primary whose node dies sends no reset: keepalives (idle connections) and
    tcp_user_timeout (a statement in flight) are what end the wait, so that the reconnect to
    the promoted standby starts."""
    with connect(database_url) as conn:
        params = conn.info.get_parameters()
    assert (params["keepalives_idle"], params["keepalives_count"], params["tcp_user_timeout"]) == (
        "30",
        "3",
        "30000",
    )
