"""passito-jobs: a Postgres-backed job queue with workers, autoscaling and health checks.

The public API:

    from passito_jobs import dispatch, dispatch_many, job_type, JobContext, PermanentError

    job_id = dispatch("GenerateQrCode", {"outpass_id": 42}, queue="outpasses")
"""

from passito_jobs.jobs.registry import JobContext, PermanentError, job_type
from passito_jobs.queue.dispatch import dispatch, dispatch_many
from passito_jobs.queue.models import (
    DatabaseUnavailableError,
    InvalidJobError,
    Job,
    JobRequest,
    JobState,
)

__all__ = [
    "DatabaseUnavailableError",
    "InvalidJobError",
    "Job",
    "JobContext",
    "JobRequest",
    "JobState",
    "PermanentError",
    "dispatch",
    "dispatch_many",
    "job_type",
]
