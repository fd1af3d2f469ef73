"""`passito-jobs demo` (what `make run` runs): the whole system on this machine.

Starts the embedded PostgreSQL (unless PASSITO_DATABASE_URL is set), migrates, runs the local
supervisor (workers scaled to the queue), dispatches generated sample outpasses through the
outpass flow (QR code -> PDF -> email, plus parent approval for some) and prints progress.
`--jobs N` (`make run DEMO_JOBS=N`) is the number of sample outpasses; each is 3 or 4 jobs.
Ctrl-C stops everything gracefully; `--until-drained` exits once the demo jobs are done.
Every demo job carries the tag `demo`: `--clear-leftovers` (`make run CLEAR=1`) cancels the
unfinished ones an interrupted run left, unless another demo run shares the database.

Emails always go to the file backend (`.eml` files in PASSITO_STORAGE_DIR/outbox/), whatever
PASSITO_SMTP_HOST says: the sample addresses are fake. Without PASSITO_SECRET_KEY the demo
signs with a random key made for this run.
"""

from __future__ import annotations

import ctypes.util
import os
import random
import secrets
import signal
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType

from passito_jobs.config import Settings
from passito_jobs.localdb import LocalDatabase
from passito_jobs.outpass.flow import dispatch_outpass_flows
from passito_jobs.outpass.model import Outpass
from passito_jobs.outpass.settings import OutpassSettings
from passito_jobs.queue.connection import connect
from passito_jobs.queue.store import Store
from passito_jobs.supervisor.local import LocalSupervisor
from passito_jobs.supervisor.policy import ScalingPolicy

PROGRESS_EVERY = 2.0
DEMO_TAG = "demo"


FIRST_NAMES = ("Aanya", "Arjun", "Diya", "Ishaan", "Kavya", "Rohan", "Saanvi", "Vihaan", "Meera", "Kabir")
LAST_NAMES = ("Sharma", "Iyer", "Reddy", "Nair", "Gupta", "Das", "Khan", "Menon", "Patel", "Singh")
HOSTELS = ("Kaveri", "Godavari", "Narmada", "Tapti")
DESTINATIONS = ("Chennai Central", "Bengaluru", "Home (Madurai)", "City hospital", "Coimbatore")
REASONS = ("Family function", "Medical appointment", "Weekend at home", "Internship interview")
PARENT_APPROVAL_SHARE = 0.3


def sample_outpasses(count: int, rng: random.Random) -> list[Outpass]:
    """Made-up outpasses (example.org addresses); about 30% ask a parent to approve."""
    today = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    outpasses = []
    for number in range(1, count + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        leave = today + timedelta(days=rng.randint(1, 14), hours=rng.randint(8, 17))
        needs_parent = rng.random() < PARENT_APPROVAL_SHARE
        payload = {
            "outpass_id": f"demo-{number:04d}",
            "student_name": f"{first} {last}",
            "student_email": f"{first}.{last}.{number}@example.org".lower(),
            "roll_number": f"CS{rng.randint(20, 24)}B{rng.randint(1, 999):03d}",
            "hostel": rng.choice(HOSTELS),
            "room": str(rng.randint(101, 420)),
            "destination": rng.choice(DESTINATIONS),
            "reason": rng.choice(REASONS),
            "from_date": leave.isoformat(),
            "to_date": (leave + timedelta(days=rng.randint(0, 4), hours=rng.randint(2, 12))).isoformat(),
            "status": "pending_parent_approval" if needs_parent else "approved",
            "needs_parent_approval": needs_parent,
        }
        if needs_parent:
            payload["parent_name"] = f"{rng.choice(FIRST_NAMES)} {last}"
            payload["parent_email"] = f"parent.{last}.{number}@example.org".lower()
        outpasses.append(Outpass.from_payload(payload))
    return outpasses


def worker_environment(outpass: OutpassSettings, storage: Path) -> dict[str, str]:
    """The demo workers' environment: absolute storage, the file mail backend, a signing key."""
    env = dict(os.environ)
    env["PASSITO_STORAGE_DIR"] = str(storage)
    env["PASSITO_SMTP_HOST"] = ""  # the file backend: sample addresses must never be mailed
    if not outpass.secret_key and not os.environ.get("PASSITO_SECRET_KEY_FILE"):
        # Random for this run: the demo's tokens are verifiable only while it runs.
        env["PASSITO_SECRET_KEY"] = secrets.token_urlsafe(48)
        print("PASSITO_SECRET_KEY is not set: signing this run's tokens with a random key", flush=True)
    return env


def optional_libraries_missing() -> list[str]:
    """Debian packages that make PDFs faster and are not installed (WeasyPrint works without
    them, subsetting fonts with fontTools instead of HarfBuzz)."""
    return [] if ctypes.util.find_library("harfbuzz-subset") else ["libharfbuzz-subset0"]


class _Run:
    """One demo run's signals: the first Ctrl-C (or SIGTERM) stops gracefully and says what it
    waits for; the second kills the workers at once. Either way the run then cleans up: its
    workers end, and the embedded PostgreSQL stops if this was the last run using it."""

    def __init__(self, shutdown_timeout: float) -> None:
        self.stop = threading.Event()
        self.shutdown_timeout = shutdown_timeout
        self.supervisor: LocalSupervisor | None = None
        self.killed = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stop.is_set():
            self.stop.set()
            print(
                f"\nStopping: the workers finish the jobs they run (at most {self.shutdown_timeout:g}s), "
                "then the embedded PostgreSQL stops. Ctrl-C again to stop at once.",
                flush=True,
            )
        elif not self.killed:
            self.killed = True
            print("\nStopping at once: killing the workers (their jobs run again later)", flush=True)
            if self.supervisor is not None:
                self.supervisor.kill()


def _database(settings: Settings) -> tuple[str, LocalDatabase | None]:
    """The database URL, and the embedded PostgreSQL this run shares (None: PASSITO_DATABASE_URL)."""
    if settings.database.url:
        return settings.database.url, None
    local = LocalDatabase(settings.local_database.data_dir)
    url = local.join(os.getpid())
    print(f"Embedded PostgreSQL: {url} (data in {local.pgdata})", flush=True)
    return url, local


def _leave(local: LocalDatabase | None) -> None:
    if local is None:
        return
    stopped, others = local.leave(os.getpid())
    if stopped:
        print("Embedded PostgreSQL stopped", flush=True)
    elif others:
        print(f"Embedded PostgreSQL left running: {others} other demo run(s) use it", flush=True)


def run_demo(
    settings: Settings, *, jobs: int, until_drained: bool, workers: int, clear_leftovers: bool = False
) -> int:
    print(
        "passito-jobs demo: the queue, local workers with autoscaling, and a demo workload",
        flush=True,
    )
    missing = optional_libraries_missing()
    if missing:
        print(
            f"PDFs render faster with {' '.join(missing)} installed "
            f"(apt-get install {' '.join(missing)}; README.md, optional system packages)",
            flush=True,
        )
    outpass = OutpassSettings.from_env()
    run = _Run(settings.worker.shutdown_timeout)
    previous = {s: signal.signal(s, run.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    local: LocalDatabase | None = None
    try:
        url, local = _database(settings)
        if run.stop.is_set():
            return 130
        store = Store(connect(url, timeout=settings.database.connect_timeout))
        try:
            for migration in store.migrate():
                print(f"Applied migration {migration.version:04d}_{migration.name}", flush=True)
            _leftovers(store, local, clear=clear_leftovers)
            return _run_with_database(
                settings, run, store, url, outpass, jobs=jobs, until_drained=until_drained, workers=workers
            )
        finally:
            store.conn.close()
    finally:
        _leave(local)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _leftovers(store: Store, local: LocalDatabase | None, *, clear: bool) -> None:
    """Say what unfinished jobs the queue already holds; with `clear`, first cancel the demo's
    (tag `demo`) unless another demo run shares this database (they may be its jobs)."""
    if clear:
        others = local.other_runs(os.getpid()) if local is not None else 0
        if others:
            print(
                f"Not clearing leftovers: {others} other demo run(s) use this database and the "
                "unfinished demo jobs may be theirs",
                flush=True,
            )
        else:
            cancelled = store.cancel_unfinished_tagged(DEMO_TAG)
            print(
                f"Cleared leftovers: cancelled {len(cancelled)} unfinished demo job(s) of an earlier run",
                flush=True,
            )
    leftovers = store.unfinished()
    if leftovers:
        print(
            f"{leftovers} unfinished jobs are already in the queue (left by an earlier run, or another "
            "run's): the workers run them too; this run counts only its own"
            + ("" if clear else " (--clear-leftovers, make run CLEAR=1: cancel the demo's first)"),
            flush=True,
        )


def _run_with_database(
    settings: Settings,
    run: _Run,
    store: Store,
    url: str,
    outpass: OutpassSettings,
    *,
    jobs: int,
    until_drained: bool,
    workers: int,
) -> int:
    policy = ScalingPolicy(
        min_replicas=1,
        max_replicas=workers,
        scale_up_threshold=settings.supervise.scale_up_threshold,
        scale_down_threshold=settings.supervise.scale_down_threshold,
        cooldown=10.0,
    )
    storage = Path(os.path.abspath(outpass.storage_dir))
    run.supervisor = LocalSupervisor(
        policy,
        database_url=url,
        check_interval=2.0,
        worker_args=["--concurrency", "5", "--import", "passito_jobs.outpass"],
        env=worker_environment(outpass, storage),
        shutdown_timeout=settings.worker.shutdown_timeout,
    )
    supervisor_stop = threading.Event()
    thread = threading.Thread(target=run.supervisor.run, args=(supervisor_stop,), name="supervisor")
    thread.start()
    try:
        return _dispatch_and_watch(store, run, storage, jobs=jobs, until_drained=until_drained)
    finally:
        supervisor_stop.set()
        thread.join()


def _dispatch_and_watch(store: Store, run: _Run, storage: Path, *, jobs: int, until_drained: bool) -> int:
    outpasses = sample_outpasses(jobs, random.Random(7))  # noqa: S311 - not crypto
    flows = dispatch_outpass_flows(outpasses, conn=store.conn, tags=[DEMO_TAG])
    ids = sorted(job_id for flow in flows for job_id in flow.job_ids)
    approvals = sum(1 for flow in flows if flow.parent_approval is not None)
    print(
        f"Dispatched {len(flows)} sample outpasses: {len(ids)} jobs (#{ids[0]}..#{ids[-1]}) = "
        f"QR code, PDF and student email each, and {approvals} parent approval emails",
        flush=True,
    )
    print(f"Files go to {storage}/outpasses/, emails to {storage}/outbox/ (.eml files)", flush=True)
    failed = 0
    while not run.stop.is_set():
        done, failed = store.finished_among(ids)
        print(
            f"[{time.strftime('%H:%M:%S')}] Demo: {done}/{len(ids)} jobs done ({failed} failed)", flush=True
        )
        if until_drained and done == len(ids):
            sample_pdf = storage / "outpasses" / flows[0].outpass_id / "outpass.pdf"
            print(f"All demo jobs are done. Open a PDF: {sample_pdf}", flush=True)
            break
        run.stop.wait(PROGRESS_EVERY)
    return 1 if until_drained and failed else 0
