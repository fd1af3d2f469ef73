"""`make bench` keeps working: both benchmarks run end to end at a tiny size and report numbers.

Speed is not asserted here (docs/benchmarks.md records it); only that a user who runs the
benchmarks gets results instead of an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"


def run_bench(script: str, *args: str, database_url: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    env["PASSITO_BENCH_DATABASE_URL"] = database_url
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_queue_benchmark_reports_its_numbers(database_url: str) -> None:
    result = run_bench("queue_bench.py", "--jobs", "400", "--latency-samples", "5", database_url=database_url)
    for key in ("dispatch_jobs_per_s", "drain_jobs_per_s", "pickup_latency_p50_ms", "pickup_latency_p99_ms"):
        assert float(result[key]) > 0, result  # type: ignore[arg-type]


@pytest.mark.slow
def test_outpass_benchmark_reports_its_numbers(database_url: str) -> None:
    result = run_bench(
        "outpass_bench.py", "--outpasses", "4", "--warmup", "1", "--workers", "1", database_url=database_url
    )
    assert float(result["outpasses_per_second"]) > 0, result  # type: ignore[arg-type]
