"""passito-jobs: a Postgres-backed job queue with workers, autoscaling and health checks.

The public API:

    from passito_jobs import dispatch, dispatch_many, job_type, JobContext, PermanentError
    from passito_jobs import Snooze, dispatch_batch, periodic, wait

    job_id = dispatch("GenerateQrCode", {"outpass_id": 42}, queue="outpasses")
    result = wait(job_id, timeout=30)  # the handler's return value, or JobFailedError

    periodic("nightly-report", "SendReport", cron="0 6 * * *", timezone="Europe/Berlin")
    raise Snooze(60)  # in a handler: run again in a minute, without spending an attempt

    # Three jobs, then a report once all three ended, however: its ctx.parents says how.
    dispatch_batch([{"type": "Resize", "payload": {"n": n}} for n in range(3)], on_finish="Report")

Importing it loads no job type (Passito's are a plug-in: `passito_jobs.outpass`) and no
rendering library. `dispatch` without `conn=` connects where the CLI does: PASSITO_DATABASE_URL,
or the embedded PostgreSQL (started if needed) when it is unset.
"""

from passito_jobs.config import install_dispatch_defaults
from passito_jobs.queue.dispatch import Batch, dispatch, dispatch_batch, dispatch_many
from passito_jobs.queue.errors import (
    DatabaseUnavailableError,
    InvalidJobError,
    JobDataError,
    QueryTimeoutError,
    QueueError,
    SchemaMissingError,
)
from passito_jobs.queue.models import Job, JobRequest, JobState, ParentOutcome
from passito_jobs.queue.results import JobFailedError, JobNotFoundError, WaitTimeoutError, wait
from passito_jobs.registry import JobContext, PermanentError, Snooze, job_type, periodic

install_dispatch_defaults()

__all__ = [
    "Batch",
    "DatabaseUnavailableError",
    "InvalidJobError",
    "Job",
    "JobContext",
    "JobDataError",
    "JobFailedError",
    "JobNotFoundError",
    "JobRequest",
    "JobState",
    "ParentOutcome",
    "PermanentError",
    "QueryTimeoutError",
    "QueueError",
    "SchemaMissingError",
    "Snooze",
    "WaitTimeoutError",
    "dispatch",
    "dispatch_batch",
    "dispatch_many",
    "job_type",
    "periodic",
    "wait",
]
