"""Deprecated: the old home of Passito's job types and of the registry.

`passito_jobs.jobs` and its modules (`passito_jobs.jobs.registry`, `.flow`, `.tokens`, ...) keep
working for one release: importing them warns (DeprecationWarning) and loads their new homes,
`passito_jobs.registry` and `passito_jobs.outpass`. Like the old package, importing it registers
Passito's job types.
"""

import warnings

warnings.warn(
    "passito_jobs.jobs is deprecated and will be removed in the next release: import the registry "
    "from passito_jobs (or passito_jobs.registry) and Passito's job types from passito_jobs.outpass",
    DeprecationWarning,
    stacklevel=2,
)

from passito_jobs.outpass import (  # noqa: E402
    InvalidOutpassError,
    Outpass,
    OutpassFlow,
    dispatch_outpass_flow,
    dispatch_outpass_flows,
)
from passito_jobs.registry import JobContext, JobType, PermanentError, Registry, job_type, registry  # noqa: E402

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
