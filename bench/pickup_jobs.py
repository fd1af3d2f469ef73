"""The benchmark's passito-jobs job module: `passito-jobs worker --import pickup_jobs`.

`BenchPickup` takes the time on its handler's first line and sends it, with the producer's
time from the payload, to the benchmark over UDP on loopback (BENCH_PICKUP_ADDR, host:port):
pickup latency is measured from the producer's call to the handler's first line, both with
`time.time()`, the same way for every system the benchmark compares.
"""

from __future__ import annotations

import time

from benchlib.pickup import report_pickup
from passito_jobs import JobContext, job_type


@job_type("BenchPickup")
async def bench_pickup(ctx: JobContext) -> None:
    first_line = time.time()
    report_pickup(ctx.payload.get("t0"), first_line)
