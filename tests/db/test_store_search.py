"""The full-text index over messages (migration 0003_message_search): in step with ingest, transaction rollback,
checkpoint rollback and forgetting a context, on SQLite (FTS5) and PostgreSQL (tsvector + GIN)."""

import pytest
from sqlalchemy import text

from sleeptime.db import HeadConflict, InvalidInput, Store, make_engine, upgrade

SECRET = "zanzibar"


def seqs(records):
    return [r.seq for r in records]


def test_search_ranks_matches_and_leaves_out_other_contexts(store):
    store.append_messages("alice", [
        ("user", "my locker code is 1111", 5),
        ("assistant", "noted, thanks", 3),
        ("user", "the weather is nice today", 5),
        ("user", "my locker code is now 2222", 5),
    ])
    store.append_messages("bob", [("user", "my locker code is 9999", 5)])
    assert sorted(seqs(store.search_messages("alice", "What is my locker code?"))) == [1, 4]
    assert seqs(store.search_messages("alice", "What is my locker code?", up_to_seq=3)) == [1]
    assert seqs(store.search_messages("alice", "locker code", limit=1))[0] in (1, 4)
    # a question of stop words alone matches nothing rather than everything
    assert store.search_messages("alice", "What is it?") == []


def test_equal_matches_come_newest_first(store):
    store.append_messages("c", [("user", "my pin is 1234", 4), ("user", "my pin is 5678", 4)])
    assert seqs(store.search_messages("c", "what is my pin")) == [2, 1]


def test_search_refuses_bad_input_and_unknown_contexts(store):
    from sleeptime.db import UnknownContext

    store.append_messages("c", [("user", "hello there", 2)])
    for bad in ("", "   ", "a\x00b", 7):
        with pytest.raises(InvalidInput):
            store.search_messages("c", bad)
    with pytest.raises(InvalidInput):
        store.search_messages("c", "hello", limit=0)
    with pytest.raises(UnknownContext):
        store.search_messages("nobody", "hello")
    # query syntax in a question is read as words, never as FTS5 or tsquery operators
    assert seqs(store.search_messages("c", 'hello" OR NEAR(x) & !there:* | (')) == [1]


def test_a_rolled_back_ingest_leaves_the_index_as_it_was(store):
    store.append_messages("c", [("user", "first words here", 3)])
    engine = make_engine(store.url)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        ctx = conn.execute(text("SELECT id FROM contexts WHERE name = 'c'")).scalar_one()
        conn.execute(
            text("INSERT INTO messages (context_id, seq, role, content, n_tokens, created_at) "
                 "VALUES (:c, 2, 'user', :content, 1, CURRENT_TIMESTAMP)"),
            {"c": ctx, "content": f"the {SECRET} statement"},
        )
        raise RuntimeError("crash before commit")
    engine.dispose()
    assert store.search_messages("c", SECRET) == []
    # a batch with one bad message stores nothing, in the index either
    with pytest.raises(InvalidInput):
        store.append_messages("c", [("user", f"{SECRET} again", 2), ("robot", "bad role", 1)])
    assert store.search_messages("c", SECRET) == []
    assert store.append_messages("c", [("user", f"{SECRET} at last", 2)]) == [2]
    assert seqs(store.search_messages("c", SECRET)) == [2]


def test_a_checkpoint_rollback_leaves_the_index_alone(store):
    store.append_messages("c", [("user", f"my {SECRET} is red", 4)])
    store.publish_checkpoint("c", None, 1, "m", b"state-1", {})
    store.append_messages("c", [("user", f"my {SECRET} is blue", 4)])
    store.publish_checkpoint("c", 1, 2, "m", b"state-2", {})
    store.rollback("c", 1)
    assert sorted(seqs(store.search_messages("c", SECRET))) == [1, 2]


def _index_bytes(engine) -> bytes:
    """Every byte the SQLite full-text index holds, over all of its shadow tables."""
    out = b""
    with engine.connect() as conn:
        tables = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'messages_fts_%'"))
        for (table,) in tables.all():
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                out += b"".join(v if isinstance(v, bytes) else str(v).encode() for v in row)
    return out


def test_forgetting_a_context_leaves_no_term_of_it_in_the_index(store):
    store.append_messages("keep", [("user", "my locker code is 4821", 5)])
    store.append_messages("gone", [("user", f"my password is {SECRET}", 5), ("user", "I live in Quimper", 4)])
    engine = make_engine(store.url)
    if store.backend == "sqlite":
        assert SECRET.encode() in _index_bytes(engine)
    # forget deletes the context row; its messages go by cascade, and the index with them
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM contexts WHERE name = 'gone'"))
    if store.backend == "sqlite":
        held = _index_bytes(engine)
        assert SECRET.encode() not in held and b"quimper" not in held and b"4821" in held
    else:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM messages WHERE content_tsv @@ 'zanzibar'")).scalar() == 0
    engine.dispose()
    # the name is reused fresh
    store.append_messages("gone", [("user", "a new start", 3)])
    assert store.search_messages("gone", SECRET) == []
    assert seqs(store.search_messages("keep", "locker code")) == [1]


def test_upgrading_indexes_the_messages_already_stored(db_url):
    upgrade(db_url, "0002")
    with Store(db_url) as store:
        store.append_messages("c", [("user", f"the {SECRET} was stored before the index", 8)])
        store.migrate()
        assert seqs(store.search_messages("c", SECRET)) == [1]
        store.append_messages("c", [("user", f"{SECRET} after", 2)])
        assert sorted(seqs(store.search_messages("c", SECRET))) == [1, 2]


def test_provenance_of_extracted_questions_moves_to_the_newest_statement(store):
    store.append_messages("c", [("user", "my pin is 1", 1), ("user", "my pin is 2", 1)])
    store.add_anticipated("c", ["What is my pin?"], source="extracted", source_seqs=[1])
    store.add_anticipated("c", ["what is my PIN"], source="extracted", source_seqs=[2])
    store.add_anticipated("c", ["What is my pin?"], source="extracted", source_seqs=[1])
    [question] = store.list_anticipated("c")
    assert (question.source, question.source_seq) == ("extracted", 2)
    with pytest.raises(InvalidInput):
        store.add_anticipated("c", ["Where?", "Who?"], source="extracted", source_seqs=[1])
    with pytest.raises(InvalidInput):
        store.add_anticipated("c", ["Where do I live?"], source="extracted", source_seqs=[0])
    assert len(store.list_anticipated("c")) == 1


def test_answers_keep_their_sources_and_new_ones_join_the_same_head(store):
    store.append_messages("c", [("user", "my pin is 7", 1), ("user", "hello", 1)])
    store.publish_checkpoint("c", None, 2, "m", b"s", {}, [("What is my pin?", "what is my pin", "7", [1])])
    _, found = store.context_and_answer("c", "what is my pin")
    assert found.sources == (1,)
    added = store.add_answers("c", 1, [("Hi?", "hi", "hello", [2, 2]), ("What is my pin?", "what is my pin", "8", [])])
    assert added == 1
    assert {p.normalized_question: (p.answer, p.sources) for p in store.list_precomputed("c", 1)} == {
        "what is my pin": ("7", (1,)), "hi": ("hello", (2,))
    }
    store.append_messages("c", [("user", "more", 1)])
    store.publish_checkpoint("c", 1, 3, "m", b"s2", {})
    with pytest.raises(HeadConflict):
        store.add_answers("c", 1, [("Late?", "late", "no", [])])
    with pytest.raises(InvalidInput):
        store.add_answers("c", 2, [("Bad?", "bad", "x", [0])])
    assert [p.question for p in store.list_precomputed("c", 1)] == ["What is my pin?", "Hi?"]
    assert store.list_precomputed("c", 2) == []


def test_the_search_migration_downgrades_and_upgrades_again(db_url):
    from alembic import command

    from sleeptime.db.migrate import _config

    with Store(db_url) as store:
        store.migrate()
        store.append_messages("c", [("user", f"the {SECRET} stays", 3)])
        engine = make_engine(db_url)
        with engine.begin() as conn:
            config = _config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0002")
        engine.dispose()
        store.migrate()
        assert seqs(store.search_messages("c", SECRET)) == [1]
