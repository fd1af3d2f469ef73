"""Storage writes are atomic; CleanupExpiredFiles honours retention and never leaves the root."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from passito_jobs.outpass import cleanup
from passito_jobs.outpass.cleanup import cleanup_expired_files, cleanup_expired_files_job
from passito_jobs.outpass.storage import Storage
from passito_jobs.registry import PermanentError
from tests.outpasses import context

DAY = 86400.0


def write(path: Path, data: bytes, *, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    stamp = time.time() - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def age(path: Path, days: float) -> None:
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def test_an_atomic_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    target = storage.pdf("42")
    storage.write_atomic(target, b"old")
    storage.write_atomic(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in target.parent.iterdir()) == ["outpass.pdf"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    target = storage.qr_code("42")
    storage.write_atomic(target, b"complete")
    with pytest.raises(TypeError):
        storage.write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"complete"
    assert sorted(p.name for p in target.parent.iterdir()) == ["qr.png"]


def test_paths_come_only_from_valid_ids(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    for bad in ("../x", "a/b", ".", "", "x" * 65):
        with pytest.raises(ValueError, match="not an outpass id"):
            storage.outpass_dir(bad)
    with pytest.raises(ValueError, match="outside the storage root"):
        storage.write_atomic(tmp_path.parent / "escaped", b"x")


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A storage root with old and new files, a symlink out of it, and a file beside it."""
    root = tmp_path / "storage"
    outside = tmp_path / "outside"
    paths = {
        "old_pdf": write(root / "outpasses/1/outpass.pdf", b"p" * 1000, age_days=40),
        "old_qr": write(root / "outpasses/1/qr.png", b"q" * 200, age_days=40),
        "old_marker": write(root / "outpasses/1/sent/student-job-3.json", b"{}", age_days=40),
        "new_pdf": write(root / "outpasses/2/outpass.pdf", b"n" * 50, age_days=1),
        "old_eml": write(root / "outbox/old.eml", b"e" * 300, age_days=31),
        "new_eml": write(root / "outbox/new.eml", b"e" * 10, age_days=29),
        "not_swept": write(root / "elsewhere/old.txt", b"x", age_days=400),
        # `root/../sibling.pdf`: next to the storage root, never inside it.
        "sibling": write(tmp_path / "sibling.pdf", b"s" * 7, age_days=400),
        "outside_file": write(outside / "precious.pdf", b"o" * 70, age_days=400),
    }
    (outside / "dir").mkdir()
    write(outside / "dir" / "deep.pdf", b"d", age_days=400)
    link = root / "outpasses/3"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    file_link = root / "outbox/link.eml"
    file_link.symlink_to(outside / "precious.pdf")
    age(link, 400)
    age(file_link, 400)
    paths.update(root=root, outside=outside, link=link, file_link=file_link)
    return paths


def test_cleanup_deletes_only_expired_files_and_reports_counts_and_bytes(tree: dict[str, Path]) -> None:
    result = cleanup_expired_files(tree["root"], retention_days=30)
    assert (result.files_deleted, result.bytes_freed) == (4, 1000 + 200 + 2 + 300)
    assert result.dirs_removed == 2  # outpasses/1/sent and then outpasses/1 itself
    assert result.symlinks_skipped == 2
    assert sorted(result.files) == [
        "outbox/old.eml",
        "outpasses/1/outpass.pdf",
        "outpasses/1/qr.png",
        "outpasses/1/sent/student-job-3.json",
    ]
    for gone in ("old_pdf", "old_qr", "old_marker", "old_eml"):
        assert not tree[gone].exists(), gone
    assert not (tree["root"] / "outpasses/1").exists()
    for kept in ("new_pdf", "new_eml", "not_swept", "sibling", "outside_file"):
        assert tree[kept].exists(), kept
    assert (tree["outside"] / "dir" / "deep.pdf").exists()
    assert tree["link"].is_symlink()
    assert tree["file_link"].is_symlink()
    assert (tree["root"] / "outpasses").is_dir()
    assert (tree["root"] / "outbox").is_dir()


def test_dry_run_lists_without_deleting(tree: dict[str, Path]) -> None:
    before = sorted(str(p) for p in tree["root"].rglob("*"))
    result = cleanup_expired_files(tree["root"], retention_days=30, dry_run=True)
    assert result.dry_run
    assert (result.files_deleted, result.bytes_freed, result.dirs_removed) == (4, 1502, 2)
    assert "outpasses/1/outpass.pdf" in result.files
    assert sorted(str(p) for p in tree["root"].rglob("*")) == before


def test_retention_is_a_setting_and_a_payload_field(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PASSITO_STORAGE_DIR", str(tree["root"]))
    monkeypatch.setenv("PASSITO_FILE_RETENTION_DAYS", "35")
    result = cleanup_expired_files_job(context("CleanupExpiredFiles", {"dry_run": True}))
    assert result["files_deleted"] == 3  # old.eml is 31 days old: kept under 35 days
    assert result["retention_days"] == 35
    result = cleanup_expired_files_job(context("CleanupExpiredFiles", {"retention_days": 30}))
    assert (result["files_deleted"], result["bytes_freed"], result["errors"]) == (4, 1502, 0)
    assert not tree["old_eml"].exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"dryrun": True}, "unknown payload field"),
        ({"dry_run": "yes"}, "field 'dry_run' must be true or false"),
        ({"retention_days": 0}, "field 'retention_days' must be a whole number of days, at least 1"),
        ({"retention_days": "../../"}, "field 'retention_days' must be a whole number"),
    ],
)
def test_a_bad_cleanup_payload_fails_permanently(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch, payload: dict[str, object], message: str
) -> None:
    monkeypatch.setenv("PASSITO_STORAGE_DIR", str(tree["root"]))
    with pytest.raises(PermanentError, match=message):
        cleanup_expired_files_job(context("CleanupExpiredFiles", payload))
    assert tree["old_pdf"].exists()


def test_a_young_empty_folder_is_kept_an_old_one_removed(tmp_path: Path) -> None:
    young = tmp_path / "outpasses" / "7"
    old = tmp_path / "outpasses" / "8"
    young.mkdir(parents=True)
    old.mkdir()
    age(old, 60)
    result = cleanup_expired_files(tmp_path, retention_days=30)
    assert young.is_dir()
    assert not old.exists()
    assert (result.files_deleted, result.dirs_removed) == (0, 1)


def test_a_storage_folder_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    outside = write(tmp_path / "elsewhere" / "old.pdf", b"x", age_days=90)
    root = tmp_path / "storage"
    root.mkdir()
    (root / "outpasses").symlink_to(outside.parent, target_is_directory=True)
    result = cleanup_expired_files(root, retention_days=30)
    assert outside.exists()
    assert (result.files_deleted, result.symlinks_skipped) == (0, 1)


def test_a_missing_storage_root_is_nothing_to_do(tmp_path: Path) -> None:
    result = cleanup_expired_files(tmp_path / "never-created", retention_days=30)
    assert (result.files_deleted, result.bytes_freed) == (0, 0)


def deep_tree(top: Path, depth: int) -> int:
    """`top/d/d/.../d` (`depth` folders), built through descriptors (no long paths); returns
    a descriptor of the deepest folder (the caller closes it)."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    return fd


def write_at(fd: int, name: str, *, age_days: float) -> None:
    os.close(os.open(name, os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=fd))
    stamp = time.time() - age_days * DAY
    os.utime(name, (stamp, stamp), dir_fd=fd)


def depth_of(top: Path) -> int:
    depth, path = 0, top
    while (path / "d").is_dir():
        depth, path = depth + 1, path / "d"
    return depth


@pytest.fixture
def deep_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, emptied afterwards with `rm -rf`: pytest removes old temporary folders with
    shutil.rmtree, which recurses and would fail on a 1,500-deep tree in every later session."""
    yield tmp_path
    for child in tmp_path.iterdir():
        subprocess.run(["rm", "-rf", "--", str(child)], check=True)


@pytest.fixture
def few_descriptors() -> Iterator[None]:
    """Fewer open files allowed than the tree is deep: the walk must not hold one per level."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("few_descriptors")
def test_a_1500_deep_tree_is_swept_without_recursion(deep_dir: Path) -> None:
    bottom = deep_tree(deep_dir / "outpasses", 1500)
    write_at(bottom, "old.pdf", age_days=40)
    os.close(bottom)
    result = cleanup_expired_files(deep_dir, retention_days=30)
    assert result.errors == []
    assert (result.files_deleted, result.dirs_removed) == (1, 1500)
    assert result.files == ["outpasses" + "/d" * 1500 + "/old.pdf"]
    assert depth_of(deep_dir / "outpasses") == 0
    assert (deep_dir / "outpasses").is_dir()


@pytest.mark.usefixtures("few_descriptors")
def test_a_deep_tree_keeps_young_files_and_symlinks_and_the_folders_above_them(deep_dir: Path) -> None:
    outside = write(deep_dir / "outside" / "precious.pdf", b"o", age_days=400)
    bottom = deep_tree(deep_dir / "storage" / "outbox", 1500)
    write_at(bottom, "old.eml", age_days=40)
    os.symlink(outside.parent, "escape", dir_fd=bottom)
    os.close(bottom)
    young = deep_tree(deep_dir / "storage" / "outpasses", 700)
    write_at(young, "young.pdf", age_days=1)
    os.close(young)
    for dry_run in (True, False):
        result = cleanup_expired_files(deep_dir / "storage", retention_days=30, dry_run=dry_run)
        assert result.errors == []
        assert (result.files_deleted, result.dirs_removed, result.symlinks_skipped) == (1, 0, 1)
    assert outside.exists()
    assert depth_of(deep_dir / "storage" / "outbox") == 1500
    assert depth_of(deep_dir / "storage" / "outpasses") == 700


def test_a_folder_moved_out_during_the_walk_is_not_followed_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deep in the tree the walk has closed the shallower descriptors and comes back up through
    `..`. If someone moves a folder elsewhere meanwhile, `..` leads there: the walk must notice
    (another directory) and stop, not sweep its new surroundings."""
    root = tmp_path / "storage"
    elsewhere = tmp_path / "elsewhere"
    precious = write(elsewhere / "precious.pdf", b"o", age_days=400)
    write(root / "outpasses/a/b/c/d/e/old.pdf", b"x", age_days=40)
    monkeypatch.setattr(cleanup._Sweep, "OPEN_FOLDERS", 2)
    listed: list[int] = []
    real_names = cleanup._names

    def names_then_move(fd: int) -> list[str]:
        listed.append(fd)
        if len(listed) == 6:  # listing e: the walk holds only d and e open
            (root / "outpasses/a/b/c").rename(elsewhere / "c")
        return real_names(fd)

    monkeypatch.setattr(cleanup, "_names", names_then_move)
    result = cleanup_expired_files(root, retention_days=30)
    assert result.errors == ["outpasses/a/b: moved during the sweep, not swept further"]
    assert precious.exists()
    assert (elsewhere / "c").is_dir()  # not removed from where it went
    assert (root / "outpasses/a/b").is_dir()


def test_a_retention_beyond_a_century_fails_permanently(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PASSITO_STORAGE_DIR", str(tree["root"]))
    for days in (36501, 10**30):
        with pytest.raises(PermanentError, match="at most 36500; got"):
            cleanup_expired_files_job(context("CleanupExpiredFiles", {"retention_days": days}))
    assert tree["old_pdf"].exists()
