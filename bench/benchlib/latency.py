"""Pickup latency: from the producer's call to the handler's first line, both `time.time()`.

Every system's idle worker (one process) and its producer run at the same time; the samples go
round-robin from system to system with a short random pause between them, so a slow minute of
this machine falls on all of them alike. The bare LISTEN/NOTIFY floor is one of the systems:
INSERT + pg_notify, and a listener that claims the row on each notification.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import time
from dataclasses import dataclass

from benchlib.pickup import PickupReceiver
from benchlib.procs import Proc, stop_all
from benchlib.systems import BenchError, System, WorkerSpec

SAMPLE_TIMEOUT = 10.0
WARMUP = 5


@dataclass
class Pickups:
    system: str
    samples: list[float]  # seconds
    missed: int

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")

    @property
    def p50(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def p99(self) -> float:
        return self.percentile(0.99)


class _Producer:
    def __init__(self, system: System) -> None:
        argv, env = system.producer()
        self.proc = Proc(
            argv, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, name=f"{system.key}-producer"
        )
        assert self.proc.popen.stdout is not None
        line = self.proc.popen.stdout.readline().strip()
        if line != "ready":
            raise BenchError(f"{system.label}: the pickup producer did not start (said {line!r})")

    def go(self) -> None:
        stdin = self.proc.popen.stdin
        assert stdin is not None
        stdin.write("go\n")
        stdin.flush()

    def close(self) -> None:
        if self.proc.popen.stdin:
            self.proc.popen.stdin.close()
        self.proc.stop(30)


def _one(receiver: PickupReceiver, producer: _Producer, key: str) -> float | None:
    receiver.drain()
    producer.go()
    deadline = time.monotonic() + SAMPLE_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        try:
            report = receiver.receive(left)
        except TimeoutError:
            return None
        if report.get("system") == key:
            return float(report["t1"]) - float(report["t0"])  # type: ignore[arg-type]
    return None


def measure_pickups(
    systems: list[System], spec: WorkerSpec, samples: int, *, pause: tuple[float, float] = (0.01, 0.03)
) -> dict[str, Pickups]:
    """`samples` pickups per system, round-robin, with a random pause (seconds) between them.
    A polling worker needs pauses as long as its poll interval, so that jobs arrive at random
    points of its cycle rather than at the same point each time."""
    receiver = PickupReceiver()
    workers: list[Proc] = []
    producers: dict[str, _Producer] = {}
    one = WorkerSpec(workers=1, batch=spec.batch, concurrency=spec.concurrency)
    try:
        for system in systems:
            system.reset()
            argv, env = system.worker(0, one, pickup_addr=receiver.addr)
            workers.append(Proc(argv, env, name=f"{system.key}-pickup-worker"))
            producers[system.key] = _Producer(system)
        for system in systems:  # each worker listens and has done its first pickups
            got = [_one(receiver, producers[system.key], system.key) for _ in range(WARMUP)]
            if got[-1] is None:
                raise BenchError(f"{system.label}: no pickup within {SAMPLE_TIMEOUT:.0f}s after warm-up")
        results = {s.key: Pickups(s.key, [], 0) for s in systems}
        for index in range(samples * len(systems)):
            system = systems[index % len(systems)]
            latency = _one(receiver, producers[system.key], system.key)
            if latency is None:
                results[system.key].missed += 1
            else:
                results[system.key].samples.append(latency)
            time.sleep(random.uniform(*pause))  # idle workers, not a queue building up
        return results
    finally:
        for producer in producers.values():
            producer.close()
        stop_all(workers)
        receiver.close()
