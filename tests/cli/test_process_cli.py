"""``docstatus process FILE...``: the pipeline run locally as a real process; exit status and output."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from _documents import docx_bytes, numbered_pages, pdf_bytes, plain_zip, write
from docstatus import StatusManager
from docstatus.output import OutputStore

TIMEOUT = 120
# What the `docstatus` console script runs.
_MAIN = "import sys; from docstatus.cli import main; sys.exit(main(sys.argv[1:]))"


def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DOCSTATUS_")}
    environ.update(env, COLUMNS="160")
    return subprocess.run(
        [sys.executable, "-c", _MAIN, "process", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_good_files_complete_and_are_stored_beside_the_status(tmp_path: Path) -> None:
    write(tmp_path / "report.pdf", pdf_bytes(numbered_pages(5)))
    write(tmp_path / "q.docx", docx_bytes())
    done = run(tmp_path, "report.pdf", "q.docx")
    assert done.returncode == 0, done.stderr
    assert "report.pdf" in done.stderr
    assert "completed" in done.stderr
    assert "page 5/5" in done.stderr
    data = tmp_path / "docstatus-data"
    with StatusManager(store=f"sqlite:///{data / 'status.db'}", cleanup_interval_seconds=None) as manager:
        statuses = manager.list_all()
        assert sorted(s.status.value for s in statuses) == ["completed", "completed"]
        by_name = {s.filename: s for s in statuses}
        assert by_name["report.pdf"].metadata["num_pages"] == 5
    with OutputStore(data / "output.db") as output:
        assert output.count() == 2
        stored = output.get(by_name["report.pdf"].doc_id)
        assert stored is not None
        assert len(stored.pages) == 5


def test_any_failure_exits_1_and_every_file_gets_a_final_status(tmp_path: Path) -> None:
    write(tmp_path / "ok.pdf", pdf_bytes(numbered_pages(2)))
    write(tmp_path / "locked.pdf", pdf_bytes(numbered_pages(2), password="pw"))
    write(tmp_path / "zip.pdf", plain_zip())
    write(tmp_path / "empty.txt", b"")
    store = tmp_path / "elsewhere" / "s.db"
    done = run(tmp_path, "ok.pdf", "locked.pdf", "zip.pdf", "empty.txt", "--store", f"sqlite:///{store}")
    assert done.returncode == 1, done.stderr
    assert "a password is needed" in done.stderr
    with StatusManager(store=f"sqlite:///{store}", cleanup_interval_seconds=None) as manager:
        final = {s.filename: s for s in manager.list_all()}
    assert final["ok.pdf"].status == "completed"
    assert final["locked.pdf"].status == "failed"
    assert "encrypted" in (final["locked.pdf"].error or "")
    assert final["zip.pdf"].error == (
        "Unsupported format for 'zip.pdf': the content is ZIP (or DOCX/PPTX/XLSX), not PDF"
    )
    assert final["zip.pdf"].metadata["retryable"] is False  # the same file can only fail the same way
    assert "empty" in (final["empty.txt"].error or "")


def test_processing_again_finds_the_completed_document(tmp_path: Path) -> None:
    write(tmp_path / "a.pdf", pdf_bytes(numbered_pages(1)))
    assert run(tmp_path, "a.pdf").returncode == 0
    again = run(tmp_path, "a.pdf")
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(tmp_path / "docstatus-data" / "output.db") as db:
        assert db.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 1
    db.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.pdf"], "missing.pdf: no such file"),
        (["."], ".: not a regular file"),
        (["dangling.pdf"], "dangling.pdf: no such file"),
        ([], "the following arguments are required: FILE"),
        (["a.pdf", "--workers", "0"], "must be at least 1"),
        (["a.pdf", "--timeout", "-1"], "must be a positive number of seconds"),
        (["a.pdf", "--store", "nonsense"], "store"),
    ],
)
def test_bad_arguments_exit_2_and_process_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    write(tmp_path / "a.pdf", pdf_bytes(numbered_pages(1)))
    (tmp_path / "dangling.pdf").symlink_to(tmp_path / "gone.pdf")
    done = run(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "docstatus-data" / "output.db").exists()


def test_a_memory_store_and_a_page_limit(tmp_path: Path) -> None:
    write(tmp_path / "long.pdf", pdf_bytes(numbered_pages(4)))
    done = run(tmp_path, "long.pdf", "--store", "memory://", "--max-pages", "3", "--data-dir", "out")
    assert done.returncode == 1
    assert "4 pages (at most 3 allowed)" in " ".join(done.stderr.split())
    assert (tmp_path / "out" / "output.db").exists()
