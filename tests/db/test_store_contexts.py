from datetime import timedelta

import pytest

from sleeptime.db import InvalidInput, Pending, UnknownContext


def test_ensure_get_list(store):
    created = store.ensure_context("alice")
    assert (created.name, created.head_version, created.cursor_seq, created.last_seq) == ("alice", None, 0, 0)
    assert store.ensure_context("alice") == created
    store.ensure_context("bob")
    assert [c.name for c in store.list_contexts()] == ["alice", "bob"]
    assert store.get_context("bob").name == "bob"
    with pytest.raises(UnknownContext, match="'carol'"):
        store.get_context("carol")


@pytest.mark.parametrize("name", ["", "a b", "x" * 129, "é", "a/b", None])
def test_invalid_context_names(store, name):
    with pytest.raises(InvalidInput, match="invalid context name"):
        store.ensure_context(name)
    with pytest.raises(InvalidInput):
        store.append_messages(name, [("user", "hi", 1)])
    assert store.list_contexts() == []


def test_seqs_are_per_context_and_start_at_one(store):
    assert store.append_messages("a", [("user", "one", 3), ("assistant", "two", 3)]) == [1, 2]
    assert store.append_messages("b", [("user", "uno", 3)]) == [1]
    assert store.append_messages("a", [("system", "three", 5)]) == [3]
    info = store.get_context("a")
    assert (info.last_seq, info.cursor_seq) == (3, 0)
    assert [(m.seq, m.role, m.content, m.n_tokens) for m in store.messages_after("a", 0)] == [
        (1, "user", "one", 3),
        (2, "assistant", "two", 3),
        (3, "system", "three", 5),
    ]
    assert [m.seq for m in store.messages_after("a", 1, limit=1)] == [2]
    assert store.messages_after("a", 3) == []


def test_append_without_create(store):
    with pytest.raises(UnknownContext):
        store.append_messages("ghost", [("user", "hi", 1)], create=False)
    assert store.list_contexts() == []


@pytest.mark.parametrize(
    "bad, message",
    [
        (("robot", "hi", 1), "role 'robot'"),
        (("user", "", 1), "content is empty"),
        (("user", "  \n\t", 1), "content is empty"),
        (("user", "x" * 101, 1), "101 bytes, over the limit of 100"),
        (("user", "é" * 51, 1), "102 bytes"),
        (("user", "bad \udcff surrogate", 1), "not valid UTF-8"),
        (("user", "nul \x00 inside", 1), "NUL"),
        (("user", b"bytes", 1), "expected text"),
        (("user", "hi", -1), "n_tokens"),
        (("user", "hi", True), "n_tokens"),
        (("user", "hi"), "expected \\(role, content, n_tokens\\)"),
    ],
)
def test_append_is_all_or_nothing(store, bad, message):
    store.append_messages("a", [("user", "before", 1)])
    with pytest.raises(InvalidInput, match=message):
        store.append_messages("a", [("user", "fine", 1), bad, ("user", "also fine", 1)], max_message_bytes=100)
    assert [m.content for m in store.messages_after("a", 0)] == ["before"]
    # a rejected batch does not create its context either
    with pytest.raises(InvalidInput):
        store.append_messages("new", [bad], max_message_bytes=100)
    assert [c.name for c in store.list_contexts()] == ["a"]


def test_empty_batch_is_refused(store):
    with pytest.raises(InvalidInput, match="no messages"):
        store.append_messages("a", [])


def test_pending_counts_after_the_head_cursor(store):
    store.append_messages("a", [("user", "one", 10), ("assistant", "two", 20), ("user", "three", 30)])
    assert store.pending("a") == Pending(messages=3, tokens=60, cursor_seq=0)
    store.publish_checkpoint("a", None, 2, "demo", b"state", {})
    assert store.pending("a") == Pending(messages=1, tokens=30, cursor_seq=2)
    with pytest.raises(UnknownContext):
        store.pending("ghost")


def test_activity_is_recorded(store, clock):
    store.ensure_context("a")
    created = store.get_context("a").last_activity_at
    clock.advance(10)
    store.append_messages("a", [("user", "hi", 1)])
    appended = store.get_context("a").last_activity_at
    clock.advance(10)
    store.touch("a")
    touched = store.get_context("a").last_activity_at
    assert created < appended < touched
    assert touched.tzinfo is not None and (touched - created).total_seconds() == pytest.approx(20, abs=1)
    with pytest.raises(UnknownContext):
        store.touch("ghost")


def test_idle_contexts(store, clock):
    store.append_messages("busy", [("user", "hi", 1)])
    store.append_messages("quiet", [("user", "hi", 1)])
    store.append_messages("done", [("user", "hi", 1)])
    store.publish_checkpoint("done", None, 1, "demo", b"state", {})
    store.ensure_context("empty")
    assert store.idle_contexts(60) == []
    clock.advance(61)
    store.append_messages("busy", [("user", "again", 1)])
    # done has nothing after its cursor, empty has no messages at all
    assert store.idle_contexts(60) == ["quiet"]
    # a query counts as activity too
    store.log_query("quiet", "what?", "online", 3.0)
    assert store.idle_contexts(60) == []
    assert store.idle_contexts(60, now=clock() + timedelta(seconds=61)) == ["busy", "quiet"]
    with pytest.raises(InvalidInput, match="aware"):
        store.idle_contexts(60, now=clock().replace(tzinfo=None))


def test_a_context_that_never_rests_sleeps_once_a_message_waited_max_wait(store, clock):
    store.append_messages("chatty", [("user", "hi", 1)])
    store.append_messages("calm", [("user", "hi", 1)])
    for _ in range(10):
        clock.advance(60)
        # queried every minute: never idle for 120 s
        store.log_query("chatty", "what?", "online", 3.0)
        store.log_query("calm", "what?", "online", 3.0)
    assert store.idle_contexts(120) == []
    # both messages have waited 600 s, more than max_wait (500 s); a fresh one alone is not overdue
    assert sorted(store.idle_contexts(120, max_wait_seconds=500)) == ["calm", "chatty"]
    store.publish_checkpoint("calm", None, 1, "demo", b"state", {})
    store.append_messages("calm", [("user", "new", 1)])
    assert store.idle_contexts(120, max_wait_seconds=500) == ["chatty"]
