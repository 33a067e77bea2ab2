"""The confidence of precomputed answers (migration 0004_answer_confidence): kept as given, refused outside [0, 1],
and null for the answers written before it, on SQLite and PostgreSQL."""

import math

import pytest
from sqlalchemy import inspect, text

from sleeptime.db import InvalidInput, Store, make_engine, upgrade


def published(store, answers):
    store.append_messages("c", [("user", "my pin is 7", 1), ("user", "hello", 1)])
    return store.publish_checkpoint("c", None, 2, "m", b"state", {}, answers)


def test_confidence_round_trips_through_every_read(store):
    published(store, [("What is my pin?", "what is my pin", "7", [1], 0.8125), ("Hi?", "hi", "hello", [2])])
    assert store.add_answers("c", 1, [("Who?", "who", "me", [], 0.0), ("Why?", "why", "because", [], 1)]) == 2
    _, found = store.context_and_answer("c", "what is my pin")
    assert (found.answer, found.sources, found.confidence) == ("7", (1,), 0.8125)
    assert store.get_precomputed("c", 1, "what is my pin").confidence == 0.8125
    listed = {p.normalized_question: p.confidence for p in store.list_precomputed("c", 1)}
    # an answer given without one has none
    assert listed == {"what is my pin": 0.8125, "hi": None, "who": 0.0, "why": 1.0}
    assert isinstance(listed["why"], float)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "x", math.nan, math.inf, True, [0.5]])
def test_a_confidence_outside_zero_to_one_is_refused_and_changes_nothing(store, bad):
    with pytest.raises(InvalidInput, match="confidence"):
        published(store, [("Hi?", "hi", "hello", [], 0.5), ("What is my pin?", "what is my pin", "7", [1], bad)])
    assert store.get_context("c").head_version is None and store.list_checkpoints("c") == []
    store.publish_checkpoint("c", None, 2, "m", b"state", {}, [("Hi?", "hi", "hello", [], 0.5)])
    with pytest.raises(InvalidInput, match="confidence"):
        store.add_answers("c", 1, [("Who?", "who", "me", [], 0.25), ("What is my pin?", "what is my pin", "7", [1], bad)])
    assert [(p.normalized_question, p.confidence) for p in store.list_precomputed("c", 1)] == [("hi", 0.5)]


def test_the_migration_adds_the_column_and_older_answers_read_back_without_one(db_url):
    upgrade(db_url, "0003_message_search")
    engine = make_engine(db_url)
    with Store(db_url) as store:
        published(store, [])
        # an answer as a pass before this revision wrote it
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO precomputed_answers (context_id, version, normalized_question, question, answer, "
                    "sources, created_at) SELECT id, 1, 'what is my pin', 'What is my pin?', '7', '[1]', :now "
                    "FROM contexts WHERE name = 'c'"
                ),
                {"now": "2026-01-01 00:00:00"},
            )
        assert "confidence" not in {c["name"] for c in inspect(engine).get_columns("precomputed_answers")}
        store.migrate()
        store.require_schema()
        column = {c["name"]: c for c in inspect(engine).get_columns("precomputed_answers")}["confidence"]
        assert column["nullable"]
        _, found = store.context_and_answer("c", "what is my pin")
        assert (found.answer, found.sources, found.confidence) == ("7", (1,), None)
        assert [p.confidence for p in store.list_precomputed("c", 1)] == [None]
        assert store.add_answers("c", 1, [("Hi?", "hi", "hello", [2], 0.5)]) == 1
        assert store.get_precomputed("c", 1, "hi").confidence == 0.5
    engine.dispose()


def test_the_confidence_migration_downgrades_and_upgrades_again(db_url):
    from alembic import command

    from sleeptime.db.migrate import _config

    with Store(db_url) as store:
        store.migrate()
        published(store, [("What is my pin?", "what is my pin", "7", [1], 0.75)])
        engine = make_engine(db_url)
        with engine.begin() as conn:
            config = _config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0003_message_search")
        assert "confidence" not in {c["name"] for c in inspect(engine).get_columns("precomputed_answers")}
        engine.dispose()
        store.migrate()
        # the answer stays; what it said of itself went with the column
        assert [(p.answer, p.confidence) for p in store.list_precomputed("c", 1)] == [("7", None)]
