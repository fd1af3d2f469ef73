"""Sample outpasses and settings for the outpass job tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from passito_jobs.outpass.settings import JobSettings
from passito_jobs.registry import JobContext
from tests.conftest import TEST_SECRET_KEY

PUBLIC_URL = "https://passito.example.edu"


def sample_payload(**changes: Any) -> dict[str, Any]:
    """A valid outpass payload; `changes` override fields (None removes one)."""
    payload: dict[str, Any] = {
        "outpass_id": 42,
        "student_name": "Aanya Sharma",
        "student_email": "aanya.sharma@example.org",
        "roll_number": "CS21B042",
        "hostel": "Kaveri",
        "room": "214",
        "destination": "Chennai Central",
        "reason": "Sister's wedding",
        "from_date": "2025-03-01T09:00:00+05:30",
        "to_date": "2025-03-03T18:00:00+05:30",
        "status": "approved",
        "parent_name": "Rohan Sharma",
        "parent_email": "rohan.sharma@example.org",
        "needs_parent_approval": True,
    }
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


def job_settings(storage: Path, **env: str) -> JobSettings:
    """Settings as a worker with this storage directory and the test key would read them."""
    return JobSettings.from_env(
        {
            "PASSITO_STORAGE_DIR": str(storage),
            "PASSITO_SECRET_KEY": TEST_SECRET_KEY,
            "PASSITO_PUBLIC_URL": PUBLIC_URL,
            **env,
        }
    )


def context(type: str, payload: dict[str, Any], *, job_id: int = 7, attempt: int = 1) -> JobContext:
    """What the worker hands a handler for attempt `attempt` of job `job_id`."""
    return JobContext(job_id, type, "default", payload, attempt, 3, "test-worker")
