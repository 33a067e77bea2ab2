import pytest

from sleeptime.db import InvalidInput, UnknownContext, normalize_question


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("What is X?", "what is x"),
        ("  what   IS\tx ?! ", "what is x"),
        ("Straße...", "strasse"),
        ("v1.2 release?", "v1.2 release"),
        ("???", ""),
    ],
)
def test_normalize_question(text, normalized):
    assert normalize_question(text) == normalized


def test_add_and_list_anticipated(store):
    store.ensure_context("a")
    assert store.add_anticipated("a", ["Where do I live?", "where do i live", " Who am I? "]) == 2
    assert store.add_anticipated("a", ["WHERE do I live?!", "What's new?"], source="extracted") == 1
    listed = store.list_anticipated("a")
    assert [(q.question, q.normalized, q.source) for q in listed] == [
        ("Where do I live?", "where do i live", "registered"),
        ("Who am I?", "who am i", "registered"),
        ("What's new?", "what's new", "extracted"),
    ]


@pytest.mark.parametrize(
    "questions, source, message",
    [
        (["ok"], "guessed", "source 'guessed'"),
        (["ok", ""], "registered", "question is empty"),
        (["?!"], "registered", "has no words"),
        (["x" * 9000], "registered", "over the limit"),
    ],
)
def test_bad_anticipated_questions_change_nothing(store, questions, source, message):
    store.ensure_context("a")
    with pytest.raises(InvalidInput, match=message):
        store.add_anticipated("a", questions, source=source)
    assert store.list_anticipated("a") == []
    with pytest.raises(UnknownContext):
        store.add_anticipated("ghost", ["ok"])


def test_query_log_and_recent_questions(store, clock):
    store.ensure_context("a")
    assert store.recent_questions("a") == []
    for question in ["first?", "second?", "first?", "third?"]:
        clock.advance(1)
        store.log_query("a", question, "online", 12.5, version=None)
    assert store.recent_questions("a") == ["third?", "first?", "second?"]
    assert store.recent_questions("a", limit=2) == ["third?", "first?"]
    with pytest.raises(InvalidInput):
        store.log_query("a", "", "online", 1.0)
    with pytest.raises(UnknownContext):
        store.log_query("ghost", "q", "online", 1.0)


def test_log_queries_writes_a_batch_in_order_or_nothing(store, clock):
    store.ensure_context("a")
    store.ensure_context("b")
    before = store.get_context("b").last_activity_at
    clock.advance(5)
    store.log_queries(
        [("a", "first?", "online", 1.0, None), ("b", "other?", "precomputed", 0.2, 1), ("a", "next?", "online", 2.0, None)]
    )
    assert store.recent_questions("a") == ["next?", "first?"] and store.recent_questions("b") == ["other?"]
    assert store.get_context("b").last_activity_at > before
    # one row for an unknown context, or one bad row, and the batch writes nothing
    with pytest.raises(UnknownContext, match="ghost"):
        store.log_queries([("a", "lost?", "online", 1.0, None), ("ghost", "q?", "online", 1.0, None)])
    with pytest.raises(InvalidInput):
        store.log_queries([("a", "lost?", "online", 1.0, None), ("a", "", "online", 1.0, None)])
    assert store.recent_questions("a") == ["next?", "first?"]
    store.log_queries([])

