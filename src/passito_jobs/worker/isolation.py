"""PASSITO_SYNC_ISOLATION=process: sync handlers run in a pool of child processes.

A thread cannot be stopped, so a sync handler that never returns keeps its thread for good. A
process can be killed: in this mode each sync attempt runs in a child process of a persistent
pool, and an attempt that outlives its timeout (or is given up at shutdown) has its process
killed and replaced. A handler that crashes its process (a segfault in a C library, os._exit)
fails only its own attempt.

The children are forked from a fork server that has imported the job modules once, so a
replacement starts in milliseconds and the worker's threads are never forked. A child looks a
handler up by its job type's name (or, for a registry of its own, by module and name); it gets
the job's context (id, payload, attempt, ...), sends progress as it is set, and answers with the
result as JSON text (checked there against the size limit) or the exception as text. One
worker thread waits on each running child, so the event loop never blocks on a pipe.

As with multiprocessing's spawn method, a child imports the main module of the program again;
`passito-jobs worker` is safe, and a script of your own that runs a Worker needs the
`if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from passito_jobs import logs
from passito_jobs.logs import LoggingSettings
from passito_jobs.queue.errors import clean_text, safe_str
from passito_jobs.queue.limits import UnstorableValueError, encode_json
from passito_jobs.registry import JobContext, JobType, PermanentError, Snooze, registry
from passito_jobs.settings import ConfigError
from passito_jobs.worker.failures import (
    ERROR_MAX_CHARS,
    OutcomeRefusedError,
    RemoteError,
    RemotePermanentError,
    format_error,
)

log = logging.getLogger("passito_jobs.worker")

Key = tuple[int, int]  # (job id, attempt)


class ChildExitedError(RuntimeError):
    """The process running an attempt exited before answering (killed, crashed, os._exit)."""


class AttemptCancelledError(RuntimeError):
    """The attempt was given up before its child process started it."""


@dataclass(frozen=True)
class ChildConfig:
    """What a child process needs besides the job: the modules to import, and the worker id
    its log lines carry (it reads how to log, PASSITO_LOG_*, from the environment it shares)."""

    modules: tuple[str, ...]
    worker_id: str


@dataclass
class _Child:
    process: BaseProcess
    conn: Connection


class ProcessPool:
    """Up to `size` child processes, each running one attempt at a time.

    `run()` blocks (call it from a thread); `kill()` may be called from any thread.
    """

    def __init__(self, size: int, config: ChildConfig) -> None:
        self.size = size
        self.config = config
        # Attempts past `size` at once wait here for a process (the pool of isolated job types
        # is as large as the cores, not the slots: a PDF per core, not ten fighting for two).
        self._running = threading.BoundedSemaphore(size)
        self._context: BaseContext = multiprocessing.get_context(
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        )
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._busy: dict[Key, _Child | None] = {}
        self._doomed: set[Key] = set()
        self._closed = False
        self.started = 0  # child processes started so far (replacements included)

    def start(self) -> None:
        """Start the fork server (it imports the job modules once) and one child."""
        if self._context.get_start_method() == "forkserver":
            preload = ["passito_jobs.worker.isolation", *self.config.modules]
            self._context.set_forkserver_preload(preload)
        child = self._spawn()
        with self._lock:
            self._idle.append(child)

    def run(self, key: Key, job_type: JobType, ctx: JobContext) -> str | None:
        """Run one attempt in a child; return its result as JSON text (or None).

        Raises the handler's exception as RemoteError (RemotePermanentError for a
        PermanentError), OutcomeRefusedError for a result that cannot be stored, and
        ChildExitedError when the process died (killed at the timeout, or crashed).
        """
        with self._running:
            return self._run(key, job_type, ctx)

    def _run(self, key: Key, job_type: JobType, ctx: JobContext) -> str | None:
        child = self._acquire(key)
        try:
            child.conn.send(_request(job_type, ctx))
            while True:
                message = child.conn.recv()
                kind = message[0]
                if kind == "progress":
                    ctx.set_progress_json(message[1])
                    continue
                self._release(key, child)
                if kind == "result":
                    return message[1]  # type: ignore[no-any-return]
                if kind == "refused":
                    raise OutcomeRefusedError(message[1])
                if kind == "snooze":
                    raise Snooze(message[1])
                _, type_name, text, formatted, permanent = message
                error = RemotePermanentError if permanent else RemoteError
                raise error(type_name, text, formatted)
        except (EOFError, OSError):
            self._discard(key, child)
            code = child.process.exitcode
            if code is None:
                child.process.join(1.0)
                code = child.process.exitcode
            raise ChildExitedError(f"the process running the attempt exited ({_exit_reason(code)})") from None

    def kill(self, key: Key) -> None:
        """Kill the process running attempt `key` (a timeout, a shutdown): it is replaced."""
        with self._lock:
            self._doomed.add(key)
            child = self._busy.get(key)
        if child is not None:
            with contextlib.suppress(OSError, ValueError):
                child.process.kill()

    def close(self) -> None:
        """Stop every child: idle ones exit, busy ones are killed."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = [c for c in self._busy.values() if c is not None]
        for child in idle:
            with contextlib.suppress(OSError, ValueError):
                child.conn.send(None)
        for child in busy:
            with contextlib.suppress(OSError, ValueError):
                child.process.kill()
        for child in idle + busy:
            child.process.join(2.0)
            if child.process.exitcode is None:
                with contextlib.suppress(OSError, ValueError):
                    child.process.kill()
                child.process.join(1.0)
            child.conn.close()

    # ------------------------------------------------------------ internals

    def _acquire(self, key: Key) -> _Child:
        with self._lock:
            if self._closed:
                raise AttemptCancelledError("the worker is stopping")
            if key in self._doomed:
                self._doomed.discard(key)
                raise AttemptCancelledError("the attempt was given up before it started")
            child = None
            while self._idle and child is None:
                child = self._idle.pop()
                if not child.process.is_alive():  # died while idle (the OOM killer, say)
                    child.conn.close()
                    child = None
            self._busy[key] = child
        if child is None:
            try:
                child = self._spawn()
            except BaseException:
                with self._lock:
                    self._busy.pop(key, None)
                raise
        with self._lock:
            if key in self._doomed or self._closed:
                self._doomed.discard(key)
                self._busy.pop(key, None)
                self._idle.append(child)
                raise AttemptCancelledError("the attempt was given up before it started")
            self._busy[key] = child
        return child

    def _release(self, key: Key, child: _Child) -> None:
        with self._lock:
            self._busy.pop(key, None)
            self._doomed.discard(key)
            if not self._closed and len(self._idle) < self.size:
                self._idle.append(child)
                return
        with contextlib.suppress(OSError, ValueError):
            child.conn.send(None)
        child.conn.close()

    def _discard(self, key: Key, child: _Child) -> None:
        with self._lock:
            self._busy.pop(key, None)
            self._doomed.discard(key)
        with contextlib.suppress(OSError, ValueError):
            child.process.kill()
        child.conn.close()

    def _spawn(self) -> _Child:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(  # type: ignore[attr-defined]
            target=_child_main, args=(child_end, self.config), name="passito-job", daemon=True
        )
        process.start()
        child_end.close()  # the child holds the only other end: its exit is our EOF
        self.started += 1
        return _Child(process, parent_end)


def isolated(job_type: JobType, sync_isolation: str) -> bool:
    """Whether a job type's attempts run in a child process: every sync type's under
    PASSITO_SYNC_ISOLATION=process, else those of the types registered with isolation="process"."""
    if job_type.is_async:
        return False
    return sync_isolation == "process" or job_type.isolation == "process"


def pool_size(sync_isolation: str, concurrency: int, job_types: Iterable[JobType]) -> int:
    """The child processes a worker keeps: a slot's worth under PASSITO_SYNC_ISOLATION=process;
    else, when a type asked for isolation (CPU-bound work), one per core it may use, since more
    would only take turns on the cores; none when no type did."""
    if sync_isolation == "process":
        return concurrency
    if any(isolated(job_type, sync_isolation) for job_type in job_types):
        return min(concurrency, usable_cpus())
    return 0


def usable_cpus() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU limit (a
    pod's `resources.limits.cpu`, rounded up); at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    return max(1, cpus)


def _request(job_type: JobType, ctx: JobContext) -> tuple[Any, ...]:
    handler = job_type.handler
    return (
        job_type.name,
        getattr(handler, "__module__", None),
        getattr(handler, "__qualname__", None),
        (ctx.id, ctx.type, ctx.queue, ctx.payload, ctx.attempt, ctx.max_attempts, ctx.worker_id, ctx.parents),
        ctx.max_bytes,
    )


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# ---------------------------------------------------------------- the child process


def _child_main(conn: Connection, config: ChildConfig) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the worker decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    try:
        logging_settings = LoggingSettings.from_env()
    except ConfigError:  # the worker checked them already
        logging_settings = LoggingSettings()
    logs.setup(
        role="Worker", instance=config.worker_id, level=logging_settings.level, fmt=logging_settings.format
    )
    for module in config.modules:
        with contextlib.suppress(Exception):  # the worker imported them already; it reports failures
            importlib.import_module(module)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        conn.send(_run_request(conn, request))


def _run_request(conn: Connection, request: tuple[Any, ...]) -> tuple[Any, ...]:
    name, module, qualname, fields, max_bytes = request
    ctx = JobContext(*fields)
    ctx.max_bytes = max_bytes
    ctx.on_progress = lambda text: conn.send(("progress", text))
    try:
        handler = _find_handler(name, module, qualname)
        found = registry.get(name)
        if found is not None and found.settings is not None:
            ctx.settings = registry.settings_for(found)  # read once per child process
        result = handler(ctx)
    except BaseException as exc:
        return _error_reply(exc)
    if result is None:
        return ("result", None)
    try:
        return ("result", encode_json(result, what="result", max_bytes=max_bytes))
    except UnstorableValueError as exc:
        return ("refused", str(exc))


def _error_reply(exc: BaseException) -> tuple[Any, ...]:
    if isinstance(exc, Snooze):
        return ("snooze", exc.seconds)
    message = clean_text(safe_str(exc), ERROR_MAX_CHARS)
    return ("error", type(exc).__name__, message, format_error(exc), isinstance(exc, PermanentError))


def _find_handler(name: str, module: str | None, qualname: str | None) -> Any:
    found = registry.get(name)
    if found is not None and (module is None or getattr(found.handler, "__module__", None) == module):
        return found.handler
    if module and qualname and "<" not in qualname:
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        return target
    raise LookupError(
        f"job type {name!r} is not registered in the worker's child process; load its module "
        "with --import or PASSITO_JOB_MODULES"
    )


def _die_with_parent() -> None:
    """Linux: the child is killed when its parent (the fork server, which exits with the
    worker) dies, so a SIGKILLed worker leaves no child running a handler.

    The fork server exits when the last copy of its "alive" pipe's write end closes. The worker
    holds one, and the fork server hands every child another (so that the child could start
    processes of its own): a child whose handler never returns kept the fork server, and so
    itself, alive after the worker was SIGKILLed. The child starts no processes through the
    worker's fork server: it closes its copy."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        from multiprocessing import forkserver  # noqa: PLC0415 - only in the child

        server: Any = forkserver._forkserver  # multiprocessing's own, private: read above
        if server._forkserver_alive_fd is not None:
            os.close(server._forkserver_alive_fd)
            server._forkserver_alive_fd = None
    with contextlib.suppress(Exception):
        import ctypes  # noqa: PLC0415 - Linux only

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
