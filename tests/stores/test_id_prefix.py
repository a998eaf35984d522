"""Short ids: every store finds the documents whose id starts with a prefix, most recent first."""

from __future__ import annotations

from docstatus import Status, StatusManager


def test_documents_are_found_by_the_start_of_their_id(manager: StatusManager) -> None:
    for doc_id in ("abcdefgh-1", "abcdefgh-2", "abcdefgx", "zzz", "abcdefgh"):
        manager.create_status(doc_id, f"{doc_id}.txt")
    manager.update_status("abcdefgh-1", Status.PARSING)  # now the most recent of the three

    found = [d["doc_id"] for d in manager.find_by_prefix_json("abcdefgh")]
    assert found == ["abcdefgh-1", "abcdefgh", "abcdefgh-2"]
    assert [d["doc_id"] for d in manager.find_by_prefix_json("abcdefgh-2")] == ["abcdefgh-2"]
    assert [d["doc_id"] for d in manager.find_by_prefix_json("abcdefgh", limit=2)] == [
        "abcdefgh-1",
        "abcdefgh",
    ]
    assert manager.find_by_prefix_json("abcdefgi") == []
    assert manager.find_by_prefix_json("ABCDEFGH") == []  # ids are case-sensitive
    assert manager.find_by_prefix_json("abcdefgh", limit=0) == []
    body = manager.find_by_prefix_json("zz")[0]
    expected = manager.get_status_json("zzz")
    assert expected is not None
    live = ("elapsed_time", "wait_time", "run_time", "estimated_remaining")  # computed when read
    assert {k: v for k, v in body.items() if k not in live} == {
        k: v for k, v in expected.items() if k not in live
    }


def test_like_and_glob_characters_in_a_prefix_are_plain_characters(manager: StatusManager) -> None:
    for doc_id in ("a%b_c*d[1]", "aXbYcZd"):
        manager.create_status(doc_id, "x.txt")
    assert [d["doc_id"] for d in manager.find_by_prefix_json("a%b_c*d[")] == ["a%b_c*d[1]"]
    assert [d["doc_id"] for d in manager.find_by_prefix_json("a%")] == ["a%b_c*d[1]"]
    assert manager.find_by_prefix_json("a_") == []
