"""Intake findings of the review: the file a webhook names is opened only inside the uploads folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from docstatus import StatusManager
from docstatus.errors import PathOutsideUploadsError, StatusError, UploadNotFoundError
from docstatus.pipeline.intake import Intake, _inside


@pytest.fixture
def intake(tmp_path: Path) -> Intake:
    manager = StatusManager(cleanup_interval_seconds=None)
    return Intake(manager, tmp_path / "uploads", max_bytes=1 << 20)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "report.txt").write_bytes(b"top secret")
    return outside


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_followed(intake: Intake, secret: Path) -> None:
    # The race of submit_path: the path is checked (resolved inside uploads), then a folder on
    # it is replaced by a symlink to elsewhere before the file is opened. Replayed in order
    # here: check, swap, open.
    inbox = intake.uploads_dir / "inbox"
    inbox.mkdir()
    (inbox / "report.txt").write_bytes(b"harmless")
    resolved = _inside(intake.uploads_dir, "inbox/report.txt")
    inbox.rename(intake.uploads_dir / "inbox-old")
    inbox.symlink_to(secret, target_is_directory=True)
    with pytest.raises(StatusError) as info:
        intake._hash_file(resolved, "inbox/report.txt", "report.txt")
    assert isinstance(info.value, PathOutsideUploadsError)
    assert intake.manager.list_all() == []


def test_the_checked_file_itself_swapped_for_a_symlink_is_not_followed(intake: Intake, secret: Path) -> None:
    target = intake.uploads_dir / "report.txt"
    target.write_bytes(b"harmless")
    resolved = _inside(intake.uploads_dir, "report.txt")
    target.unlink()
    target.symlink_to(secret / "report.txt")
    with pytest.raises((PathOutsideUploadsError, UploadNotFoundError)):
        intake._hash_file(resolved, "report.txt", "report.txt")


def test_files_in_nested_folders_are_still_hashed(intake: Intake) -> None:
    folder = intake.uploads_dir / "a" / "b"
    folder.mkdir(parents=True)
    (folder / "c.txt").write_bytes(b"nested content")
    accepted = intake.submit_path("a/b/c.txt")
    assert accepted.doc_id == hashlib.sha256(b"nested content").hexdigest()
    assert intake.manager.require_status(accepted.doc_id).metadata["path"] == "a/b/c.txt"
