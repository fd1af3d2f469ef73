"""`make bench` and `make bench-peers` keep working: each benchmark runs end to end at a tiny size.

Speed is not asserted here (docs/benchmarks.md records it); only that a user who runs the
benchmarks gets their numbers, with every job checked, instead of an error. PgQueuer's part
needs the `bench` extra: without it that part is skipped, except under CI=true.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"
HAVE_PGQUEUER = all(importlib.util.find_spec(m) for m in ("pgqueuer", "asyncpg", "uvloop"))
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def run_bench(script: str, *args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    if database_url:
        env["PASSITO_BENCH_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def last_json(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def peer_systems() -> str:
    if HAVE_PGQUEUER:
        return "passito,pgqueuer,raw"
    if os.environ.get("CI") == "true":
        pytest.fail("the bench extra (pgqueuer, asyncpg, uvloop, matplotlib) must be installed under CI")
    return "passito,raw"


@pytest.mark.slow
def test_queue_benchmark_reports_its_numbers(database_url: str) -> None:
    done = run_bench(
        "queue_bench.py", "--jobs", "400", "--latency-samples", "5", "--json", database_url=database_url
    )
    result = last_json(done)
    for key in (
        "dispatch_jobs_per_s",
        "drain_jobs_per_s",
        "wal_bytes_per_job",
        "worker_cpu_s_per_1k_jobs",
        "pickup_latency_p50_ms",
        "pickup_latency_p99_ms",
    ):
        assert float(result[key]) > 0, result  # type: ignore[arg-type]
    assert result["pickups_missed"] == 0, result


@pytest.mark.slow
def test_outpass_benchmark_reports_its_numbers(database_url: str) -> None:
    done = run_bench(
        "outpass_bench.py",
        "--outpasses",
        "4",
        "--warmup",
        "1",
        "--workers",
        "1",
        "--json",
        database_url=database_url,
    )
    assert float(last_json(done)["outpasses_per_second"]) > 0  # type: ignore[arg-type]


@pytest.mark.slow
def test_peers_benchmark_compares_the_systems_on_its_own_server(tmp_path: Path) -> None:
    """The default path of `make bench-peers`: an embedded server it starts, every section."""
    systems = peer_systems()
    plot, numbers = tmp_path / "growth.png", tmp_path / "numbers.json"
    done = run_bench(
        "peers_bench.py",
        *("--only", systems, "--jobs", "300", "--reps", "2", "--workers", "1", "--raw-connections", "2"),
        *(
            "--latency-samples",
            "3",
            "--growth-workers",
            "1,2",
            "--growth-history",
            "0,2000",
            "--growth-reps",
            "1",
        ),
        *("--plot", str(plot), "--json", str(numbers)),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(numbers.read_text())
    keys = systems.split(",")
    assert [sorted(rep) for rep in result["reps"]] == [sorted(keys)] * 2
    for rep in result["reps"]:
        for key in keys:
            assert rep[key]["jobs"] == 300, rep[key]
            for measure in ("rate", "wal_per_job", "buffers_per_job", "commits_per_1k", "worker_cpu_per_1k"):
                assert rep[key][measure] > 0, (measure, rep[key])
            assert rep[key]["server_cpu_per_1k"] is not None, rep[key]
    assert {k: p["samples"] for k, p in result["pickups"].items()} == dict.fromkeys(keys, 3)
    assert sorted((g["workers"], g["history"]) for g in result["growth"]) == [
        (1, 0),
        (1, 2000),
        (2, 0),
        (2, 2000),
    ]
    report = done.stdout
    assert report.startswith("### "), "stdout holds the Markdown report only, worker output goes to stderr"
    assert "#### Targets" in report, report
    if "pgqueuer" in keys:
        assert "passito-jobs / PgQueuer" in report, report
    if HAVE_MATPLOTLIB:
        assert plot.read_bytes().startswith(b"\x89PNG"), "the growth plot is not a PNG"


@pytest.mark.slow
def test_peers_benchmark_compares_two_checkouts(pg_admin_url: str, tmp_path: Path) -> None:
    """`--compare PYTHON` (here this very venv) runs a second passito-jobs interleaved with the first."""
    numbers = tmp_path / "numbers.json"
    done = run_bench(
        "peers_bench.py",
        *("--only", "passito", "--compare", sys.executable, "--jobs", "200", "--reps", "2", "--workers", "1"),
        *("--latency-samples", "2", "--no-growth", "--json", str(numbers)),
        database_url=pg_admin_url,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(numbers.read_text())
    assert [sorted(rep) for rep in result["reps"]] == [["passito", "passito-b"]] * 2
    assert "(--compare)" in result["labels"]["passito-b"]
    assert f"{result['labels']['passito']} / {result['labels']['passito-b']}" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "sidekiq"], "systems are passito, pgqueuer, raw"),
        (["--reps", "0"], "must be at least 1"),
        (["--growth-history", "1000"], "needs 0"),
        (["--compare", "/nonexistent/python"], "/nonexistent/python"),
    ],
)
def test_peers_benchmark_refuses_bad_arguments_in_one_line(args: list[str], message: str) -> None:
    done = run_bench("peers_bench.py", *args)
    assert done.returncode in (1, 2), done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.slow
def test_pooler_benchmark_compares_polling_with_listen(database_url: str) -> None:
    done = run_bench(
        "pooler_bench.py", "--samples", "3", "--poll", "100ms", "--json", database_url=database_url
    )
    result = last_json(done)
    rows = {row["variant"]: row for row in result["variants"]}  # type: ignore[attr-defined]
    assert sorted(rows) == ["listen", "poll_100ms"]
    for row in rows.values():
        assert (row["samples"], row["missed"]) == (3, 0), row
        assert row["p50_ms"] > 0, row
