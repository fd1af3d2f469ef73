"""Sending the outpass jobs' emails: SMTP, or `.eml` files when no SMTP host is set.

`send_once` is what the email jobs call. It sends one message and then atomically writes a
"sent" marker keyed by outpass, kind and job id; a retry of the same job finds the marker and
sends nothing. (A worker killed between the SMTP server's "250 OK" and the marker write would
send again on retry: at-least-once, with a stable Message-ID so mail clients can tell.)

Headers are built with `email.headerregistry.Address` and `email.policy.SMTP`, never by
pasting strings; values that reach headers were already checked for line breaks.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any

from passito_jobs.outpass.settings import EmailSettings
from passito_jobs.outpass.storage import Storage
from passito_jobs.registry import PermanentError

log = logging.getLogger("passito_jobs.outpass")

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


@dataclass(frozen=True)
class MailConfig:
    """SMTP settings (docs/configuration.md, group Email); `host=None` means the file backend."""

    host: str | None
    port: int
    security: str
    user: str | None
    password: str | None = field(repr=False)  # never in logs or tracebacks
    sender: Address
    timeout: float
    ca_file: Path | None

    @classmethod
    def from_settings(cls, settings: EmailSettings) -> MailConfig:
        name, address = parseaddr(settings.sender)
        return cls(
            host=settings.host,
            port=settings.port or DEFAULT_PORTS[settings.security],
            security=settings.security,
            user=settings.user,
            password=settings.password,
            sender=Address(display_name=name, addr_spec=address),
            timeout=settings.timeout,
            ca_file=settings.ca_file,
        )

    @property
    def backend(self) -> str:
        return "smtp" if self.host else "file"


def new_message(
    config: MailConfig,
    *,
    to: Address,
    subject: str,
    message_id: str,
    text: str,
    html: str,
) -> EmailMessage:
    """A multipart/alternative message (plain text and HTML) with safe headers."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = config.sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def message_id(config: MailConfig, outpass_id: str, kind: str, job_id: int) -> str:
    """The same Message-ID on every attempt of a job: a duplicate is recognisable."""
    domain = config.sender.domain or "localhost"
    return f"<outpass-{outpass_id}.{kind}.job-{job_id}@{domain}>"


def send_once(
    message: EmailMessage,
    *,
    config: MailConfig,
    storage: Storage,
    outpass_id: str,
    kind: str,
    job_id: int,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Send `message` unless this job already did; return what was sent (the job's result,
    with `details` added)."""
    marker = storage.sent_marker(outpass_id, kind, job_id)
    recorded = storage.read_json(marker)
    if recorded is not None:
        log.info(
            "Email %s for outpass %s was already sent by an earlier attempt; not sending again",
            kind,
            outpass_id,
            extra={"job_id": job_id},
        )
        return {**recorded, "already_sent": True}
    result: dict[str, Any] = {
        "outpass_id": outpass_id,
        "kind": kind,
        "to": str(message["To"].addresses[0].addr_spec),
        "message_id": str(message["Message-ID"]),
        "backend": config.backend,
        **(details or {}),
    }
    if config.host:
        _send_smtp(config, message)
        result["smtp"] = f"{config.host}:{config.port}"
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = storage.outbox_message(stamp, outpass_id, kind, job_id)
        storage.write_atomic(path, message.as_bytes())
        result["file"] = storage.relative(path)
        log.info(
            "No PASSITO_SMTP_HOST: wrote the %s email for outpass %s to %s",
            kind,
            outpass_id,
            path,
            extra={"job_id": job_id},
        )
    result["sent_at"] = datetime.now(UTC).isoformat()
    storage.write_json_atomic(marker, result)
    return {**result, "already_sent": False}


def _send_smtp(config: MailConfig, message: EmailMessage) -> None:
    assert config.host is not None
    context = ssl.create_default_context(cafile=config.ca_file)
    # An explicit EHLO name: smtplib's default (getfqdn) can stall on reverse DNS in containers.
    local_name = socket.gethostname()
    smtp: smtplib.SMTP
    try:
        if config.security == "tls":
            smtp = smtplib.SMTP_SSL(
                config.host, config.port, local_name, timeout=config.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(config.host, config.port, local_name, timeout=config.timeout)
        with smtp:
            smtp.ehlo()
            if config.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if config.user is not None:
                smtp.login(config.user, config.password or "")
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {code for code, _ in exc.recipients.values()}
        if all(500 <= code < 600 for code in codes):
            # 5xx: the server will never take this address; retrying cannot help.
            detail = "; ".join(
                f"{rcpt}: {code} {text.decode(errors='replace')}"
                for rcpt, (code, text) in exc.recipients.items()
            )
            raise PermanentError(f"the SMTP server refused the recipient ({detail})") from None
        raise
