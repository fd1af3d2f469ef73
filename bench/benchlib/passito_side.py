"""passito-jobs' side of the benchmark, run in the measured checkout's own Python.

    python -m benchlib.passito_side fill N      dispatch N Noop jobs with one dispatch_many call
    python -m benchlib.passito_side produce     for each line on stdin, dispatch one BenchPickup

Only the public API is used (`passito_jobs.dispatch`, `dispatch_many`, `JobRequest`), with
PASSITO_DATABASE_URL from the environment, so two checkouts can be compared (`--compare`).
"""

from __future__ import annotations

import json
import sys
import time

from passito_jobs import JobRequest, dispatch, dispatch_many


def fill(jobs: int) -> None:
    requests = [JobRequest("Noop", {"n": i}) for i in range(jobs)]
    started = time.perf_counter()
    dispatch_many(requests)
    print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)


def produce() -> None:
    dispatch("Noop")  # connect and warm up before the first measured call
    print("ready", flush=True)
    for _ in sys.stdin:
        t0 = time.time()
        dispatch("BenchPickup", {"t0": t0})


def main() -> int:
    command = sys.argv[1]
    if command == "fill":
        fill(int(sys.argv[2]))
    elif command == "produce":
        produce()
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
