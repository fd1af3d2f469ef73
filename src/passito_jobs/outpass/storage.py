"""Files of the outpass jobs, under PASSITO_STORAGE_DIR.

Layout (docs/jobs.md):

    outpasses/<outpass_id>/qr.png
    outpasses/<outpass_id>/outpass.pdf
    outpasses/<outpass_id>/sent/<kind>-job-<job_id>.json   what was sent, so a retry sends nothing
    outbox/<time>-outpass-<outpass_id>-<kind>-job-<job_id>.eml   the file mail backend's messages

Paths are built only from validated outpass ids, fixed names and integers; no payload value
ever becomes a path. Every write is atomic (a temporary file in the same directory, fsync,
rename, fsync of the directory): a retried or killed job never leaves a half-written file
under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from passito_jobs.outpass.model import OUTPASS_ID

FILE_MODE = 0o640  # owner and group: in Kubernetes the shared volume's fsGroup reads them
OUTPASSES = "outpasses"
OUTBOX = "outbox"
QR_CODE = "qr.png"
PDF = "outpass.pdf"
SENT = "sent"
EMAIL_KINDS = ("student", "parent-approval")
TEMP_PREFIX = "."


class Storage:
    """The storage root and the paths of the files the jobs write."""

    def __init__(self, root: Path) -> None:
        # Resolved once, so a symlinked mount point works and every later check compares
        # against the real directory.
        self.root = Path(os.path.abspath(root)).resolve()

    def outpass_dir(self, outpass_id: str) -> Path:
        if not OUTPASS_ID.fullmatch(outpass_id):
            # Outpass.from_payload already checked; this guards every other caller.
            raise ValueError(f"not an outpass id: {outpass_id!r}")
        return self.root / OUTPASSES / outpass_id

    def qr_code(self, outpass_id: str) -> Path:
        return self.outpass_dir(outpass_id) / QR_CODE

    def pdf(self, outpass_id: str) -> Path:
        return self.outpass_dir(outpass_id) / PDF

    def sent_marker(self, outpass_id: str, kind: str, job_id: int) -> Path:
        _check_kind(kind)
        return self.outpass_dir(outpass_id) / SENT / f"{kind}-job-{int(job_id)}.json"

    @property
    def outbox(self) -> Path:
        return self.root / OUTBOX

    def outbox_message(self, stamp: str, outpass_id: str, kind: str, job_id: int) -> Path:
        _check_kind(kind)
        self.outpass_dir(outpass_id)  # validates the id
        if not stamp.isalnum():
            raise ValueError(f"not a time stamp: {stamp!r}")
        return self.outbox / f"{stamp}-outpass-{outpass_id}-{kind}-job-{int(job_id)}.eml"

    def relative(self, path: Path) -> str:
        """A path as job results show it: relative to the storage root."""
        return path.relative_to(self.root).as_posix()

    def write_atomic(self, path: Path, data: bytes) -> None:
        """Write `data` to `path` so that `path` is either absent, old, or complete."""
        if not path.is_relative_to(self.root):
            raise ValueError(f"{path} is outside the storage root {self.root}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), FILE_MODE)
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        _fsync_dir(path.parent)

    def write_json_atomic(self, path: Path, value: Any) -> None:
        self.write_atomic(path, json.dumps(value, indent=2, sort_keys=True).encode() + b"\n")

    def read_json(self, path: Path) -> Any:
        """The JSON at `path`, or None when there is no file."""
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None


def _check_kind(kind: str) -> None:
    if kind not in EMAIL_KINDS:
        raise ValueError(f"unknown email kind {kind!r}")


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (a crash right after must not bring the old name back)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
