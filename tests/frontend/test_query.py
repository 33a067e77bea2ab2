import logging
import threading
import time
from datetime import datetime, timezone

import pytest

from sleeptime.db import InvalidInput, MessageRecord, UnknownContext
from sleeptime.frontend.query import ABSTAINED, LoadedState, QueryEngine, QueryLogWriter, StateCache, cap_tail
from sleeptime.models.tokenizer import encode_message


class Spy:
    """The tiny engine, recording what each answer was given."""

    def __init__(self, engine):
        self.engine, self.model_id, self.calls = engine, engine.model_id, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def reply(self, state, question, tail=(), max_new_tokens=64):
        self.calls.append({"position": state["position"], "question": question, "tail": list(tail)})
        return self.engine.reply(state, question, tail=tail, max_new_tokens=4)


def messages(n, offset=0):
    return [{"role": "user", "content": f"message number {offset + i}"} for i in range(n)]


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def spy(tiny_engine):
    return Spy(tiny_engine)


@pytest.fixture
def queries(store, spy):
    return QueryEngine(store, lambda: spy, cache_bytes=10**8, max_new_tokens=4)


def test_anticipated_questions_are_precomputed_and_others_online(app, store, queries, spy):
    app.ingest("c", messages(3))
    app.anticipate("c", ["What is my name?"])
    app.consolidate("c")
    hit = queries.query("c", "what is my NAME")
    assert (hit.source, hit.checkpoint) == ("precomputed", 1) and hit.latency_ms >= 0
    assert hit.answer == store.get_precomputed("c", 1, "what is my name").answer
    assert spy.calls == []
    miss = queries.query("c", "Where do I live?")
    assert (miss.source, miss.checkpoint) == ("online", 1)
    assert spy.calls[0]["tail"] == [] and spy.calls[0]["position"] > 0
    logged = store.recent_questions("c")
    assert logged == ["Where do I live?", "what is my NAME"]


def test_a_query_reads_the_database_once_and_a_miss_answers_from_that_read(app, store, queries, spy, monkeypatch):
    app.ingest("c", messages(3))
    app.anticipate("c", ["What is my name?"])
    app.consolidate("c")
    reads = []
    read = store.context_and_answer
    monkeypatch.setattr(store, "context_and_answer", lambda *args: reads.append(args) or read(*args))
    hit = queries.answer_precomputed(queries.lookup("c", "What is my name?"))
    assert hit.source == "precomputed" and len(reads) == 1
    # the front end's path on a miss: the precomputed check, then the online answer from the same lookup
    lookup = queries.lookup("c", "Where do I live?")
    assert queries.answer_precomputed(lookup) is None
    app.ingest("c", messages(1, offset=3))
    app.consolidate("c")  # the head moves on after the read: the answer is the looked-up head's
    miss = queries.answer(lookup)
    assert (miss.source, miss.checkpoint) == ("online", 1) and len(reads) == 2
    assert store.recent_questions("c") == ["Where do I live?", "What is my name?"]


def test_a_message_after_the_head_makes_precomputed_answers_stale(app, queries, spy):
    app.ingest("c", messages(2))
    app.anticipate("c", ["What is my name?"])
    app.consolidate("c")
    app.ingest("c", [{"role": "user", "content": "my name is Bo"}])
    result = queries.query("c", "What is my name?")
    assert (result.source, result.checkpoint) == ("online", 1)
    assert spy.calls[0]["tail"] == [{"role": "user", "content": "my name is Bo"}]


def test_without_a_checkpoint_the_tail_is_answered_from_a_fresh_state(app, queries, spy):
    app.ingest("c", messages(3))
    result = queries.query("c", "anything?")
    assert (result.source, result.checkpoint) == ("online", None)
    assert spy.calls[0]["position"] == 0 and spy.calls[0]["tail"] == messages(3)


def test_the_tail_is_capped_to_the_newest_tokens(app, store, spy):
    app.ingest("c", messages(10))
    size = len(encode_message("user", "message number 0"))
    QueryEngine(store, lambda: spy, 10**8, tail_tokens=3 * size).query("c", "q?")
    assert spy.calls[0]["tail"] == messages(3, offset=7)


def test_cap_tail_keeps_the_end_of_one_huge_message():
    now = datetime.now(timezone.utc)
    huge = MessageRecord(1, "user", "x" * 100 + "é" + "tail end", 120, now)
    # [ROLE] + 10 bytes + [END]: "é" is two bytes
    assert cap_tail([huge], max_tokens=12) == [{"role": "user", "content": "étail end"}]
    # one byte less splits "é", whose remaining half is dropped
    assert cap_tail([huge], max_tokens=11) == [{"role": "user", "content": "tail end"}]
    assert cap_tail([], 10) == []


def test_cap_tail_counts_the_models_subwords(tiny_bpe):
    now = datetime.now(timezone.utc)
    records = [MessageRecord(i, "user", f"message number {i}, café 😀", 0, now) for i in range(6)]
    size = len(tiny_bpe.encode_message("user", records[0].content))
    kept = cap_tail(records, 2 * size + 1, tiny_bpe)
    assert kept == [{"role": "user", "content": r.content} for r in records[-2:]]
    huge = MessageRecord(1, "user", "x y z " * 100 + "the tail end 😀", 0, now)
    [end] = cap_tail([huge], 10, tiny_bpe)
    assert huge.content.endswith(end["content"]) and len(tiny_bpe.encode_text(end["content"])) <= 8
    assert len(tiny_bpe.encode_text(huge.content[-len(end["content"]) - 1 :])) > 8


def test_a_corrupt_head_falls_back_to_the_previous_version(app, queries, spy, corrupt_checkpoint):
    app.ingest("c", messages(2))
    app.consolidate("c")
    app.ingest("c", messages(2, offset=2))
    app.consolidate("c")
    corrupt_checkpoint("c", 2)
    result = queries.query("c", "What is my name?")
    assert (result.source, result.checkpoint) == ("online", 1)
    # the state of version 1 plus the messages it has not consumed
    assert spy.calls[0]["tail"] == messages(2, offset=2)


def test_concurrent_queries_load_the_state_once(app, store, queries):
    app.ingest("c", messages(4))
    app.consolidate("c")
    results, barrier = [], threading.Barrier(6)

    def ask(i):
        barrier.wait()
        results.append(queries.query("c", f"question {i}?"))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and {r.checkpoint for r in results} == {1}
    assert queries.cache.loads == 1 and len(store.recent_questions("c")) == 6


@pytest.mark.parametrize("limit", [1, 3])
def test_online_answers_are_generated_at_most_max_generations_at_once(app, store, spy, limit):
    app.ingest("c", messages(2))
    app.consolidate("c")
    running, peak, lock = [0], [0], threading.Lock()
    reply = spy.reply

    def slow_reply(*args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        # long enough for every waiting thread to reach the semaphore, even on a busy machine
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return reply(*args, **kwargs)

    spy.reply = slow_reply
    queries = QueryEngine(store, lambda: spy, 10**8, max_new_tokens=4, max_generations=limit)
    threads = [threading.Thread(target=queries.query, args=("c", f"question {i}?")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(spy.calls) == 8 and peak[0] == limit


def test_warm_loads_the_head_state_before_the_first_query(app, queries):
    app.ingest("c", messages(2))
    assert not queries.warm("c")
    app.consolidate("c")
    assert queries.warm("c") and queries.warm("c") and queries.cache.loads == 1
    assert queries.query("c", "anything?").checkpoint == 1 and queries.cache.loads == 1


def test_bad_questions_and_unknown_contexts(app, queries):
    app.ingest("c", messages(1))
    for bad in ("", "   ", "?!", "x" * 9000):
        with pytest.raises(InvalidInput):
            queries.query("c", bad)
    with pytest.raises(UnknownContext):
        queries.query("ghost", "hello?")


def test_every_answer_carries_the_models_confidence(app, store, queries, tiny_engine):
    app.ingest("c", messages(3))
    app.anticipate("c", ["What is my name?"])
    app.consolidate("c")
    hit = queries.query("c", "What is my name?")
    stored = store.get_precomputed("c", 1, "what is my name")
    assert (hit.source, hit.answer, hit.confidence) == ("precomputed", stored.answer, stored.confidence)
    miss = queries.query("c", "Where do I live?")
    assert miss.source == "online" and 0.0 <= miss.confidence <= 1.0
    # the same question on the same state: the same number, the engine's own
    again = queries.query("c", "Where do I live?")
    assert (again.answer, again.confidence) == (miss.answer, miss.confidence)
    state = tiny_engine.decode_state(store.load_checkpoint("c").payload)
    assert miss.confidence == tiny_engine.reply(state, "Where do I live?", max_new_tokens=4).confidence
    assert not hit.abstained and not miss.abstained and hit.guess is miss.guess is None
    assert set(miss.to_dict()) == {
        "answer", "source", "checkpoint", "latency_ms", "sources", "confidence", "abstained", "guess"
    }


def test_answers_less_probable_than_the_threshold_are_withheld_and_their_guess_kept(app, store, spy):
    app.ingest("c", messages(3))
    app.anticipate("c", ["What is my name?"])
    app.consolidate("c")
    questions = ["What is my name?", "Where do I live?"]

    def ask(min_confidence):
        return [QueryEngine(store, lambda: spy, 10**8, max_new_tokens=4, min_confidence=min_confidence).query("c", q)
                for q in questions]

    given = ask(0.0)
    assert [r.source for r in given] == ["precomputed", "online"] and not any(r.abstained for r in given)
    for withheld, answer in zip(ask(1.0), given, strict=True):
        assert (withheld.answer, withheld.abstained, withheld.guess) == (ABSTAINED, True, answer.answer)
        assert (withheld.source, withheld.checkpoint, withheld.confidence) == (answer.source, 1, answer.confidence)
    # "below" the threshold: an answer exactly as probable as it is given
    online = given[1]
    assert ask(online.confidence)[1].answer == online.answer
    assert ask(min(1.0, online.confidence * 1.01 + 1e-12))[1].abstained
    # what was asked is logged, withheld or not
    assert store.recent_questions("c") == list(reversed(questions))


def test_a_precomputed_answer_without_a_confidence_is_never_withheld(app, store, spy):
    app.ingest("c", messages(3))
    app.consolidate("c")
    # as a pass wrote it before confidence was kept
    store.add_answers("c", 1, [("Who am I?", "who am i", "Ada", [])])
    result = QueryEngine(store, lambda: spy, 10**8, min_confidence=1.0).query("c", "who am I")
    assert (result.source, result.answer, result.confidence, result.abstained, result.guess) == (
        "precomputed", "Ada", None, False, None
    )


def test_state_cache_loads_each_key_once_under_concurrent_misses():
    cache, calls, barrier = StateCache(budget_bytes=100), [], threading.Barrier(8)

    def loader():
        calls.append(1)
        time.sleep(0.05)
        return LoadedState(1, 0, object(), 10)

    def get():
        barrier.wait()
        cache.get_or_load(("c", 1), loader)

    threads = [threading.Thread(target=get) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(cache) == 1


def test_state_cache_evicts_least_recently_used_within_its_budget():
    cache = StateCache(budget_bytes=100)
    for version in (1, 2, 3):
        cache.get_or_load(("c", version), lambda v=version: LoadedState(v, 0, None, 40))
    assert len(cache) == 2 and cache.used == 80
    cache.get_or_load(("c", 2), lambda: pytest.fail("cached"))
    cache.get_or_load(("c", 4), lambda: LoadedState(4, 0, None, 40))
    cache.get_or_load(("c", 2), lambda: pytest.fail("cached"))
    # too big to keep: served, not cached
    cache.get_or_load(("c", 5), lambda: LoadedState(5, 0, None, 101))
    assert len(cache) == 2 and cache.loads == 5


def row(question, context="c"):
    return (context, question, "online", 1.0, None)


@pytest.fixture
def batches(store, monkeypatch):
    """The batches store.log_queries was called with, by thread name."""
    calls, write = [], store.log_queries

    def record(rows):
        calls.append((threading.current_thread().name, [r[1] for r in rows]))
        write(rows)

    monkeypatch.setattr(store, "log_queries", record)
    return calls


def test_the_log_writer_batches_rows_and_a_clean_close_loses_none(store, batches):
    store.ensure_context("c")
    # a long linger: the rows wait for more until a flush
    writer = QueryLogWriter(store, linger=60)
    for i in range(5):
        writer.add(row(f"q{i}?"))
    writer.flush()
    assert batches == [("query-log", ["q0?", "q1?", "q2?", "q3?", "q4?"])]
    writer.add(row("last?"))
    writer.close()
    assert store.recent_questions("c") == ["last?", "q4?", "q3?", "q2?", "q1?", "q0?"]
    # once closed, a row is written by its caller
    writer.add(row("after?"))
    assert batches[-1] == (threading.current_thread().name, ["after?"])
    writer.close()


def test_a_full_log_queue_writes_in_the_caller_rather_than_drop(store, batches, monkeypatch):
    store.ensure_context("c")
    entered, release, write = threading.Event(), threading.Event(), store.log_queries

    def slow(rows):
        if threading.current_thread().name == "query-log":
            entered.set()
            release.wait(30)
        write(rows)

    monkeypatch.setattr(store, "log_queries", slow)
    writer = QueryLogWriter(store, max_pending=1, linger=0)
    writer.add(row("first?"))
    assert entered.wait(30)
    writer.add(row("queued?"))
    writer.add(row("overflow?"))
    assert batches == [(threading.current_thread().name, ["overflow?"])]
    release.set()
    writer.close()
    assert [b[1] for b in batches] == [["overflow?"], ["first?"], ["queued?"]]
    assert sorted(store.recent_questions("c")) == ["first?", "overflow?", "queued?"]


def test_a_row_the_database_refuses_is_dropped_alone(store, batches, caplog):
    store.ensure_context("c")
    writer = QueryLogWriter(store, linger=60)
    for r in (row("a?"), row("lost?", context="ghost"), row("b?")):
        writer.add(r)
    with caplog.at_level(logging.WARNING, logger="sleeptime.frontend.query"):
        writer.close()
    assert store.recent_questions("c") == ["b?", "a?"]
    assert "'ghost' dropped" in caplog.text


def test_queries_log_through_the_writer_when_one_is_set(app, store, queries, batches):
    app.ingest("c", messages(2))
    queries.log_writer = QueryLogWriter(store, linger=60)
    queries.query("c", "one?")
    queries.query("c", "two?")
    assert batches == []
    queries.flush_log()
    assert batches == [("query-log", ["one?", "two?"])]
    queries.log_writer.close()
