"""Health checks on given numbers, and the report they print (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from passito_jobs.health.checks import FAILURE_RATIO, STALE, STUCK, HealthReport, Thresholds, evaluate
from passito_jobs.health.report import render_text, to_json
from passito_jobs.queue.maintenance import MaintenanceResult
from passito_jobs.queue.models import QueueStats
from passito_jobs.settings import FieldError

HEALTHY_REPORT = """\
Job Queue Health Check
==================================================
Pending Jobs:    0
Processing Jobs: 0
Failed Jobs:     0
Stale Jobs:      0 (older than 5m)

✓ Job queue is healthy"""


def report(queues: list[QueueStats], thresholds: Thresholds | None = None) -> HealthReport:
    thresholds = thresholds or Thresholds()
    return HealthReport(thresholds, queues, evaluate(queues, thresholds), datetime(2025, 1, 1, tzinfo=UTC))


def test_an_empty_queue_prints_the_old_report_exactly() -> None:
    assert render_text(report([])) == HEALTHY_REPORT


def test_busy_but_healthy_queues_add_up() -> None:
    queues = [
        QueueStats("emails", pending=3, ready=2, processing=4, failed=1, completed_recently=50),
        QueueStats(
            "pdfs", pending=7, ready=7, processing=1, failed=2, completed_recently=40, failed_recently=1
        ),
    ]
    text = render_text(report(queues))
    assert text.splitlines()[2:5] == ["Pending Jobs:    10", "Processing Jobs: 5", "Failed Jobs:     3"]
    assert text.endswith("✓ Job queue is healthy")


def test_each_problem_is_named_with_its_queues_and_likely_cause() -> None:
    queues = [
        QueueStats(
            "emails",
            pending=9,
            ready=9,
            stale=4,
            oldest_ready_age=750.0,
            failed_recently=3,
            completed_recently=7,
        ),
        QueueStats("pdfs", processing=2, stuck=2, completed_recently=10),
    ]
    found = report(queues)
    assert [p.check for p in found.problems] == [STALE, STUCK, FAILURE_RATIO]
    text = render_text(found)
    assert "Stale Jobs:      4 (older than 5m)" in text
    assert "✗ Job queue is unhealthy: 3 problems found" in text
    assert "⚠ 4 jobs ready but not started for more than 5m (the oldest has waited 12m)" in text
    assert "  Queues: emails 4\n  Likely cause: no worker is running" in text
    assert "⚠ 2 jobs processing without a heartbeat for more than 1m" in text
    assert "  Queues: pdfs 2\n  Likely cause: workers crashed or were killed mid-job" in text
    # 3 failed of 20 finished = 15%; only emails is above the threshold (30%).
    assert "⚠ 15.0% of the jobs finished in the last 1h failed (3 of 20), above 10.0%" in text
    assert "  Queues: emails 30.0%\n  Likely cause: a job type fails on every run" in text


@pytest.mark.parametrize(
    ("completed", "failed", "unhealthy"),
    [(0, 0, False), (9, 1, False), (8, 2, True), (0, 1, True), (100, 0, False)],
)
def test_failure_ratio_threshold(completed: int, failed: int, unhealthy: bool) -> None:
    stats = QueueStats("default", completed_recently=completed, failed_recently=failed)
    problems = evaluate([stats], Thresholds(max_failure_ratio=0.10))
    assert bool(problems) is unhealthy


def test_a_rescue_is_reported() -> None:
    found = report([QueueStats("default", processing=2, stuck=2)])
    found.rescued = MaintenanceResult(rescued=[41, 42], failed=[43])
    assert render_text(found).endswith(
        "Rescued: returned 2 stuck job(s) to pending (#41, #42), failed 1 on their last attempt (#43)"
    )
    assert to_json(found)["rescued"] == {"pending": [41, 42], "failed": [43]}
    # The key of `--recover`, deprecated: the same jobs, as it named them.
    assert to_json(found)["recovered"] == {"requeued": [41, 42], "failed": [43]}


def test_json_has_totals_a_per_queue_breakdown_and_the_problems() -> None:
    queues = [
        QueueStats(
            "emails", pending=2, ready=1, oldest_ready_age=12.3456, completed_recently=3, failed_recently=1
        ),
        QueueStats("pdfs", blocked=5, processing=1, stuck=1),
    ]
    data = to_json(report(queues, Thresholds(stale_after=60, stuck_after=30, window=600)))
    assert data["healthy"] is False
    assert data["thresholds"] == {
        "stale_after_seconds": 60,
        "stuck_after_seconds": 30,
        "max_failure_ratio": 0.10,
        "max_failure_rate": 0.10,
        "window_seconds": 600,
    }
    assert data["queues"]["emails"] == {
        "blocked": 0,
        "pending": 2,
        "ready": 1,
        "stale": 0,
        "oldest_ready_age": 12.346,
        "processing": 0,
        "stuck": 0,
        "failed": 0,
        "completed_recently": 3,
        "failed_recently": 1,
        "paused": False,
        "held_back": 0,
        "failure_ratio": 0.25,
        "failure_rate": 0.25,
    }
    assert data["totals"]["blocked"] == 5
    assert data["totals"]["stuck"] == 1
    assert [(p["check"], p["queues"]) for p in data["problems"]] == [
        ("stuck", {"pdfs": 1}),
        ("failure_ratio", {"emails": 0.25}),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stale_after": 0}, "stale-after must be a positive duration"),
        ({"window": -1}, "window must be a positive duration"),
        ({"max_failure_ratio": 1.5}, "max-failure-ratio must be between 0 and 1"),
    ],
)
def test_thresholds_are_validated(kwargs: dict[str, float], message: str) -> None:
    """The error names the field; each front end spells it (here as a flag's name)."""
    with pytest.raises(FieldError) as caught:
        Thresholds(**kwargs)
    assert caught.value.field == next(iter(kwargs))
    assert message in caught.value.render(lambda name: name.replace("_", "-"))
