"""SendOutpassEmail: emails the student the outpass PDF (after GenerateOutpassPdf).

SMTP when PASSITO_SMTP_HOST is set, otherwise an `.eml` file in PASSITO_STORAGE_DIR/outbox/.
A retry after a recorded send sends nothing (outpass/mail.py `send_once`).
"""

from __future__ import annotations

from email.headerregistry import Address
from typing import Any

from passito_jobs.outpass.mail import MailConfig, message_id, new_message, send_once
from passito_jobs.outpass.model import Outpass
from passito_jobs.outpass.rendering import STATUS_LABELS, render
from passito_jobs.outpass.settings import JobSettings
from passito_jobs.outpass.storage import Storage
from passito_jobs.registry import JobContext, job_type

KIND = "student"


class MissingPdfError(FileNotFoundError):
    """The outpass PDF is not there: retried (GenerateOutpassPdf may be on a slow volume)."""


def send_outpass_email(outpass: Outpass, settings: JobSettings, *, job_id: int) -> dict[str, Any]:
    storage = Storage(settings.storage_dir)
    config = MailConfig.from_settings(settings.email)
    pdf_path = storage.pdf(outpass.outpass_id)
    try:
        pdf = pdf_path.read_bytes()
    except FileNotFoundError:
        raise MissingPdfError(
            f"no PDF at {storage.relative(pdf_path)}: GenerateOutpassPdf must complete first"
        ) from None
    context = {"outpass": outpass, "status_label": STATUS_LABELS[outpass.status]}
    message = new_message(
        config,
        to=Address(display_name=outpass.student_name, addr_spec=outpass.student_email),
        subject=f"Your outpass No. {outpass.outpass_id}: {outpass.destination}, {outpass.from_text}",
        message_id=message_id(config, outpass.outpass_id, KIND, job_id),
        text=render("student_email.txt", **context),
        html=render("student_email.html", **context),
    )
    message.add_attachment(
        pdf, maintype="application", subtype="pdf", filename=f"outpass-{outpass.outpass_id}.pdf"
    )
    return send_once(
        message, config=config, storage=storage, outpass_id=outpass.outpass_id, kind=KIND, job_id=job_id
    )


@job_type("SendOutpassEmail", timeout=120, settings=JobSettings)
def send_outpass_email_job(ctx: JobContext) -> dict[str, Any]:
    """Payload: the outpass. Result: what was sent (to, message_id, backend, file or smtp)."""
    return send_outpass_email(Outpass.from_payload(ctx.payload), ctx.settings_of(JobSettings), job_id=ctx.id)
