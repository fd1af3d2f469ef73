"""Finished attempts waiting to be recorded, and what happens when the database refuses them.

The claim loop sends the buffered outcomes and the next claim in one pipelined round trip: one
implicit transaction, so when the database refuses one statement nothing of the round trip is
applied. Then each outcome is sent on its own, to find the one refused: that job is recorded as
failed for good with the reason, and if even that is refused, it is left to the rescue and
logged with its id. No outcome is ever re-sent forever.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from passito_jobs.queue.asyncstore import AsyncStore, Completed, Failed, Snoozed
from passito_jobs.queue.errors import DatabaseUnavailableError, clean_text, first_line
from passito_jobs.worker.failures import ERROR_MAX_CHARS

log = logging.getLogger("passito_jobs.worker")


@dataclass
class Outcomes:
    completed: list[Completed] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    snoozed: list[Snoozed] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.completed or self.failed or self.snoozed)

    def __len__(self) -> int:
        return len(self.completed) + len(self.failed) + len(self.snoozed)

    def restore(self, earlier: Outcomes) -> None:
        """Put back outcomes a failed round trip did not record, ahead of newer ones."""
        self.completed[:0] = earlier.completed
        self.failed[:0] = earlier.failed
        self.snoozed[:0] = earlier.snoozed

    def each(self) -> list[Outcomes]:
        """One Outcomes per outcome."""
        return (
            [Outcomes(completed=[c]) for c in self.completed]
            + [Outcomes(failed=[f]) for f in self.failed]
            + [Outcomes(snoozed=[s]) for s in self.snoozed]
        )


async def settle_one_by_one(store: AsyncStore, pending: Outcomes) -> tuple[Outcomes, Exception | None]:
    """Record each outcome in its own statement; one the database refuses fails its job.

    Returns what is still to send and the connection error that cut this short, if one did.
    """
    items = pending.each()
    for index, one in enumerate(items):
        try:
            await store.settle_and_claim(one.completed, one.failed, None, 0, snoozed=one.snoozed)
        except Exception as exc:
            if isinstance(exc, DatabaseUnavailableError):
                return _merged(items[index:]), exc
            unsent, lost = await _record_refused(store, one, exc)
            if lost is not None:
                return _merged([Outcomes(failed=[unsent]), *items[index + 1 :]]), lost
    return Outcomes(), None


async def _record_refused(
    store: AsyncStore, one: Outcomes, refused: Exception
) -> tuple[Failed, Exception | None]:
    """The database refused one outcome on its own: record the attempt as a permanent failure
    saying why. If even that is refused, leave the job to the rescue (it stays processing,
    unheld, until PASSITO_STUCK_AFTER) and say so loudly. Returns the failure and the
    connection error that kept it from being recorded, if one did."""
    item = (one.completed or one.failed or one.snoozed)[0]
    job_id, attempt = item[0], item[1]
    what = "result" if one.completed else "failure" if one.failed else "snooze"
    reason = f"the database refused to record this attempt's {what}: {first_line(refused)}"
    if one.failed:
        reason += f"\nThe failure was: {one.failed[0][2]}"
    final: Failed = (job_id, attempt, clean_text(reason, ERROR_MAX_CHARS), None)
    try:
        await store.settle_and_claim([], [final], None, 0)
    except Exception as again:
        if isinstance(again, DatabaseUnavailableError):
            return final, again
        log.error(
            "Could not record any outcome of Job #%d: %s; then %s. The job stays processing and is "
            "rescued after PASSITO_STUCK_AFTER",
            job_id,
            reason.splitlines()[0],
            first_line(again),
            extra={"tag": "FAIL"},
        )
        return final, None
    log.error(
        "Failed Job #%d (attempt %d): %s", job_id, attempt, reason.splitlines()[0], extra={"tag": "FAIL"}
    )
    return final, None


def _merged(items: list[Outcomes]) -> Outcomes:
    outcomes = Outcomes()
    for one in items:
        outcomes.completed += one.completed
        outcomes.failed += one.failed
        outcomes.snoozed += one.snoozed
    return outcomes
