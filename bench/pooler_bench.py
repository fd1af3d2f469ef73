"""What polling costs (`PASSITO_LISTEN=false`, for PgBouncer in transaction pooling): pickup
latency of an idle worker that LISTENs against idle workers that poll, at several poll
intervals.

    python bench/pooler_bench.py [--samples 60] [--poll 2s,500ms,100ms] [--json]

Each variant is passito-jobs with its own database and its own idle worker process on one
server; the samples go round-robin from variant to variant (benchlib/latency.py), so a slow
minute of this machine falls on all of them alike, with random pauses up to the longest poll
interval in between, so that jobs arrive at random points of each worker's poll cycle. Pickup
latency runs from the producer's `dispatch()` call to the handler's first line. The medians are
compared within the run.

A busy worker pays nothing for polling: after each finished job it claims again at once; only
the first job after an idle spell waits for the next poll.
"""

from __future__ import annotations

import argparse
import json
import sys

from benchlib.latency import Pickups, measure_pickups
from benchlib.report import machine_line
from benchlib.server import ServerError, server_for_bench
from benchlib.systems import BenchError, Passito, WorkerSpec
from passito_jobs.settings import parse_duration


class Variant(Passito):
    """passito-jobs with settings of its own (PASSITO_LISTEN, PASSITO_POLL_INTERVAL)."""

    def __init__(self, key: str, label: str, settings: dict[str, str]) -> None:
        super().__init__(key, label)
        self.settings = settings

    def _env(self, url: str | None = None, **extra: str) -> dict[str, str]:
        return super()._env(url, **{**self.settings, **extra})


def _variants(polls: list[str]) -> list[Variant]:
    found = [Variant("listen", "LISTEN (default, poll 2s)", {})]
    for poll in polls:
        key = f"poll_{poll.replace('.', '_')}"
        settings = {"PASSITO_LISTEN": "false", "PASSITO_POLL_INTERVAL": poll}
        found.append(Variant(key, f"PASSITO_LISTEN=false, poll {poll}", settings))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=60, help="pickups per variant")
    parser.add_argument("--poll", default="2s,500ms,100ms", help="poll intervals of the polling variants")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    polls = [p.strip() for p in args.poll.split(",") if p.strip()]
    if args.samples < 1 or not polls:
        parser.error("--samples must be at least 1 and --poll must name an interval")
    variants = _variants(polls)
    try:
        with server_for_bench() as server:
            for variant in variants:
                variant.prepare(server, f"bench_{variant.key}")
            longest = max(parse_duration(poll) for poll in polls)
            pickups = measure_pickups(variants, WorkerSpec(1, 100, 10), args.samples, pause=(0.01, longest))
            machine = machine_line(server)
    except (BenchError, ServerError) as exc:
        print(f"pooler_bench: {exc}", file=sys.stderr)
        return 1
    listen = pickups["listen"].p50
    rows = [_row(v, pickups[v.key], listen) for v in variants]
    if args.json:
        print(json.dumps({"machine": machine, "samples": args.samples, "variants": rows}))
        return 0
    print(f"machine: {machine}")
    print(f"{'variant':<36} {'samples':>7} {'p50 ms':>9} {'p99 ms':>9} {'p50 / LISTEN':>12}")
    for row in rows:
        print(
            f"{row['label']:<36} {row['samples']:>7} {row['p50_ms']:>9} {row['p99_ms']:>9} "
            f"{row['p50_vs_listen']:>11}x"
        )
    return 0


def _row(variant: Variant, got: Pickups, listen_p50: float) -> dict[str, object]:
    return {
        "variant": variant.key,
        "label": variant.label,
        "samples": len(got.samples),
        "missed": got.missed,
        "p50_ms": round(got.p50 * 1000, 1),
        "p99_ms": round(got.p99 * 1000, 1),
        "p50_vs_listen": round(got.p50 / listen_p50, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
