"""Passito, the outpass app, as a plug-in of the passito-jobs engine: its job types (QR codes,
outpass PDFs, student and parent emails, file cleanup), their model, templates, storage, mail,
signed tokens and settings.

Importing this package registers its job types: that is the plug-in load. Workers load it with
`passito-jobs worker --import passito_jobs.outpass` (or PASSITO_JOB_MODULES), as the chart, the
worker image, `make run` and the demo do; such a worker refuses to start without
PASSITO_SECRET_KEY (outpass/settings.py). The engine (queue, registry, worker, supervisor,
health) never imports it. Heavy libraries (WeasyPrint, qrcode, Jinja2: the `worker` extra) load
only when a job runs.
"""

from passito_jobs.outpass import cleanup as cleanup
from passito_jobs.outpass import outpass_email as outpass_email
from passito_jobs.outpass import outpass_pdf as outpass_pdf
from passito_jobs.outpass import parent_approval as parent_approval
from passito_jobs.outpass import qr_code as qr_code
from passito_jobs.outpass.flow import OutpassFlow, dispatch_outpass_flow, dispatch_outpass_flows
from passito_jobs.outpass.model import InvalidOutpassError, Outpass
from passito_jobs.outpass.settings import EmailSettings, JobSettings, OutpassSettings

JOB_TYPES = (
    "GenerateQrCode",
    "GenerateOutpassPdf",
    "SendOutpassEmail",
    "SendParentApproval",
    "CleanupExpiredFiles",
)

__all__ = [
    "JOB_TYPES",
    "EmailSettings",
    "InvalidOutpassError",
    "JobSettings",
    "Outpass",
    "OutpassFlow",
    "OutpassSettings",
    "dispatch_outpass_flow",
    "dispatch_outpass_flows",
]
