"""Passito's job types (one module each) and the registry they are registered in."""

from passito_jobs.jobs import builtin as builtin
from passito_jobs.jobs.registry import (
    JobContext,
    JobType,
    PermanentError,
    Registry,
    job_type,
    registry,
)

__all__ = ["JobContext", "JobType", "PermanentError", "Registry", "job_type", "registry"]
