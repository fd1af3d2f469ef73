"""`dispatch_outpass_flow`: every job of one outpass, with their dependencies, atomically.

    GenerateQrCode ──▶ GenerateOutpassPdf ──▶ SendOutpassEmail
    SendParentApproval        (only when needs_parent_approval; depends on nothing, so a
                               PDF failure never keeps a parent from being asked)

All jobs are dispatched in one transaction: either every job of the flow exists, or none.
Many outpasses at once take three round trips (`dispatch_outpass_flows`). Every job of a flow
carries the tags `outpass:<id>` and `hostel:<hostel, lower case>`, so `passito-jobs jobs list
--tag outpass:4711` finds them all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from passito_jobs.database import DatabaseSettings
from passito_jobs.outpass.model import InvalidOutpassError, Outpass
from passito_jobs.queue import limits
from passito_jobs.queue.connection import Conn, connect
from passito_jobs.queue.dispatch import dispatch_many
from passito_jobs.queue.models import JobRequest
from passito_jobs.settings import ConfigError

QUEUE_FILES = "outpasses"  # QR codes and PDFs: CPU-bound
QUEUE_EMAILS = "emails"  # I/O-bound, and may wait on an SMTP server

# Later steps run first (higher priority): under a burst, workers finish the outpasses they
# started before they begin new ones, so each student waits for their own flow, not the burst.
PRIORITY_QR_CODE = 0
PRIORITY_PDF = 1
PRIORITY_EMAIL = 2


def flow_tags(outpass: Outpass) -> tuple[str, ...]:
    """The tags of every job of one outpass's flow (cut to the queue's tag length)."""
    return (
        f"outpass:{outpass.outpass_id}"[: limits.MAX_TAG_LENGTH],
        f"hostel:{outpass.hostel.lower()}"[: limits.MAX_TAG_LENGTH],
    )


@dataclass(frozen=True)
class OutpassFlow:
    """The ids of the jobs dispatched for one outpass."""

    outpass_id: str
    qr_code: int
    pdf: int
    student_email: int
    parent_approval: int | None = None

    @property
    def job_ids(self) -> list[int]:
        ids = [self.qr_code, self.pdf, self.student_email]
        return ids if self.parent_approval is None else [*ids, self.parent_approval]


def dispatch_outpass_flow(outpass: Outpass | Mapping[str, Any], *, conn: Conn | None = None) -> OutpassFlow:
    """Dispatch QR code -> PDF -> student email (+ the parent approval email when the outpass
    needs it) in one transaction; return the job ids.

    `outpass` is an `Outpass` or its payload (validated here: `InvalidOutpassError` names the
    bad field). With `conn` the jobs join its transaction (an autocommit connection gets a
    transaction of its own); without, a connection to PASSITO_DATABASE_URL is opened for the
    call.
    """
    return dispatch_outpass_flows([outpass], conn=conn)[0]


def dispatch_outpass_flows(
    outpasses: Iterable[Outpass | Mapping[str, Any]],
    *,
    conn: Conn | None = None,
    tags: Sequence[str] = (),
) -> list[OutpassFlow]:
    """`dispatch_outpass_flow` for many outpasses, in one transaction and three round trips.

    Every outpass (an `Outpass` too) is validated before anything is dispatched; the error
    names the outpass's position and the field. `tags` go on every job, after the flow's own
    (the demo tags its jobs `demo`).
    """
    checked: list[Outpass] = []
    for index, item in enumerate(outpasses):
        try:
            # An Outpass built by hand is checked too: its payload is what the jobs will read.
            checked.append(Outpass.from_payload(item.to_payload() if isinstance(item, Outpass) else item))
        except InvalidOutpassError as exc:
            raise InvalidOutpassError(f"outpass {index}: {exc}") from None
    if not checked:
        return []
    if conn is not None:
        return _dispatch(checked, conn, tuple(tags))
    database = DatabaseSettings.from_env()
    if not database.url:
        raise ConfigError("PASSITO_DATABASE_URL is not set: set it, or pass conn= to dispatch_outpass_flow")
    with connect(database.url, timeout=database.connect_timeout, prepare=database.prepare) as own:
        return _dispatch(checked, own, tuple(tags))


def _dispatch(outpasses: Sequence[Outpass], conn: Conn, extra_tags: tuple[str, ...]) -> list[OutpassFlow]:
    payloads = [outpass.to_payload() for outpass in outpasses]
    tags = [flow_tags(outpass) + extra_tags for outpass in outpasses]
    asking = [i for i, outpass in enumerate(outpasses) if outpass.needs_parent_approval]
    # Same rule as dispatch_many: join the caller's transaction, or make one in autocommit
    # (psycopg's transaction() on a non-autocommit connection would commit the caller's work).
    atomic = conn.transaction() if conn.autocommit else contextlib.nullcontext()
    with atomic:
        first = dispatch_many(
            [
                JobRequest(
                    "GenerateQrCode", payload, queue=QUEUE_FILES, priority=PRIORITY_QR_CODE, tags=tagged
                )
                for payload, tagged in zip(payloads, tags, strict=True)
            ]
            + [
                JobRequest(
                    "SendParentApproval",
                    payloads[i],
                    queue=QUEUE_EMAILS,
                    priority=PRIORITY_EMAIL,
                    tags=tags[i],
                )
                for i in asking
            ],
            conn=conn,
        )
        qr_codes, approvals = first[: len(payloads)], dict(zip(asking, first[len(payloads) :], strict=True))
        pdfs = dispatch_many(
            [
                JobRequest(
                    "GenerateOutpassPdf",
                    payload,
                    queue=QUEUE_FILES,
                    priority=PRIORITY_PDF,
                    depends_on=(qr,),
                    tags=tagged,
                )
                for payload, qr, tagged in zip(payloads, qr_codes, tags, strict=True)
            ],
            conn=conn,
        )
        emails = dispatch_many(
            [
                JobRequest(
                    "SendOutpassEmail",
                    payload,
                    queue=QUEUE_EMAILS,
                    priority=PRIORITY_EMAIL,
                    depends_on=(pdf,),
                    tags=tagged,
                )
                for payload, pdf, tagged in zip(payloads, pdfs, tags, strict=True)
            ],
            conn=conn,
        )
    return [
        OutpassFlow(
            outpass_id=outpass.outpass_id,
            qr_code=qr_codes[i],
            pdf=pdfs[i],
            student_email=emails[i],
            parent_approval=approvals.get(i),
        )
        for i, outpass in enumerate(outpasses)
    ]
