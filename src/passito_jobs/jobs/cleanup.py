"""CleanupExpiredFiles: delete outpass files and outbox messages older than the retention.

Only the two folders the jobs write are swept: `outpasses/` and `outbox/` under
PASSITO_STORAGE_DIR. The walk works on directory file descriptors (`openat` with O_NOFOLLOW,
`unlinkat`), so it never leaves the storage root: symlinks are neither followed nor deleted,
and a directory swapped for a symlink mid-walk cannot redirect it. A directory is removed when
the sweep emptied it, or when it is empty and itself older than the retention (a young empty
one may belong to a job that is about to write into it).

Payload: `{"dry_run": false, "retention_days": 30}`, both optional; the CronJob runs it
through `passito-jobs cleanup-expired-files`.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from passito_jobs.config import Settings
from passito_jobs.jobs.registry import JobContext, PermanentError, job_type
from passito_jobs.jobs.storage import OUTBOX, OUTPASSES

log = logging.getLogger("passito_jobs.jobs")

SWEPT = (OUTPASSES, OUTBOX)
MAX_LISTED = 200
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_GONE = (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST)  # a concurrent job got there first


@dataclass
class CleanupResult:
    """What a sweep deleted (with `dry_run`: what it would delete)."""

    dry_run: bool
    retention_days: int
    cutoff: str
    files_deleted: int = 0
    bytes_freed: int = 0
    dirs_removed: int = 0
    symlinks_skipped: int = 0
    files: list[str] = field(default_factory=list)
    more_files: int = 0  # deleted but not listed in `files`
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["errors"] = len(self.errors)
        return data


class _Sweep:
    def __init__(self, result: CleanupResult, cutoff: float) -> None:
        self.result = result
        self.cutoff = cutoff

    def directory(self, dir_fd: int, relative: str) -> tuple[bool, bool]:
        """Sweep one open directory; return (empty afterwards, something in it was removed)."""
        result = self.result
        remaining = 0
        removed = False
        with os.scandir(dir_fd) as scan:
            entries = list(scan)
        for entry in entries:
            path = f"{relative}/{entry.name}"
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    result.symlinks_skipped += 1
                    remaining += 1
                elif stat.S_ISDIR(info.st_mode):
                    if self._subdirectory(dir_fd, entry.name, path, info):
                        removed = True
                    else:
                        remaining += 1
                elif stat.S_ISREG(info.st_mode) and info.st_mtime < self.cutoff:
                    if not result.dry_run:
                        os.unlink(entry.name, dir_fd=dir_fd)
                    removed = True
                    result.files_deleted += 1
                    result.bytes_freed += info.st_size
                    if len(result.files) < MAX_LISTED:
                        result.files.append(path)
                    else:
                        result.more_files += 1
                else:
                    remaining += 1  # young files, and sockets or FIFOs we did not make
            except OSError as exc:
                if exc.errno not in _GONE:
                    result.errors.append(f"{path}: {exc.strerror or exc}")
                remaining += 1
        return remaining == 0, removed

    def _subdirectory(self, parent_fd: int, name: str, path: str, info: os.stat_result) -> bool:
        """Sweep a child directory; remove it if it ends up empty. True if it was removed."""
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        try:
            empty, removed = self.directory(fd, path)
        finally:
            os.close(fd)
        if not empty or not (removed or info.st_mtime < self.cutoff):
            return False
        if not self.result.dry_run:
            os.rmdir(name, dir_fd=parent_fd)
        self.result.dirs_removed += 1
        return True


def cleanup_expired_files(
    root: Path, *, retention_days: int, dry_run: bool = False, now: float | None = None
) -> CleanupResult:
    """Delete (or with `dry_run`, list) files under `root`'s outpasses/ and outbox/ folders
    whose modification time is more than `retention_days` days ago."""
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    result = CleanupResult(
        dry_run=dry_run,
        retention_days=retention_days,
        cutoff=datetime.fromtimestamp(cutoff, UTC).isoformat(timespec="seconds"),
    )
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return result  # nothing was ever stored
    sweep = _Sweep(result, cutoff)
    try:
        for name in SWEPT:
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                # Not a directory; if it is a symlink (to anywhere), it is not ours to follow.
                if stat.S_ISLNK(os.stat(name, dir_fd=root_fd, follow_symlinks=False).st_mode):
                    result.symlinks_skipped += 1
                continue
            try:
                sweep.directory(fd, name)  # the top folders themselves stay
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)
    return result


def _payload(payload: Mapping[str, Any], settings: Settings) -> tuple[bool, int]:
    unknown = set(payload) - {"dry_run", "retention_days"}
    if unknown:
        # A typo like "dryrun" must not silently turn a dry run into a real one.
        raise PermanentError(f"unknown payload field(s): {', '.join(sorted(unknown))}")
    dry_run = payload.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise PermanentError(f"field 'dry_run' must be true or false, got {dry_run!r}")
    days = payload.get("retention_days", settings.file_retention_days)
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise PermanentError(
            f"field 'retention_days' must be a whole number of days, at least 1; got {days!r}"
        )
    return dry_run, days


@job_type("CleanupExpiredFiles", timeout=3600)
def cleanup_expired_files_job(ctx: JobContext) -> dict[str, Any]:
    """Payload: {dry_run?: bool, retention_days?: int}. Result: counts, bytes freed, files."""
    settings = Settings.from_env()
    dry_run, days = _payload(ctx.payload, settings)
    root = Path(os.path.abspath(settings.storage_dir))
    result = cleanup_expired_files(root, retention_days=days, dry_run=dry_run)
    verb = "Would delete" if dry_run else "Deleted"
    if result.files_deleted or result.dirs_removed or result.errors:
        ctx.logger.info(
            "%s %d file(s) (%d bytes) and %d folder(s) older than %d days under %s",
            verb,
            result.files_deleted,
            result.bytes_freed,
            result.dirs_removed,
            days,
            root,
        )
    if result.errors:
        # Fail (and retry, then land in the dead-letter set) so that a cleanup that cannot
        # delete is noticed; what was deleted stays deleted, and a retry resumes the sweep.
        raise OSError(
            f"could not delete {len(result.errors)} path(s) under {root}, first: {result.errors[0]} "
            f"({result.files_deleted} file(s), {result.bytes_freed} bytes were deleted)"
        )
    return result.as_dict()
