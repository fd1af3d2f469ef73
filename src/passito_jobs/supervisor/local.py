"""`passito-jobs supervise`: scale local worker processes to the queue, for machines without
Kubernetes. It replaces the old `jobs:supervisor` and prints what it printed.

Workers are `passito-jobs worker` subprocesses in their own process group (a Ctrl-C in the
terminal reaches only the supervisor, which then stops them gracefully with SIGTERM). A worker
that exits on its own is replaced; one that keeps crashing right after start is replaced with
growing delays. The scaling decision is `policy.decide`, the same as the operator's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from passito_jobs.supervisor.load import LoadReader, LoadUnavailableError
from passito_jobs.supervisor.policy import Decision, Direction, ScalingPolicy, decide

TICK = 0.25  # how often exited workers are noticed
CRASH_WINDOW = 10.0  # a worker that dies this soon after start counts as a crash loop
MAX_RESPAWN_DELAY = 60.0


@dataclass
class LocalWorker:
    proc: subprocess.Popen[bytes]
    started: float
    stopping: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class SupervisorState:
    workers: list[LocalWorker] = field(default_factory=list)
    target: int = 0  # workers that should be running (crashed ones are replaced up to it)
    last_scale: float | None = None
    crash_streak: int = 0
    respawn_at: float = 0.0

    @property
    def active(self) -> list[LocalWorker]:
        return [w for w in self.workers if not w.stopping]


class LocalSupervisor:
    """Spawns, scales and restarts local worker processes until `stop` is set."""

    def __init__(
        self,
        policy: ScalingPolicy,
        *,
        database_url: str,
        check_interval: float = 10.0,
        queues: Sequence[str] = (),
        worker_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        shutdown_timeout: float = 30.0,
        out: Callable[[str], None] | None = None,
        prepare: bool = True,
    ) -> None:
        self.policy = policy
        self.database_url = database_url
        self.check_interval = check_interval
        self.queues = list(queues)
        self.worker_args = list(worker_args)
        self.shutdown_timeout = shutdown_timeout
        self.env = dict(os.environ if env is None else env)
        self.env["PASSITO_DATABASE_URL"] = database_url
        self.env["PASSITO_METRICS_PORT"] = "0"  # several local workers cannot share one port
        if self.queues:
            self.env["PASSITO_QUEUES"] = ",".join(self.queues)
        self.out = out or _print
        self.state = SupervisorState()
        self._reader = LoadReader(database_url, prepare=prepare)

    # ------------------------------------------------------------ loop

    def run(self, stop: threading.Event) -> int:
        self.out("Job Supervisor started")
        self.out(
            f"Configuration: min workers {self.policy.min_replicas}, max workers {self.policy.max_replicas}, "
            f"scale up above {self.policy.scale_up_threshold:g} jobs/worker, scale down below "
            f"{self.policy.scale_down_threshold:g} jobs/worker, check every {self.check_interval:g}s, "
            f"cooldown {self.policy.cooldown:g}s, queues: {','.join(self.queues) or 'all'}"
        )
        self.state.target = self.policy.min_replicas
        for _ in range(self.state.target):
            self._spawn()
        next_check = time.monotonic()
        try:
            while not stop.is_set():
                self._reap()
                if time.monotonic() >= next_check:
                    self.check()
                    next_check = time.monotonic() + self.check_interval
                stop.wait(TICK)
        finally:
            self.shutdown()
        return 0

    def check(self) -> Decision | None:
        """One scaling round: read the load, print it, act on the policy's decision."""
        load = self._load()
        active = self.state.active
        if load is None:
            return None  # keep the workers we have until the database answers again
        self.out(f"[{time.strftime('%H:%M:%S')}] Queue: {load} jobs | Workers: {len(active)}")
        decision = decide(
            self.policy,
            load=load,
            current=len(active),
            now=time.monotonic(),
            last_scale_time=self.state.last_scale,
        )
        if decision.direction is Direction.UP:
            count = decision.desired - len(active)
            self.out(f"Scaling UP: Spawning {count} worker(s) ({decision.reason})")
            for _ in range(count):
                self._spawn()
            self.state.target = decision.desired
            self.state.last_scale = time.monotonic()
        elif decision.direction is Direction.DOWN:
            count = len(active) - decision.desired
            self.out(f"Scaling DOWN: Stopping {count} worker(s) ({decision.reason})")
            for worker in sorted(active, key=lambda w: w.started, reverse=True)[:count]:
                self._stop(worker)
            self.state.target = decision.desired
            self.state.last_scale = time.monotonic()
        return decision

    def shutdown(self) -> None:
        """SIGTERM every worker, wait for the graceful shutdown, kill stragglers."""
        running = [w for w in self.state.workers if w.proc.poll() is None]
        leaving = sum(1 for w in running if w.stopping)  # scaled down, finishing their jobs
        if running:
            also = f" ({leaving} of them already stopping)" if leaving else ""
            self.out(f"Stopping {len(running)} worker(s){also}...")
        for worker in running:
            self._stop(worker)
        deadline = time.monotonic() + self.shutdown_timeout + 10
        for worker in running:
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.out(f"Worker {worker.pid} did not stop in time; killing it")
                worker.proc.kill()
                worker.proc.wait()
        self.state.workers.clear()
        self._reader.close()
        self.out("Job Supervisor stopped")

    def kill(self) -> None:
        """Kill every worker at once (SIGKILL to its process group): a second Ctrl-C. Their jobs
        are rescued when their heartbeats go stale. Safe from a signal handler."""
        self.state.target = 0
        for worker in list(self.state.workers):
            worker.stopping = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.pid, signal.SIGKILL)

    # ------------------------------------------------------------ workers

    def _spawn(self) -> LocalWorker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "passito_jobs", "worker", *self.worker_args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        worker = LocalWorker(proc, time.monotonic())
        self.state.workers.append(worker)
        self.out(f"Spawned worker with PID: {proc.pid}")
        return worker

    def _stop(self, worker: LocalWorker) -> None:
        if worker.stopping:
            return
        worker.stopping = True
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)

    def _reap(self) -> None:
        now = time.monotonic()
        for worker in list(self.state.workers):
            code = worker.proc.poll()
            if code is None:
                continue
            self.state.workers.remove(worker)
            if worker.stopping:
                continue
            crashed_fast = now - worker.started < CRASH_WINDOW
            self.state.crash_streak = self.state.crash_streak + 1 if crashed_fast else 0
            delay = 0.0 if not crashed_fast else min(MAX_RESPAWN_DELAY, 2.0**self.state.crash_streak)
            self.state.respawn_at = now + delay
            self.out(
                f"Worker {worker.pid} exited unexpectedly (exit code {code}); "
                f"restarting it{f' in {delay:.0f}s' if delay else ''}"
            )
        missing = self.state.target - len(self.state.active)
        if missing > 0 and now >= self.state.respawn_at:
            for _ in range(missing):
                self._spawn()

    def _load(self) -> int | None:
        try:
            return self._reader.read(self.queues)
        except LoadUnavailableError as exc:
            self.out(
                f"[{time.strftime('%H:%M:%S')}] Cannot read the queue ({exc}); "
                f"keeping {len(self.state.active)} worker(s)"
            )
            return None


def _print(line: str) -> None:
    print(line, flush=True)
