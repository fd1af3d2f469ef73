"""Passito's job types (one module each) and the registry they are registered in.

Importing this package registers every job type; the worker runs whatever is registered.
The modules import their heavy libraries (WeasyPrint, qrcode, Jinja2: the `worker` extra)
only when a job runs, so `import passito_jobs` stays light for code that only dispatches.
"""

from passito_jobs.jobs import builtin as builtin
from passito_jobs.jobs import cleanup as cleanup
from passito_jobs.jobs import outpass_email as outpass_email
from passito_jobs.jobs import outpass_pdf as outpass_pdf
from passito_jobs.jobs import parent_approval as parent_approval
from passito_jobs.jobs import qr_code as qr_code
from passito_jobs.jobs.flow import OutpassFlow, dispatch_outpass_flow, dispatch_outpass_flows
from passito_jobs.jobs.outpass import InvalidOutpassError, Outpass
from passito_jobs.jobs.registry import (
    JobContext,
    JobType,
    PermanentError,
    Registry,
    job_type,
    registry,
)

__all__ = [
    "InvalidOutpassError",
    "JobContext",
    "JobType",
    "Outpass",
    "OutpassFlow",
    "PermanentError",
    "Registry",
    "dispatch_outpass_flow",
    "dispatch_outpass_flows",
    "job_type",
    "registry",
]
