"""CleanupExpiredFiles: delete outpass files and outbox messages older than the retention.

Only the two folders the jobs write are swept: `outpasses/` and `outbox/` under
PASSITO_STORAGE_DIR. The walk works on directory file descriptors (`openat` with O_NOFOLLOW,
`unlinkat`), so it never leaves the storage root: symlinks are neither followed nor deleted,
and a directory swapped for a symlink mid-walk cannot redirect it. It keeps its own stack (no
recursion: any depth works) and a bounded number of descriptors open. A directory is removed
when the sweep emptied it, or when it is empty and itself older than the retention (a young
empty one may belong to a job that is about to write into it).

Payload: `{"dry_run": false, "retention_days": 30}`, both optional; the CronJob runs it
through `passito-jobs cleanup-expired-files`.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from passito_jobs.outpass.settings import MAX_FILE_RETENTION_DAYS, OutpassSettings
from passito_jobs.outpass.storage import OUTBOX, OUTPASSES
from passito_jobs.registry import JobContext, PermanentError, job_type

log = logging.getLogger("passito_jobs.outpass")

SWEPT = (OUTPASSES, OUTBOX)
MAX_LISTED = 200
MAX_RETENTION_DAYS = MAX_FILE_RETENTION_DAYS  # a century: the cutoff stays a valid date
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


@dataclass
class _Folder:
    """A directory on the walk's stack."""

    name: str  # in its parent
    path: str  # relative to the storage root, for the result and messages
    mtime: float
    identity: tuple[int, int]  # (st_dev, st_ino) of what was opened: a reopened fd must match
    fd: int | None  # closed (None) while deep below it, to bound the open descriptors
    names: Iterator[str]
    remaining: int = 0  # entries that stay
    removed: bool = False  # something in it was removed


class _MovedError(Exception):
    """A folder was moved while the walk was below it; its descriptor cannot be trusted."""


class _Sweep:
    """A depth-first walk with an explicit stack, so any depth works (no recursion). Each level
    holds a directory descriptor while the walk is in it; beyond OPEN_FOLDERS levels the
    shallower ones are closed, and reopened on the way back up through `..` of the child,
    checked to be the same directory (device and inode) as before."""

    OPEN_FOLDERS = 64

    def __init__(self, result: CleanupResult, cutoff: float) -> None:
        self.result = result
        self.cutoff = cutoff

    def top(self, fd: int, relative: str) -> None:
        """Sweep a top folder (its descriptor stays the caller's; the folder itself stays)."""
        identity = _identity(fd)
        stack = [_Folder("", relative, 0.0, identity, fd, iter(_names(fd)))]
        try:
            while stack:
                folder = stack[-1]
                name = next(folder.names, None)
                if name is not None:
                    child = self._entry(folder, name)
                    if child is not None:
                        stack.append(child)
                        self._limit_open(stack)
                    continue
                stack.pop()
                if stack:
                    self._leave(stack[-1], folder)
        except _MovedError as exc:
            self.result.errors.append(f"{exc}: moved during the sweep, not swept further")
        finally:
            for folder in stack[1:]:
                if folder.fd is not None:
                    os.close(folder.fd)

    def _entry(self, folder: _Folder, name: str) -> _Folder | None:
        """Handle one entry of `folder`; a subdirectory to descend into is returned."""
        assert folder.fd is not None
        result = self.result
        path = f"{folder.path}/{name}"
        try:
            info = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                result.symlinks_skipped += 1
            elif stat.S_ISDIR(info.st_mode):
                fd = os.open(name, _DIR_FLAGS, dir_fd=folder.fd)
                try:
                    return _Folder(name, path, info.st_mtime, _identity(fd), fd, iter(_names(fd)))
                except BaseException:
                    os.close(fd)
                    raise
            elif stat.S_ISREG(info.st_mode) and info.st_mtime < self.cutoff:
                if not result.dry_run:
                    os.unlink(name, dir_fd=folder.fd)
                folder.removed = True
                result.files_deleted += 1
                result.bytes_freed += info.st_size
                if len(result.files) < MAX_LISTED:
                    result.files.append(path)
                else:
                    result.more_files += 1
                return None
            # young files, and sockets or FIFOs we did not make
        except OSError as exc:
            if exc.errno not in _GONE:
                result.errors.append(f"{path}: {exc.strerror or exc}")
        folder.remaining += 1
        return None

    def _limit_open(self, stack: list[_Folder]) -> None:
        if len(stack) > self.OPEN_FOLDERS + 1:
            far = stack[-self.OPEN_FOLDERS - 1]
            if far is not stack[0] and far.fd is not None:
                os.close(far.fd)
                far.fd = None

    def _leave(self, parent: _Folder, child: _Folder) -> None:
        """Back in `parent` from `child`: close the child, and remove it if it ends up empty."""
        assert child.fd is not None
        try:
            if parent.fd is None:
                fd = os.open("..", _DIR_FLAGS, dir_fd=child.fd)
                if _identity(fd) != parent.identity:
                    os.close(fd)
                    raise _MovedError(parent.path)
                parent.fd = fd
        finally:
            os.close(child.fd)
            child.fd = None
        if child.remaining or not (child.removed or child.mtime < self.cutoff):
            parent.remaining += 1
            return
        try:
            if not self.result.dry_run:
                os.rmdir(child.name, dir_fd=parent.fd)
        except OSError as exc:
            if exc.errno not in _GONE:
                self.result.errors.append(f"{child.path}: {exc.strerror or exc}")
            parent.remaining += 1
            return
        self.result.dirs_removed += 1
        parent.removed = True


def _names(fd: int) -> list[str]:
    with os.scandir(fd) as scan:
        return [entry.name for entry in scan]


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def cleanup_expired_files(
    root: Path, *, retention_days: int, dry_run: bool = False, now: float | None = None
) -> CleanupResult:
    """Delete (or with `dry_run`, list) files under `root`'s outpasses/ and outbox/ folders
    whose modification time is more than `retention_days` days ago."""
    if not 1 <= retention_days <= MAX_RETENTION_DAYS:
        raise ValueError(f"retention_days must be between 1 and {MAX_RETENTION_DAYS}")
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
                sweep.top(fd, name)
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)
    return result


def _payload(payload: Mapping[str, Any], settings: OutpassSettings) -> tuple[bool, int]:
    unknown = set(payload) - {"dry_run", "retention_days"}
    if unknown:
        # A typo like "dryrun" must not silently turn a dry run into a real one.
        raise PermanentError(f"unknown payload field(s): {', '.join(sorted(unknown))}")
    dry_run = payload.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise PermanentError(f"field 'dry_run' must be true or false, got {dry_run!r}")
    days = payload.get("retention_days", settings.file_retention_days)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
        shown = repr(days) if len(repr(days)) <= 40 else f"{repr(days)[:40]}..."
        raise PermanentError(
            f"field 'retention_days' must be a whole number of days, at least 1 and at most "
            f"{MAX_RETENTION_DAYS}; got {shown}"
        )
    return dry_run, days


@job_type("CleanupExpiredFiles", timeout=3600, settings=OutpassSettings)
def cleanup_expired_files_job(ctx: JobContext) -> dict[str, Any]:
    """Payload: {dry_run?: bool, retention_days?: int}. Result: counts, bytes freed, files."""
    settings = ctx.settings_of(OutpassSettings)
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
