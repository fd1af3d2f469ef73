"""`passito-jobs demo` (what `make run` runs): the whole system on this machine.

Starts the embedded PostgreSQL (unless PASSITO_DATABASE_URL is set), migrates, runs the local
supervisor (workers scaled to the queue), dispatches a demo workload and prints progress.
Ctrl-C stops everything gracefully; `--until-drained` exits once the demo jobs are done.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from types import FrameType

from passito_jobs.config import Settings
from passito_jobs.localdb import LocalDatabase
from passito_jobs.queue.models import JobRequest
from passito_jobs.queue.store import Store, connect
from passito_jobs.supervisor.local import LocalSupervisor
from passito_jobs.supervisor.policy import ScalingPolicy

PROGRESS_EVERY = 2.0


def demo_workload(count: int, rng: random.Random) -> list[JobRequest]:
    """Short I/O-like jobs of varied length, a few of them urgent."""
    return [
        JobRequest("Sleep", {"seconds": round(rng.uniform(0.05, 0.6), 2)}, priority=5 if i % 10 == 0 else 0)
        for i in range(count)
    ]


def run_demo(settings: Settings, *, jobs: int, until_drained: bool, workers: int) -> int:
    print(
        "passito-jobs demo: the queue, local workers with autoscaling, and a demo workload",
        flush=True,
    )
    local: LocalDatabase | None = None
    if settings.database_url:
        url = settings.database_url
    else:
        local = LocalDatabase(settings.data_dir)
        started_here = local.running_port() is None
        url = local.start()
        print(f"Embedded PostgreSQL: {url} (data in {local.pgdata})", flush=True)
        if not started_here:
            local = None  # someone else's server: leave it running
    store = Store(connect(url, timeout=settings.connect_timeout))
    for migration in store.migrate():
        print(f"Applied migration {migration.version:04d}_{migration.name}", flush=True)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nStopping (Ctrl-C again to force)...", flush=True)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    policy = ScalingPolicy(
        min_replicas=1,
        max_replicas=workers,
        scale_up_threshold=settings.scale_up_threshold,
        scale_down_threshold=settings.scale_down_threshold,
        cooldown=10.0,
    )
    supervisor = LocalSupervisor(
        policy,
        database_url=url,
        check_interval=2.0,
        worker_args=["--concurrency", "5"],
        shutdown_timeout=settings.shutdown_timeout,
    )
    supervisor_stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(supervisor_stop,), name="supervisor")
    thread.start()
    failed = 0
    try:
        ids = store.dispatch_many(demo_workload(jobs, random.Random(7)))  # noqa: S311 - not crypto
        print(f"Dispatched {len(ids)} demo jobs (#{ids[0]}..#{ids[-1]})", flush=True)
        while not stop.is_set():
            done, failed = _progress(store, ids[0], ids[-1])
            print(
                f"[{time.strftime('%H:%M:%S')}] Demo: {done}/{len(ids)} jobs done ({failed} failed)",
                flush=True,
            )
            if until_drained and done == len(ids):
                print("All demo jobs are done.", flush=True)
                break
            stop.wait(PROGRESS_EVERY)
    finally:
        supervisor_stop.set()
        thread.join()
        store.conn.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if local is not None:
            local.stop()
            print("Embedded PostgreSQL stopped", flush=True)
    return 1 if until_drained and failed else 0


def _progress(store: Store, first: int, last: int) -> tuple[int, int]:
    return store.finished_between(first, last)
