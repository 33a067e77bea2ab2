"""Re-reading in the pass: each anticipated question answered after the messages that hold its answer, with their
seqs kept as the answer's sources; and a pass due for questions asked since the last one."""

import pytest

from sleeptime.db import normalize_question
from sleeptime.jobs import consolidate as job
from sleeptime.jobs.anticipate import Question, reading_for

from .conftest import transcript

OLD = "my locker code is 1111, I wrote it on the inside of my notebook"
NEW = "my locker code is 2222 now, they changed every lock in the building"


def question(text, source_seq=None):
    return Question(text, normalize_question(text), "registered", source_seq)


def test_rereading_picks_the_latest_of_two_conflicting_statements(store, tiny_engine):
    messages = [("user", OLD, 1), *[(m["role"], m["content"], 1) for m in transcript(6)], ("user", NEW, 1)]
    store.append_messages("c", messages)
    asked = question("What is my locker code?")
    tokenizer = tiny_engine.tokenizer
    # a window that holds one statement beside the question: the newer one
    one = len(tokenizer.encode_prompt(asked.text)) + len(tokenizer.encode_message("user", NEW))
    assert [m.seq for m in reading_for(store, "c", asked, 8, tokenizer, one)] == [8]
    # the tiny model's window (32) holds neither: the newest is read whole, its end inside the window
    assert [m.seq for m in reading_for(store, "c", asked, 8, tokenizer, tiny_engine.config.window)] == [8]
    # room for both: fed in seq order, so the newer statement is the one nearest the question
    assert [m.seq for m in reading_for(store, "c", asked, 8, tokenizer, 10_000)] == [1, 8]
    # nothing after the pass's range is read
    assert [m.seq for m in reading_for(store, "c", asked, 7, tokenizer, 10_000)] == [1]


def test_rereading_starts_from_the_message_a_question_was_extracted_from(store, tiny_engine):
    store.append_messages("c", [("user", "my favourite colour is teal", 1), ("user", "unrelated chatter", 1)])
    # its provenance is read even where the words of the question do not match it
    odd = question("Which hue do I like?", source_seq=1)
    assert [m.seq for m in reading_for(store, "c", odd, 2, tiny_engine.tokenizer, 10_000)] == [1]
    assert reading_for(store, "c", question("Which hue do I like?"), 2, tiny_engine.tokenizer, 10_000) == []


def test_the_pass_stores_each_answers_sources_and_the_reading_leaves_the_state_alone(make_app, store):
    app = make_app(rehearse=False)
    app.ingest("c", [{"role": "user", "content": OLD}, *transcript(4), {"role": "user", "content": NEW}])
    app.anticipate("c", ["Where is the river?"])
    first = app.consolidate("c").checkpoint
    answers = {p.normalized_question: p for p in store.list_precomputed("c", 1)}
    # extracted from both statements: the provenance is the newest, and the reading holds it
    assert 6 in answers["what is my locker code"].sources
    assert app.query("c", "What is my locker code?").sources == answers["what is my locker code"].sources
    [extracted] = [q for q in store.list_anticipated("c") if q.source == "extracted"]
    assert extracted.source_seq == 6
    # re-reading branches: the published state is the one a pass without it writes
    other = make_app(rehearse=False)
    other.ingest("d", [{"role": "user", "content": OLD}, *transcript(4), {"role": "user", "content": NEW}])
    other.anticipate("d", ["Where is the river?"])
    plain = job.consolidate(store, other.engine, "d", reread="off").checkpoint
    assert plain.sha256 == first.sha256
    assert all(p.sources == () for p in store.list_precomputed("d", 1))


def test_questions_alone_schedule_a_pass_that_answers_them_for_the_same_head(make_app, store, clock):
    app = make_app(rehearse=True)
    app.ingest("c", [{"role": "user", "content": NEW}, *transcript(3)])
    app.consolidate("c")
    clock.advance(3600)
    assert store.idle_contexts(60) == []
    online = app.query("c", "What is my locker code, please?")
    assert (online.source, online.sources) == ("online", ())
    # not yet idle after the question; then due with no new message
    assert store.idle_contexts(60) == []
    clock.advance(61)
    assert store.idle_contexts(60) == ["c"]
    done = app.consolidate("c")
    assert (done.published, done.checkpoint.version, done.answered) == (False, 1, 1)
    assert [v.version for v in store.list_checkpoints("c")] == [1]
    again = app.query("c", "what is my locker code, please")
    assert (again.source, again.checkpoint) == ("precomputed", 1) and 1 in again.sources
    # the pass is recorded, so the same question does not schedule another
    clock.advance(61)
    assert store.idle_contexts(60) == []
    assert store.last_run("c").published_version == 1
    assert app.consolidate("c").answered == 0


def test_a_registered_question_schedules_a_pass_and_a_moved_head_wins(make_app, store, clock, monkeypatch):
    app = make_app()
    app.ingest("c", transcript(3))
    app.consolidate("c")
    clock.advance(3600)
    app.anticipate("c", ["Where is the river?"])
    assert store.idle_contexts(60) == ["c"]
    # a rollback or another pass moving the head in between: the answers are not attached to the wrong version
    real = store.add_answers

    def moved(*args, **kwargs):
        store.append_messages("c", [("user", "new", 1)])
        store.publish_checkpoint("c", 1, 4, app.engine.model_id, b"x", {})
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "add_answers", moved)
    from sleeptime.db import HeadConflict

    with pytest.raises(HeadConflict):
        app.consolidate("c")
    assert store.last_run("c").status == "superseded"
    assert store.list_precomputed("c", 1) == [] or all(
        p.normalized_question != "where is the river" for p in store.list_precomputed("c", 1)
    )


def test_rereading_from_an_empty_memory_and_a_bad_setting(make_app, store, tiny_engine):
    from sleeptime import SleeptimeError

    app = make_app(reread="fresh")
    app.ingest("c", [{"role": "user", "content": NEW}, *transcript(3)])
    with pytest.raises(SleeptimeError, match="reread must be one of"):
        job.consolidate(store, tiny_engine, "c", reread="sometimes")
    assert store.head_checkpoint_meta("c") is None and store.list_runs("c") == []
    app.consolidate("c")
    [answer] = [p for p in store.list_precomputed("c", 1) if p.normalized_question == "what is my locker code"]
    read = [{"role": m.role, "content": m.content} for m in store.messages_at("c", answer.sources)]
    expected = tiny_engine.answer(tiny_engine.new_state(), answer.question, read, max_new_tokens=job.ANSWER_TOKENS)
    assert answer.sources == (1,) and answer.answer == expected.replace("\x00", "")
