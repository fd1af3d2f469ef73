"""Jobs, workers and audit entries as the API's JSON, with personal data masked for viewers.

Masking (PASSITO_WEB_MASK_FIELDS) replaces the value of every payload, result and progress field
of those names, at any depth, with MASK; the masked values are also blotted out of the job's
error text (an SMTP server's refusal quotes the address it refused).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from passito_jobs.queue.admin import AuditEntry, JobSummary, Relative, WorkerSeen
from passito_jobs.queue.models import FAR_FUTURE, FAR_PAST, Job, JobFlow, ScheduleRow

MASK = "•••"
MAX_DEPTH = 200
"""Deeper values (rows stored before the nesting limit) are shown as MASK_DEEP."""
MASK_DEEP = "… (nested too deeply to show)"
_ERROR_KIND = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,99}")
"""An exception's (dotted) name: what a viewer sees of an error in the jobs list."""
MIN_SCRUBBED = 3
"""Masked values shorter than this are not searched for in error text (it would garble it)."""


def when(moment: datetime | None) -> str | None:
    """A stored time as ISO 8601; times Python cannot hold read as infinity."""
    if moment is None:
        return None
    if moment == FAR_FUTURE:
        return "infinity"
    if moment == FAR_PAST:
        return "-infinity"
    return moment.isoformat()


@dataclass(frozen=True)
class Masker:
    """Masks the named fields for viewers; admins (enabled=False) see everything."""

    fields: frozenset[str]
    enabled: bool

    def value(self, data: Any) -> Any:
        if not self.enabled or not self.fields:
            return json_safe(data)
        return self._mask(data, 0)

    def _mask(self, data: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            return MASK_DEEP
        if isinstance(data, dict):
            return {
                key: MASK if key in self.fields else self._mask(item, depth + 1) for key, item in data.items()
            }
        if isinstance(data, list):
            return [self._mask(item, depth + 1) for item in data]
        return json_safe(data)

    def secrets(self, *values: Any) -> list[str]:
        """The text of every masked field in `values`, longest first."""
        if not self.enabled or not self.fields:
            return []
        found: set[str] = set()
        stack: list[tuple[Any, int]] = [(v, 0) for v in values]
        while stack:
            data, depth = stack.pop()
            if depth > MAX_DEPTH:
                continue
            if isinstance(data, dict):
                for key, item in data.items():
                    if key in self.fields:
                        found |= set(_texts(item))
                    else:
                        stack.append((item, depth + 1))
            elif isinstance(data, list):
                stack.extend((item, depth + 1) for item in data)
        return sorted((s for s in found if len(s) >= MIN_SCRUBBED), key=len, reverse=True)

    def error_line(self, error_head: str | None) -> str | None:
        """The first line of a job's error, as a row of the jobs list shows it. A row carries no
        payload to find the masked values in, so a viewer sees only the kind of error (an
        exception's name before the colon) and MASK for the rest; the job's page shows the text
        with the masked values blotted out."""
        lines = (error_head or "").strip().splitlines()
        if not lines:
            return None
        line = lines[0]
        if not self.enabled or not self.fields:
            return line
        kind, colon, _ = line.partition(":")
        if colon and _ERROR_KIND.fullmatch(kind):
            return f"{kind}: {MASK}"
        return MASK

    def text(self, text: str | None, secrets: Iterable[str]) -> str | None:
        if text is None:
            return None
        for secret in secrets:
            text = text.replace(secret, MASK)
        return text


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, list | dict):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _texts(item)


def json_safe(data: Any) -> Any:
    """JSON has no NaN or Infinity (a jsonb value never holds one, but be sure)."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def job_summary(job: JobSummary, masker: Masker) -> dict[str, Any]:
    return {
        "id": job.id,
        "queue": job.queue,
        "type": job.type,
        "state": job.state,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "run_at": when(job.run_at),
        "created_at": when(job.created_at),
        "started_at": when(job.started_at),
        "finished_at": when(job.finished_at),
        "worker_id": job.worker_id,
        "error": masker.error_line(job.error_head),
    }


def job_detail(job: Job, relatives: list[Relative], flow: JobFlow, masker: Masker) -> dict[str, Any]:
    secrets = masker.secrets(job.payload, job.result, job.progress)
    return {
        "id": job.id,
        "queue": job.queue,
        "type": job.type,
        "state": job.state.value,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "payload": masker.value(job.payload),
        "result": masker.value(job.result),
        "progress": masker.value(job.progress),
        "last_error": masker.text(job.last_error, secrets),
        "worker_id": job.worker_id,
        "unique_key": masker.text(job.unique_key, secrets),
        "depends_on": list(job.depends_on),
        "waiting_on": job.waiting_on,
        "run_at": when(job.run_at),
        "created_at": when(job.created_at),
        "claimed_at": when(job.claimed_at),
        "started_at": when(job.started_at),
        "heartbeat_at": when(job.heartbeat_at),
        "finished_at": when(job.finished_at),
        "parents": [_relative(r) for r in relatives if r.relation == "parent"],
        "children": [_relative(r) for r in relatives if r.relation == "child"],
        "depends_on_mode": job.depends_on_mode,
        "flow": flow.to_json(),
        "masked": masker.enabled and bool(masker.fields),
    }


def _relative(relative: Relative) -> dict[str, Any]:
    return {"id": relative.id, "type": relative.type, "queue": relative.queue, "state": relative.state}


def worker(seen: WorkerSeen) -> dict[str, Any]:
    return {
        "worker_id": seen.worker_id,
        "jobs": seen.jobs,
        "job_ids": seen.job_ids,
        "queues": seen.queues,
        "types": seen.types,
        "oldest_claim": when(seen.oldest_claim),
        "last_heartbeat": when(seen.last_heartbeat),
        "heartbeat_age_seconds": None if seen.heartbeat_age is None else round(seen.heartbeat_age, 3),
        "free_slots": seen.free_slots,
    }


def schedule(row: ScheduleRow) -> dict[str, Any]:
    data = asdict(row)
    data["state"] = "stale" if row.stale else "paused" if row.paused else "active"
    for key in ("last_slot", "next_slot", "checked_at"):
        data[key] = when(data[key])
    return data


def audit(entry: AuditEntry) -> dict[str, Any]:
    data = asdict(entry)
    data["at"] = when(entry.at)
    data.pop("job_changed")
    return data
