"""Completion webhooks against a real receiver on loopback: signature, retries, order, leases, settings."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from docstatus import StatusManager
from docstatus.errors import ConfigError
from docstatus.events import Event
from docstatus.notify import Backoff, Notifier, cursor_name, post, sign
from docstatus.settings import ServiceSettings
from docstatus.stores.memory import MemoryStore
from helpers import wait_until
from webhook_receiver import Received, Receiver

SECRET = "s3cret"
FAST = Backoff(0.02, 0.1)


@pytest.fixture
def store_kind(local_store_kind: str) -> str:
    # The store contract itself is checked on every store (stores/test_cursors.py); here the
    # first test runs on each, the others on the stores that need no server.
    return local_store_kind


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def notifiers() -> Iterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def make(manager: StatusManager, *urls: str, **kw: Any) -> Notifier:
        kw.setdefault("backoff", FAST)
        kw.setdefault("timeout", 5.0)
        notifier = Notifier(manager, urls, SECRET, **kw)
        made.append(notifier)
        notifier.start()
        return notifier

    yield make
    for notifier in made:
        notifier.close()


def _complete(manager: StatusManager, doc_id: str) -> None:
    manager.create_status(doc_id, f"{doc_id}.pdf")
    manager.update_status(doc_id, "parsing")
    manager.mark_completed(doc_id, pages=2)


def _fail(manager: StatusManager, doc_id: str) -> None:
    manager.create_status(doc_id, f"{doc_id}.pdf")
    manager.mark_failed(doc_id, "broken")


def _verifies(request: Received, secret: str = SECRET) -> bool:
    timestamp = request.headers["X-Docstatus-Timestamp"]
    expected = sign(secret.encode(), timestamp, request.body)
    return hmac.compare_digest(expected, request.headers["X-Docstatus-Signature"])


def _events(manager: StatusManager) -> list[Event]:
    seen: list[Event] = []
    manager.subscribe(seen.append)
    return seen


@pytest.mark.parametrize("store_kind", ["memory", "sqlite", "redis"])
def test_a_completed_and_a_failed_document_are_posted_signed_on_every_store(
    manager: StatusManager, receiver: Receiver, notifiers: Callable[..., Notifier]
) -> None:
    seen = _events(manager)
    notifiers(manager, receiver.url)
    _complete(manager, "done")
    _fail(manager, "broken")
    got = {r.doc_id: r for r in receiver.wait(lambda rs: len([r for r in rs if r.code]) == 2)}
    assert set(got) == {"done", "broken"}
    for doc_id, event in (("done", "completed"), ("broken", "failed")):
        request = got[doc_id]
        assert request.code == 200 and request.path == "/hook"
        assert _verifies(request)
        assert not _verifies(request, "another secret")
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["X-Docstatus-Event"] == event
        assert len(request.headers["X-Docstatus-Delivery"]) == 32
        body = request.json
        # The status JSON is the one of the change's event (what GET /status/{doc_id} answered then).
        (change,) = [e for e in seen if e["seq"] == body["seq"]]
        assert body == {"event": event, "seq": change["seq"], "doc_id": doc_id, "status": change["status"]}
        assert body["status"]["status"] == event
    assert got["done"].json["status"]["metadata"]["pages"] == 2
    assert got["broken"].json["status"]["error"] == "broken"
    assert len(receiver.requests) == 2  # progress changes are not notified


def test_the_signature_covers_the_timestamp(receiver: Receiver) -> None:
    body = b'{"a":1}'
    assert sign(b"k", "100", body) == "sha256=" + hmac.new(b"k", b"100." + body, hashlib.sha256).hexdigest()
    assert sign(b"k", "101", body) != sign(b"k", "100", body)


def test_the_readme_shows_how_to_verify_a_delivery(
    manager: StatusManager, receiver: Receiver, notifiers: Any
) -> None:
    from test_readme import _blocks

    (block,) = [b for b in _blocks() if "X-Docstatus-Signature" in b]
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    notifiers(manager, receiver.url)
    _complete(manager, "doc")
    (request,) = receiver.wait(lambda rs: len(rs) == 1)
    assert namespace["verify"](SECRET.encode(), request.headers, request.body) is True
    assert namespace["verify"](b"wrong", request.headers, request.body) is False
    stale = {
        **request.headers,
        "X-Docstatus-Timestamp": str(int(request.headers["X-Docstatus-Timestamp"]) - 3600),
    }
    assert namespace["verify"](SECRET.encode(), stale, request.body) is False


def test_failed_attempts_are_retried_with_the_same_body_and_delivery_id(
    manager: StatusManager, receiver: Receiver, notifiers: Callable[..., Notifier]
) -> None:
    answers = iter([503, 500, 429, 408])
    receiver.answer = lambda request, earlier: next(answers, 200)
    notifiers(manager, receiver.url)
    _complete(manager, "doc")
    requests = receiver.wait(lambda rs: [r.code for r in rs] == [503, 500, 429, 408, 200])
    assert len({r.body for r in requests}) == 1
    assert len({r.headers["X-Docstatus-Delivery"] for r in requests}) == 1
    assert all(_verifies(r) for r in requests)


def test_deliveries_of_one_document_keep_their_order_while_others_pass(
    manager: StatusManager, receiver: Receiver, notifiers: Callable[..., Notifier]
) -> None:
    release = threading.Event()

    def answer(request: Received, earlier: list[Received]) -> int:
        # The first end of "a" fails until "b" was delivered: "b" must not wait behind "a".
        if request.doc_id == "a" and request.json["event"] == "failed" and not release.is_set():
            return 503
        if request.doc_id == "b":
            release.set()
        return 200

    receiver.answer = answer
    notifiers(manager, receiver.url)
    _fail(manager, "a")
    manager.requeue("a")
    manager.update_status("a", "parsing")
    manager.mark_completed("a")
    receiver.wait(lambda rs: any(r.doc_id == "a" and r.code == 503 for r in rs))
    _complete(manager, "b")
    receiver.wait(lambda rs: len([r for r in rs if r.code == 200]) == 3)
    delivered = [(r.doc_id, r.json["event"]) for r in receiver.delivered()]
    assert delivered == [("b", "completed"), ("a", "failed"), ("a", "completed")]
    # Nothing of "a" was sent after its first end until that one was delivered.
    sent_a = [(r.json["event"], r.code) for r in receiver.requests if r.doc_id == "a"]
    first_ok = sent_a.index(("failed", 200))
    assert all(event == "failed" for event, _ in sent_a[:first_ok])


def _only_line(caplog: pytest.LogCaptureFixture, text: str) -> logging.LogRecord:
    found = [r for r in caplog.records if text in r.getMessage()]
    assert len(found) == 1, [r.getMessage() for r in caplog.records]
    assert found[0].exc_info is None and "\n" not in found[0].getMessage()
    return found[0]


@pytest.mark.parametrize("code", [400, 401, 404, 410, 302])
def test_a_refusal_or_a_redirect_is_given_up_at_once_with_one_line(
    code: int,
    manager: StatusManager,
    receiver: Receiver,
    notifiers: Callable[..., Notifier],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "docstatus.notify")
    receiver.answer = lambda request, earlier: code
    receiver.headers = {"Location": receiver.url + "/elsewhere"}
    notifier = notifiers(manager, receiver.url)
    _complete(manager, "doc")
    _complete(manager, "next")
    requests = receiver.wait(lambda rs: len([r for r in rs if r.code]) == 2)
    assert all(r.path == "/hook" for r in requests)  # the redirect was not followed
    wait_until(lambda: not manager.store.outbox(cursor_name(receiver.url), 10))
    line = _only_line(caplog, "given up: completed of document doc ")
    assert f"HTTP {code}" in line.getMessage() and "1 attempts" in line.getMessage()
    assert notifier.receivers[0].url in line.getMessage()


def test_retries_end_after_the_retry_time_with_one_line(
    manager: StatusManager,
    receiver: Receiver,
    notifiers: Callable[..., Notifier],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "docstatus.notify")
    receiver.answer = lambda request, earlier: 502
    notifiers(manager, receiver.url, retry_seconds=0.3)
    _complete(manager, "doc")
    wait_until(lambda: any("given up" in r.getMessage() for r in caplog.records))
    line = _only_line(caplog, "given up: completed of document doc ")
    assert "HTTP 502" in line.getMessage()
    assert len(receiver.requests) >= 3  # retried before it gave up
    assert manager.store.outbox(cursor_name(receiver.url), 10) == []


def test_a_receiver_that_cannot_be_reached_is_retried(manager: StatusManager) -> None:
    receiver = Receiver()
    url = receiver.url
    receiver.close()  # nothing listens there now: connections are refused
    outcome, reason, retry_after = post(url, b"{}", {}, 1.0)
    assert outcome == "retry" and "Connection refused" in reason and retry_after is None


@pytest.mark.parametrize(
    ("header", "seconds"), [("7", 7.0), (" 0 ", 0.0), ("Wed, 21 Oct 2015 07:28:00 GMT", None)]
)
def test_retry_after_seconds_are_read(receiver: Receiver, header: str, seconds: float | None) -> None:
    receiver.answer = lambda request, earlier: 503
    receiver.headers = {"Retry-After": header}
    assert post(receiver.url, b"{}", {}, 5.0) == ("retry", "HTTP 503", seconds)


def test_a_retry_after_is_honoured_up_to_the_cap(
    manager: StatusManager, receiver: Receiver, notifiers: Callable[..., Notifier]
) -> None:
    answers = iter([429])
    receiver.answer = lambda request, earlier: next(answers, 200)
    receiver.headers = {"Retry-After": "2"}
    notifiers(manager, receiver.url, backoff=Backoff(0.02, 30.0))
    _complete(manager, "doc")
    name = cursor_name(receiver.url)
    wait_until(lambda: any(e.data["attempts"] == 1 for e in manager.store.outbox(name, 1)))
    (entry,) = manager.store.outbox(name, 1)
    assert entry.data["due"] >= entry.data["queued"] + 2  # not the 0.02 of the backoff
    assert entry.data["error"] == "HTTP 429"
    receiver.wait(lambda rs: [r.code for r in rs] == [429, 200])


def test_a_receiver_that_never_answers_does_not_hold_up_status_writes(
    manager: StatusManager, receiver: Receiver, notifiers: Callable[..., Notifier]
) -> None:
    arrived, release = threading.Event(), threading.Event()

    def answer(request: Received, earlier: list[Received]) -> int:
        arrived.set()
        release.wait(30)
        return 200

    receiver.answer = answer
    notifiers(manager, receiver.url, timeout=30.0)
    try:
        _complete(manager, "first")
        assert arrived.wait(20)
        # While the receiver holds the delivery, every write goes through.
        for i in range(20):
            _complete(manager, f"doc{i}")
        assert not release.is_set()
        counts = manager.count_by_status()
        assert counts["completed"] == 21
    finally:
        release.set()
    receiver.wait(lambda rs: len([r for r in rs if r.code == 200]) == 21)


def test_every_url_gets_every_delivery_on_its_own(
    manager: StatusManager, notifiers: Callable[..., Notifier]
) -> None:
    good, bad = Receiver(), Receiver(answer=lambda request, earlier: 503)
    try:
        notifiers(manager, good.url, bad.url)
        _complete(manager, "doc")
        _complete(manager, "other")
        good.wait(lambda rs: len([r for r in rs if r.code == 200]) == 2)
        bad.wait(lambda rs: len({r.doc_id for r in rs}) == 2 and len(rs) >= 4)
        assert cursor_name(good.url) != cursor_name(bad.url)
        assert manager.store.outbox(cursor_name(good.url), 10) == []
        assert len(manager.store.outbox(cursor_name(bad.url), 10)) == 2
    finally:
        good.close()
        bad.close()


def test_documents_that_ended_before_the_first_start_are_not_notified(
    manager: StatusManager, receiver: Receiver, notifiers: Callable[..., Notifier]
) -> None:
    _complete(manager, "before")
    notifiers(manager, receiver.url)
    _complete(manager, "after")
    receiver.wait(lambda rs: len(rs) == 1)
    assert [r.doc_id for r in receiver.requests] == ["after"]


def test_pending_deliveries_survive_a_stop_and_go_on_in_another_process(
    tmp_path: Any, receiver: Receiver, notifiers: Callable[..., Notifier]
) -> None:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    first = StatusManager(store=url, cleanup_interval_seconds=None)
    second = StatusManager(store=url, cleanup_interval_seconds=None)
    try:
        receiver.answer = lambda request, earlier: 503
        one = notifiers(first, receiver.url)
        for i in range(3):
            _complete(first, f"doc{i}")
        receiver.wait(lambda rs: len({r.doc_id for r in rs}) == 3)
        one.stop()
        assert len(first.store.outbox(cursor_name(receiver.url), 10)) == 3
        receiver.answer = lambda request, earlier: 200
        notifiers(second, receiver.url)
        _complete(second, "later")
        receiver.wait(lambda rs: len({r.doc_id for r in rs if r.code == 200}) == 4)
    finally:
        first.close()
        second.close()


def test_replicas_on_one_store_deliver_each_document_once_between_them(
    tmp_path: Any, receiver: Receiver, notifiers: Callable[..., Notifier]
) -> None:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    managers = [StatusManager(store=url, cleanup_interval_seconds=None) for _ in range(3)]
    try:
        running = [notifiers(m, receiver.url) for m in managers]
        for i in range(10):
            _complete(managers[i % 3], f"doc{i}")
        receiver.wait(lambda rs: len({r.doc_id for r in rs}) == 10)
        # The holder stops; one of the others takes over at once.
        holder = [n for n in running if n.receivers[0]._started]
        assert len(holder) == 1
        holder[0].stop()
        _complete(managers[0], "after")
        receiver.wait(lambda rs: any(r.doc_id == "after" for r in rs))
        assert sorted(r.doc_id for r in receiver.requests) == sorted(
            [*(f"doc{i}" for i in range(10)), "after"]
        )
    finally:
        for manager in managers:
            manager.close()


class _ShortLog(MemoryStore):
    LOG_SIZE = 10


def test_a_cursor_that_fell_out_of_the_log_says_so(
    receiver: Receiver, notifiers: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "docstatus.notify")
    manager = StatusManager(store=_ShortLog(), cleanup_interval_seconds=None)
    try:
        notifier = notifiers(manager, receiver.url)
        _complete(manager, "seen")
        receiver.wait(lambda rs: len(rs) == 1)
        notifier.stop()
        for i in range(5):
            _complete(manager, f"lost{i}")
        notifier.start()
        _complete(manager, "after")
        receiver.wait(lambda rs: any(r.doc_id == "after" for r in rs))
        line = _only_line(caplog, "were dropped from the store's change log")
        assert "are not notified" in line.getMessage()
    finally:
        manager.close()


# -- settings ---------------------------------------------------------------------------


def test_settings_take_several_urls_separated_by_commas_or_spaces() -> None:
    settings = ServiceSettings.from_env(
        {
            "DOCSTATUS_NOTIFY_URL": "http://a.example/hook, https://b.example:8443/x?k=1  http://c",
            "DOCSTATUS_NOTIFY_SECRET": "Zq9-secret",
        }
    )
    assert settings.notify_url == ("http://a.example/hook", "https://b.example:8443/x?k=1", "http://c")
    assert settings.notify_secret == "Zq9-secret" and "Zq9" not in repr(settings)
    assert ServiceSettings().notify_url == ()
    manager = StatusManager()
    notifier = Notifier.from_settings(manager, settings)
    assert notifier is not None and [r.url for r in notifier.receivers] == list(settings.notify_url)
    notifier.close()
    assert Notifier.from_settings(manager, ServiceSettings()) is None
    manager.close()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/x", "must be an http:// or https:// URL with a host"),
        ("example.com/hook", "must be an http:// or https:// URL with a host"),
        ("http:///path", "must be an http:// or https:// URL with a host"),
        ("http://user:pw@example.com/", "must not hold credentials"),
        ("http://example.com:99999/", "is not a valid URL"),
        ("http://a.example http://a.example", "names a URL twice"),
    ],
)
def test_bad_urls_are_refused_at_start_naming_the_variable(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        ServiceSettings.from_env({"DOCSTATUS_NOTIFY_URL": url, "DOCSTATUS_NOTIFY_SECRET": "k"})
    assert info.value.name == "DOCSTATUS_NOTIFY_URL"


def test_urls_need_a_secret_and_a_secret_is_never_shown() -> None:
    with pytest.raises(ConfigError, match="needs a notify_secret") as info:
        ServiceSettings.from_env({"DOCSTATUS_NOTIFY_URL": "http://a.example/"})
    assert info.value.name == "DOCSTATUS_NOTIFY_URL"
    with pytest.raises(ConfigError) as hidden:
        ServiceSettings.from_env(
            {"DOCSTATUS_NOTIFY_URL": "http://a.example/", "DOCSTATUS_NOTIFY_SECRET": "bad\x01"}
        )
    assert "bad" not in str(hidden.value) and "<hidden>" in str(hidden.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DOCSTATUS_NOTIFY_RETRY_SECONDS", "-1"),
        ("DOCSTATUS_NOTIFY_BACKOFF_SECONDS", "0"),
        ("DOCSTATUS_NOTIFY_BACKOFF_MAX_SECONDS", "nan"),
        ("DOCSTATUS_NOTIFY_TIMEOUT", "soon"),
    ],
)
def test_bad_times_are_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServiceSettings.from_env({variable: value})
    assert info.value.name == variable


def test_every_webhook_variable_is_read() -> None:
    settings = ServiceSettings.from_env(
        {
            "DOCSTATUS_NOTIFY_URL": "https://a.example/",
            "DOCSTATUS_NOTIFY_SECRET": "k",
            "DOCSTATUS_NOTIFY_RETRY_SECONDS": "60",
            "DOCSTATUS_NOTIFY_BACKOFF_SECONDS": "0.5",
            "DOCSTATUS_NOTIFY_BACKOFF_MAX_SECONDS": "8",
            "DOCSTATUS_NOTIFY_TIMEOUT": "3",
        }
    )
    assert (settings.notify_url, settings.notify_secret) == (("https://a.example/",), "k")
    assert (settings.notify_retry_seconds, settings.notify_timeout) == (60, 3)
    assert (settings.notify_backoff_seconds, settings.notify_backoff_max_seconds) == (0.5, 8)


def test_the_backoff_cap_is_at_least_its_base() -> None:
    with pytest.raises(ConfigError, match="at least notify_backoff_seconds"):
        ServiceSettings(notify_backoff_seconds=10, notify_backoff_max_seconds=5)
    assert [Backoff(1, 5).delay(n) for n in (1, 2, 3, 4, 100)] == [1, 2, 4, 5, 5]
