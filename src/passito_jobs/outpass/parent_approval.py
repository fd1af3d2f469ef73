"""SendParentApproval: emails the parent approve and deny links with signed tokens.

Links: `PASSITO_PUBLIC_URL/outpass/approve?token=...` and `.../outpass/deny?token=...`; each
token is signed (purpose `parent-approval`) over the outpass id, its decision and an expiry
PASSITO_APPROVAL_TOKEN_TTL from now. The Passito app checks it with the same rules as
`verify_token()` (or `passito-jobs approval verify TOKEN`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from typing import Any
from urllib.parse import urlencode

from passito_jobs.outpass.mail import MailConfig, message_id, new_message, send_once
from passito_jobs.outpass.model import InvalidOutpassError, Outpass
from passito_jobs.outpass.rendering import render
from passito_jobs.outpass.settings import JobSettings
from passito_jobs.outpass.storage import Storage
from passito_jobs.outpass.tokens import PURPOSE_APPROVAL, sign_token
from passito_jobs.registry import JobContext, job_type

KIND = "parent-approval"


def approval_url(settings: JobSettings, outpass_id: str, decision: str, expires_at: datetime) -> str:
    token = sign_token(
        settings.signing_key,
        purpose=PURPOSE_APPROVAL,
        outpass_id=outpass_id,
        decision=decision,
        expires_at=expires_at,
    )
    return f"{settings.public_url}/outpass/{decision}?{urlencode({'token': token})}"


def send_parent_approval(outpass: Outpass, settings: JobSettings, *, job_id: int) -> dict[str, Any]:
    if not outpass.parent_email:
        raise InvalidOutpassError("field 'parent_email' is missing")
    storage = Storage(settings.storage_dir)
    config = MailConfig.from_settings(settings.email)
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(
        seconds=settings.outpass.approval_token_ttl
    )
    context = {
        "outpass": outpass,
        "approve_url": approval_url(settings, outpass.outpass_id, "approve", expires_at),
        "deny_url": approval_url(settings, outpass.outpass_id, "deny", expires_at),
        "expires": f"{expires_at:%d %b %Y %H:%M} UTC",
    }
    message = new_message(
        config,
        to=Address(display_name=outpass.parent_name or "", addr_spec=outpass.parent_email),
        subject=f"Outpass request from {outpass.student_name}: {outpass.destination}, {outpass.from_text}",
        message_id=message_id(config, outpass.outpass_id, KIND, job_id),
        text=render("parent_approval.txt", **context),
        html=render("parent_approval.html", **context),
    )
    return send_once(
        message,
        config=config,
        storage=storage,
        outpass_id=outpass.outpass_id,
        kind=KIND,
        job_id=job_id,
        details={"links_expire_at": expires_at.isoformat()},
    )


@job_type("SendParentApproval", timeout=120, settings=JobSettings)
def send_parent_approval_job(ctx: JobContext) -> dict[str, Any]:
    """Payload: the outpass, with parent_email. Result: what was sent."""
    return send_parent_approval(
        Outpass.from_payload(ctx.payload), ctx.settings_of(JobSettings), job_id=ctx.id
    )
