"""Intake: uploads and submitted paths become queued documents; bad input changes nothing."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from docstatus import ProcessingStatus, StatusManager
from docstatus.errors import (
    DiskFullError,
    LinkedFileError,
    PathOutsideUploadsError,
    StatusError,
    UnsupportedFormatError,
    UploadClosedError,
    UploadNotFoundError,
    UploadTooLargeError,
)
from docstatus.formats import FORMATS, detect_format
from docstatus.ingest import Accepted, Intake, inside_uploads, safe_filename
from docstatus.ingest.paths import MAX_NAME_BYTES

MAX = 64 * 1024


@pytest.fixture
def store_kind(local_store_kind: str) -> str:
    return local_store_kind


@pytest.fixture
def queued() -> list[str]:
    return []


@pytest.fixture
def intake(manager: StatusManager, uploads: Path, queued: list[str]) -> Intake:
    return Intake(manager, uploads, max_bytes=MAX, on_queued=queued.append)


def upload(intake: Intake, name: str, data: bytes, piece: int = 1000) -> Accepted:
    with intake.open_upload(name) as writer:
        for i in range(0, len(data), piece):
            writer.write(data[i : i + piece])
        return writer.finish()


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# -- safe_filename ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hostile", "expected"),
    [
        ("../../x", "x"),
        ("/etc/passwd", "passwd"),
        ("C:\\evil.txt", "evil.txt"),
        ("C:evil.txt", "evil.txt"),
        ("..\\..\\windows\\system32\\a.md", "a.md"),
        ("a\x00b", "ab"),
        ("..", "upload"),
        (".", "upload"),
        ("", "upload"),
        ("   ", "upload"),
        ("dir/", "upload"),
        ("report\u202etxt.exe", "reporttxt.exe"),
        ("line\nbreak.txt", "linebreak.txt"),
        ("notes.txt.", "notes.txt"),
        ("résumé.md", "résumé.md"),
    ],
)
def test_safe_filename_strips_hostile_parts(hostile: str, expected: str) -> None:
    assert safe_filename(hostile) == expected


def test_safe_filename_limits_length_and_keeps_the_extension() -> None:
    name = safe_filename("a" * 10_000 + ".txt")
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert name.endswith(".txt")
    wide = safe_filename("é" * 10_000 + ".md")
    assert len(wide.encode()) <= MAX_NAME_BYTES
    assert wide.endswith(".md")


@pytest.mark.parametrize("name", ["../../x", "/", "\\", "..", "....", "a/../..", "\x00", "C:", "C:\\"])
def test_safe_filename_never_names_a_directory(name: str) -> None:
    result = safe_filename(name)
    assert result not in ("", ".", "..")
    assert "/" not in result
    assert "\\" not in result
    assert "\x00" not in result


# -- uploads ------------------------------------------------------------------------------


def test_upload_is_stored_under_its_hash_and_queued(
    intake: Intake, manager: StatusManager, uploads: Path, queued: list[str]
) -> None:
    data = b"# Notes\n\nSome text.\n" * 100
    accepted = upload(intake, "../notes.md", data)
    doc_id = hashlib.sha256(data).hexdigest()
    assert accepted == Accepted(doc_id, "notes.md", False, False, accepted.message)
    assert accepted.to_json() == {
        "status": "accepted",
        "doc_id": doc_id,
        "filename": "notes.md",
        "message": accepted.message,
        "duplicate": False,
    }
    status = manager.require_status(doc_id)
    assert status.status == "queued"
    assert status.filename == "notes.md"
    assert status.metadata["format"] == "md"
    assert status.metadata["format_type"] == "text"
    assert status.metadata["file_size"] == len(data)
    assert status.metadata["path"] == f"{doc_id}.md"
    assert status.metadata["attempt"] == 1
    assert (uploads / f"{doc_id}.md").read_bytes() == data
    assert listing(uploads) == [f"{doc_id}.md"]
    assert queued == [doc_id]


def test_duplicate_content_gives_the_existing_document(
    intake: Intake, manager: StatusManager, uploads: Path, queued: list[str]
) -> None:
    first = upload(intake, "a.txt", b"same content")
    again = upload(intake, "b.txt", b"same content")
    assert again.doc_id == first.doc_id
    assert again.duplicate
    assert not again.requeued
    assert again.to_json()["duplicate"] is True
    assert len(manager.list_all()) == 1
    assert queued == [first.doc_id]
    assert len(listing(uploads)) == 1


def test_duplicate_of_a_failed_document_is_requeued(
    intake: Intake, manager: StatusManager, queued: list[str]
) -> None:
    first = upload(intake, "a.txt", b"retry me")
    manager.mark_failed(first.doc_id, "boom")
    again = upload(intake, "a.txt", b"retry me")
    assert again.duplicate
    assert again.requeued
    status = manager.require_status(first.doc_id)
    assert status.status == "queued"
    assert status.metadata["attempt"] == 2
    assert queued == [first.doc_id, first.doc_id]


def test_duplicate_of_a_failed_document_whose_file_is_gone_brings_it_back(
    intake: Intake, manager: StatusManager, uploads: Path
) -> None:
    first = upload(intake, "a.txt", b"lost file")
    manager.mark_failed(first.doc_id, "boom")
    (uploads / f"{first.doc_id}.txt").unlink()
    again = upload(intake, "a.txt", b"lost file")
    assert again.requeued
    assert (uploads / f"{first.doc_id}.txt").read_bytes() == b"lost file"


def test_concurrent_uploads_of_the_same_content_make_one_document(
    intake: Intake, manager: StatusManager, uploads: Path
) -> None:
    results: list[Accepted] = []
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait()
        results.append(upload(intake, "same.txt", b"racing content " * 500, piece=100))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert sum(not r.duplicate for r in results) == 1
    assert len(manager.list_all()) == 1
    assert len(listing(uploads)) == 1


def _counting_reads(manager: StatusManager, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    read = manager.get_status

    def counted(doc: Any) -> ProcessingStatus | None:
        reads.append(str(doc))
        return read(doc)

    monkeypatch.setattr(manager, "get_status", counted)
    return reads


def test_an_upload_or_a_submitted_path_reads_the_status_once(
    intake: Intake, manager: StatusManager, uploads: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _counting_reads(manager, monkeypatch)
    first = upload(intake, "a.txt", b"read once")
    assert reads == [first.doc_id]
    upload(intake, "b.txt", b"read once")  # a duplicate
    assert reads == [first.doc_id] * 2
    (uploads / "inbox.txt").write_bytes(b"submitted in place")
    submitted = intake.submit_path("inbox.txt")
    assert reads == [first.doc_id] * 2 + [submitted.doc_id]


def test_a_document_cleaned_up_after_its_status_was_read_is_created_anew(
    intake: Intake, manager: StatusManager, uploads: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = upload(intake, "a.txt", b"cleaned meanwhile")
    manager.mark_failed(first.doc_id, "boom")
    read = manager.get_status

    def read_then_clean_up(doc: Any) -> ProcessingStatus | None:
        found = read(doc)
        manager.cleanup_old_entries(0)  # between the read and the requeue
        return found

    monkeypatch.setattr(manager, "get_status", read_then_clean_up)
    again = upload(intake, "a.txt", b"cleaned meanwhile")
    assert (again.doc_id, again.duplicate) == (first.doc_id, False)
    status = read(first.doc_id)
    assert status is not None
    assert (status.status, status.metadata["attempt"]) == ("queued", 1)
    assert (uploads / f"{first.doc_id}.txt").read_bytes() == b"cleaned meanwhile"


def test_a_document_created_elsewhere_after_the_read_makes_this_upload_a_duplicate(
    intake: Intake, manager: StatusManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"created by another process"
    doc_id = hashlib.sha256(data).hexdigest()
    read = manager.get_status

    def read_then_created_elsewhere(doc: Any) -> ProcessingStatus | None:
        found = read(doc)
        if found is None:
            manager.create_status(doc_id, "other.txt", {"path": f"{doc_id}.txt"})
        return found

    monkeypatch.setattr(manager, "get_status", read_then_created_elsewhere)
    accepted = upload(intake, "mine.txt", data)
    assert (accepted.doc_id, accepted.duplicate, accepted.filename) == (doc_id, True, "other.txt")
    assert len(manager.list_all()) == 1


def test_oversized_upload_raises_and_leaves_nothing(
    intake: Intake, manager: StatusManager, uploads: Path
) -> None:
    writer = intake.open_upload("big.txt")
    writer.write(b"x" * MAX)
    with pytest.raises(UploadTooLargeError) as info:
        writer.write(b"x")
    assert info.value.code == "UPLOAD_TOO_LARGE"
    assert isinstance(info.value, ValueError)
    assert listing(uploads) == []
    assert manager.list_all() == []
    with pytest.raises(UploadClosedError):
        writer.write(b"more")
    writer.abort()  # idempotent


def test_upload_of_exactly_max_bytes_is_accepted(intake: Intake) -> None:
    assert not upload(intake, "edge.txt", b"y" * MAX).duplicate


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("photo.jpg", b"\xff\xd8\xff\xe0 not really"),
        ("noext", b"\x7fELF\x02\x01 binary"),
        ("binary.txt", b"text then \x00\x01\x02 binary"),
        ("doc.txt", b"%PDF-1.7\nrest"),
        ("zip.md", b"PK\x03\x04rest"),
        ("empty.txt", b""),
    ],
)
def test_unsupported_upload_raises_and_leaves_nothing(
    intake: Intake, manager: StatusManager, uploads: Path, queued: list[str], name: str, data: bytes
) -> None:
    writer = intake.open_upload(name)
    writer.write(data)
    with pytest.raises(UnsupportedFormatError) as info:
        writer.finish()
    assert info.value.code == "UNSUPPORTED_FORMAT"
    assert listing(uploads) == []
    assert manager.list_all() == []
    assert queued == []


def test_utf16_text_with_nul_bytes_is_accepted(intake: Intake) -> None:
    accepted = upload(intake, "wide.txt", "hello wide world".encode("utf-16"))
    assert not accepted.duplicate


def test_an_exception_inside_the_context_aborts(intake: Intake, uploads: Path) -> None:
    def interrupted() -> None:
        with intake.open_upload("a.txt") as writer:
            writer.write(b"partial")
            raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        interrupted()
    assert listing(uploads) == []


def test_finish_twice_is_refused(intake: Intake) -> None:
    writer = intake.open_upload("a.txt")
    writer.write(b"once")
    writer.finish()
    with pytest.raises(UploadClosedError):
        writer.finish()


def test_stale_temporary_uploads_can_be_removed(intake: Intake, uploads: Path) -> None:
    writer = intake.open_upload("slow.txt")
    writer.write(b"abandoned")
    (temp,) = uploads.iterdir()
    os.utime(temp, (0, 0))
    assert intake.remove_stale_uploads(older_than=60) == 1
    assert listing(uploads) == []
    writer.abort()


# -- submit_path ---------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"top secret")
    return secret


def _escapes(uploads: Path, outside: Path) -> list[str | Path]:
    (uploads / "link.txt").symlink_to(outside)
    (uploads / "dirlink").symlink_to(outside.parent, target_is_directory=True)
    return [
        "../secret.txt",
        outside,
        str(outside),
        "sub/../../secret.txt",
        "link.txt",
        "dirlink/secret.txt",
        uploads / ".." / "secret.txt",
        "../missing.txt",
        "/etc/passwd",
    ]


def test_submit_path_refuses_anything_outside_uploads(
    intake: Intake, manager: StatusManager, uploads: Path, outside: Path
) -> None:
    before = outside.stat()
    for path in _escapes(uploads, outside):
        with pytest.raises(PathOutsideUploadsError) as info:
            intake.submit_path(path)
        assert info.value.code == "PATH_OUTSIDE_UPLOADS"
        assert isinstance(info.value, PermissionError)
    after = outside.stat()
    assert outside.read_bytes() == b"top secret"
    # Untouched: same content, size and modification time.
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    assert manager.list_all() == []


def test_submit_path_refuses_a_hard_link_to_a_file_outside(
    intake: Intake, manager: StatusManager, uploads: Path, outside: Path
) -> None:
    os.link(outside, uploads / "linked.txt")
    with pytest.raises(LinkedFileError) as info:
        intake.submit_path("linked.txt")
    assert info.value.code == "PATH_LINKED" and info.value.links == 2
    assert isinstance(info.value, PathOutsideUploadsError)
    assert "hard links" in str(info.value)
    assert manager.list_all() == []
    # The same bytes as a file of its own are accepted: only the extra link is refused.
    (uploads / "linked.txt").unlink()
    (uploads / "copy.txt").write_bytes(outside.read_bytes())
    assert intake.submit_path("copy.txt").duplicate is False


def test_submit_path_queues_a_file_in_place(
    intake: Intake, manager: StatusManager, uploads: Path, queued: list[str]
) -> None:
    (uploads / "inbox").mkdir()
    source = uploads / "inbox" / "report.md"
    source.write_bytes(b"# Report\n\nbody")
    accepted = intake.submit_path("inbox/report.md")
    assert accepted.doc_id == hashlib.sha256(b"# Report\n\nbody").hexdigest()
    assert accepted.filename == "report.md"
    status = manager.require_status(accepted.doc_id)
    assert status.metadata["path"] == "inbox/report.md"
    assert source.read_bytes() == b"# Report\n\nbody"
    assert queued == [accepted.doc_id]
    again = intake.submit_path(source.resolve(), filename="renamed.md")
    assert again.duplicate


def test_submit_path_follows_symlinks_that_stay_inside(intake: Intake, uploads: Path) -> None:
    (uploads / "real.txt").write_bytes(b"real")
    (uploads / "alias.txt").symlink_to(uploads / "real.txt")
    assert intake.submit_path("alias.txt").filename == "alias.txt"


@pytest.mark.parametrize("path", ["missing.txt", "", ".", "sub", "a\x00b.txt"])
def test_submit_path_of_no_file_is_not_found(intake: Intake, uploads: Path, path: str) -> None:
    (uploads / "sub").mkdir()
    with pytest.raises((UploadNotFoundError, PathOutsideUploadsError)) as info:
        intake.submit_path(path)
    assert isinstance(info.value, StatusError)


def test_submit_path_missing_inside_is_not_found(intake: Intake) -> None:
    with pytest.raises(UploadNotFoundError) as info:
        intake.submit_path("missing.txt")
    assert info.value.code == "UPLOAD_NOT_FOUND"
    assert isinstance(info.value, FileNotFoundError)


def test_submit_path_too_large_or_unsupported_changes_nothing(
    intake: Intake, manager: StatusManager, uploads: Path
) -> None:
    (uploads / "big.txt").write_bytes(b"z" * (MAX + 1))
    (uploads / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n....")
    (uploads / "fake.txt").write_bytes(b"\x00\x01binary")
    with pytest.raises(UploadTooLargeError):
        intake.submit_path("big.txt")
    with pytest.raises(UnsupportedFormatError):
        intake.submit_path("image.png")
    with pytest.raises(UnsupportedFormatError):
        intake.submit_path("fake.txt")
    assert manager.list_all() == []
    assert listing(uploads) == ["big.txt", "fake.txt", "image.png"]


def test_submit_path_refuses_a_fifo(intake: Intake, uploads: Path) -> None:
    os.mkfifo(uploads / "pipe.txt")
    with pytest.raises(UploadNotFoundError):
        intake.submit_path("pipe.txt")


# The file a path names is opened only inside the uploads folder, also when the path changes after
# it was checked. Only the file system takes part, so the memory store alone is enough.
memory_store_only = pytest.mark.parametrize("store_kind", ["memory"])


@memory_store_only
def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_followed(
    intake: Intake, outside: Path
) -> None:
    # The race of submit_path: the path is checked (resolved inside uploads), then a folder on
    # it is replaced by a symlink to elsewhere before the file is opened. Replayed in order
    # here: check, swap, open.
    inbox = intake.uploads_dir / "inbox"
    inbox.mkdir()
    (inbox / "secret.txt").write_bytes(b"harmless")
    resolved = inside_uploads(intake.uploads_dir, "inbox/secret.txt")
    inbox.rename(intake.uploads_dir / "inbox-old")
    inbox.symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(StatusError) as info:
        intake._hash_file(resolved, "inbox/secret.txt", "secret.txt")
    assert isinstance(info.value, PathOutsideUploadsError)
    assert intake.manager.list_all() == []


@memory_store_only
def test_the_checked_file_itself_swapped_for_a_symlink_is_not_followed(intake: Intake, outside: Path) -> None:
    target = intake.uploads_dir / "secret.txt"
    target.write_bytes(b"harmless")
    resolved = inside_uploads(intake.uploads_dir, "secret.txt")
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises((PathOutsideUploadsError, UploadNotFoundError)):
        intake._hash_file(resolved, "secret.txt", "secret.txt")


@memory_store_only
def test_files_in_nested_folders_are_still_hashed(intake: Intake) -> None:
    folder = intake.uploads_dir / "a" / "b"
    folder.mkdir(parents=True)
    (folder / "c.txt").write_bytes(b"nested content")
    accepted = intake.submit_path("a/b/c.txt")
    assert accepted.doc_id == hashlib.sha256(b"nested content").hexdigest()
    assert intake.manager.require_status(accepted.doc_id).metadata["path"] == "a/b/c.txt"


# -- formats ---------------------------------------------------------------------------------


def test_detect_format_by_extension_and_content(tmp_path: Path) -> None:
    text = tmp_path / "f"
    text.write_bytes(b"hello")
    assert detect_format(text, "A.TXT") is not None
    md = detect_format(text, "readme.md")
    assert md is not None
    assert (md.format, md.format_type, md.media_type) == ("md", "text", "text/markdown")
    assert detect_format(text, "a.pdf") is None
    text.write_bytes(b"\x00" * 10)
    assert detect_format(text, "a.txt") is None
    assert {".txt", ".md"} <= FORMATS.extensions()


def test_intake_rejects_a_bad_limit(manager: StatusManager, uploads: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Intake(manager, uploads, max_bytes=0)


def test_an_upload_that_finds_the_disk_full_is_removed(
    intake: Intake, manager: StatusManager, uploads: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real full disk (a tmpfs) is in tests/api/test_limits_server.py; this runs unprivileged.
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError) as info:
        upload(intake, "a.txt", b"some text")
    assert info.value.code == "DISK_FULL" and isinstance(info.value, OSError)
    assert "disk is full" in str(info.value)
    assert listing(uploads) == [] and manager.list_all() == []
