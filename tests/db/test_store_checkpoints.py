import hashlib

import pytest

from sleeptime.db import CorruptCheckpoint, HeadConflict, InvalidInput, UnknownContext, UnknownVersion


@pytest.fixture
def ctx(store):
    store.append_messages("ctx", [("user", f"message {i}", 4) for i in range(10)])
    return "ctx"


def publish(store, parent, cursor, payload=b"state", **kwargs):
    return store.publish_checkpoint("ctx", parent, cursor, "demo", payload, {"surprise": 0.5}, **kwargs)


def test_publish_chain(store, ctx):
    assert store.head_checkpoint_meta(ctx) is None
    first = publish(store, None, 4, b"one")
    assert (first.version, first.parent_version, first.cursor_seq, first.model_id) == (1, None, 4, "demo")
    assert first.sha256 == hashlib.sha256(b"one").hexdigest() and first.size_bytes == 3
    assert first.meta == {"surprise": 0.5} and first.created_at.tzinfo is not None
    second = publish(store, 1, 10, b"two")
    assert (second.version, second.parent_version) == (2, 1)
    info = store.get_context(ctx)
    assert (info.head_version, info.cursor_seq) == (2, 10)
    assert store.head_checkpoint_meta(ctx) == second
    assert [c.version for c in store.list_checkpoints(ctx)] == [2, 1]
    loaded = store.load_checkpoint(ctx)
    assert (loaded.version, loaded.payload, loaded.meta) == (2, b"two", {"surprise": 0.5})
    assert store.load_checkpoint(ctx, 1).payload == b"one"


def test_cas_same_parent_exactly_one_wins(store, ctx):
    publish(store, None, 2)
    publish(store, 1, 4)
    with pytest.raises(HeadConflict, match="head is at 2, not at the expected parent 1"):
        publish(store, 1, 5)
    with pytest.raises(HeadConflict):
        publish(store, None, 5)
    assert [c.version for c in store.list_checkpoints(ctx)] == [2, 1]
    assert store.get_context(ctx).head_version == 2


def test_a_conflict_writes_nothing(store, ctx, sql):
    publish(store, None, 2)
    run = store.start_run(ctx, 0, 0, 5)
    with pytest.raises(HeadConflict):
        publish(store, None, 5, answers=[("Q?", "q", "a")], run_id=run)
    assert sql("SELECT count(*) FROM checkpoints")[0][0] == 1
    assert sql("SELECT count(*) FROM precomputed_answers")[0][0] == 0
    assert store.last_run(ctx).status == "running"


@pytest.mark.parametrize(
    "parent, cursor, message",
    [(None, 11, "cursor 11 is outside \\[0, 10\\]"), (1, 2, "cursor 2 is outside \\[3, 10\\]"), (1, -1, "outside")],
)
def test_cursor_never_goes_back_nor_past_the_last_message(store, ctx, parent, cursor, message):
    if parent is not None:
        publish(store, None, 3)
    with pytest.raises(InvalidInput, match=message):
        publish(store, parent, cursor)


def test_bad_payload_and_meta(store, ctx):
    with pytest.raises(InvalidInput, match="non-empty bytes"):
        publish(store, None, 1, payload=b"")
    with pytest.raises(InvalidInput, match="non-empty bytes"):
        publish(store, None, 1, payload="text")
    with pytest.raises(InvalidInput, match="not JSON"):
        store.publish_checkpoint(ctx, None, 1, "demo", b"x", {"bad": object()})
    with pytest.raises(InvalidInput, match="not JSON"):
        store.publish_checkpoint(ctx, None, 1, "demo", b"x", {"nan": float("nan")})
    with pytest.raises(UnknownContext):
        store.publish_checkpoint("ghost", None, 0, "demo", b"x", {})
    assert store.list_checkpoints(ctx) == []


def test_context_and_answer_reads_the_context_and_its_heads_answer(store, ctx):
    assert store.context_and_answer(ctx, "who") == (store.get_context(ctx), None)
    publish(store, None, 6, answers=[("Who?", "who", "y")])
    info, found = store.context_and_answer(ctx, "who")
    assert info == store.get_context(ctx) and (info.head_version, info.cursor_seq, info.last_seq) == (1, 6, 10)
    assert (found.version, found.question, found.normalized_question, found.answer) == (1, "Who?", "who", "y")
    assert found == store.get_precomputed(ctx, 1, "who")
    assert store.context_and_answer(ctx, "what")[1] is None
    # the answer of an older version is not the head's
    publish(store, 1, 10)
    assert store.context_and_answer(ctx, "who") == (store.get_context(ctx), None)
    with pytest.raises(UnknownContext):
        store.context_and_answer("ghost", "who")


def test_answers_and_run_are_published_with_the_checkpoint(store, ctx):
    run = store.start_run(ctx, None, 0, 6)
    info = publish(
        store,
        None,
        6,
        answers=[("What is X?", "what is x", "x"), ("what is x", "what is x", "dup"), ("Who?", "who", "y")],
        run_id=run,
    )
    answers = store.list_precomputed(ctx, info.version)
    assert [(a.question, a.normalized_question, a.answer) for a in answers] == [
        ("What is X?", "what is x", "x"),
        ("Who?", "who", "y"),
    ]
    assert store.get_precomputed(ctx, 1, "who").answer == "y"
    assert store.get_precomputed(ctx, 2, "who") is None
    assert store.get_precomputed("ghost", 1, "who") is None
    finished = store.last_run(ctx)
    assert (finished.id, finished.status, finished.published_version, finished.to_seq) == (run, "published", 1, 6)
    assert finished.finished_at is not None


def test_runs(store, ctx):
    assert store.last_run(ctx) is None
    first = store.start_run(ctx, None, 0, 4)
    store.finish_run(first, "failed", error="boom")
    second = store.start_run(ctx, None, 0, 4)
    store.finish_run(second, "superseded")
    runs = store.list_runs(ctx)
    assert [(r.id, r.status, r.error) for r in runs] == [(second, "superseded", None), (first, "failed", "boom")]
    with pytest.raises(InvalidInput, match="not 'running'"):
        store.finish_run(first, "running")
    with pytest.raises(InvalidInput, match="unknown consolidation run"):
        store.finish_run(9999, "failed")


def test_unknown_versions(store, ctx):
    with pytest.raises(UnknownVersion, match="no checkpoint yet"):
        store.load_checkpoint(ctx)
    publish(store, None, 1)
    with pytest.raises(UnknownVersion, match="no checkpoint version 7"):
        store.load_checkpoint(ctx, 7)
    with pytest.raises(UnknownVersion):
        store.rollback(ctx, 7)
    with pytest.raises(UnknownContext):
        store.load_checkpoint("ghost")


def corrupt(sql, version):
    sql("UPDATE checkpoints SET payload = :payload WHERE version = :version", payload=b"bit rot", version=version)


def test_corruption_is_detected(store, ctx, sql):
    publish(store, None, 1, b"good")
    corrupt(sql, 1)
    with pytest.raises(CorruptCheckpoint, match="checkpoint 1 of context 'ctx' is corrupt: sha256"):
        store.load_checkpoint(ctx)


def test_fallback_serves_the_newest_valid_ancestor(store, ctx, sql, caplog):
    assert store.load_checkpoint_with_fallback(ctx) is None
    publish(store, None, 2, b"v1")
    publish(store, 1, 4, b"v2")
    publish(store, 2, 6, b"v3")
    store.rollback(ctx, 2)
    # v4's parent is v2: v3 was rolled back and is not an ancestor
    publish(store, 2, 8, b"v4")
    assert store.load_checkpoint_with_fallback(ctx).version == 4
    corrupt(sql, 4)
    corrupt(sql, 2)
    served = store.load_checkpoint_with_fallback(ctx)
    assert (served.version, served.payload, served.cursor_seq) == (1, b"v1", 2)
    assert "serving checkpoint 1 instead of corrupt [4, 2]" in caplog.text
    # the head itself does not move: a reader falls back, it does not roll back
    assert store.get_context(ctx).head_version == 4
    corrupt(sql, 1)
    with pytest.raises(CorruptCheckpoint, match="no valid checkpoint"):
        store.load_checkpoint_with_fallback(ctx)


def test_rollback(store, ctx, sql):
    publish(store, None, 2, b"v1")
    publish(store, 1, 4, b"v2")
    back = store.rollback(ctx, 1)
    assert back.version == 1
    info = store.get_context(ctx)
    assert (info.head_version, info.cursor_seq) == (1, 2)
    # messages after the old cursor are pending again; a publish on the old head now loses its CAS
    assert store.pending(ctx).messages == 8
    with pytest.raises(HeadConflict):
        publish(store, 2, 6)
    assert publish(store, 1, 6).version == 3
    store.rollback(ctx, 2)
    corrupt(sql, 1)
    with pytest.raises(CorruptCheckpoint):
        store.rollback(ctx, 1)
    assert store.get_context(ctx).head_version == 2


def test_prune_keeps_the_newest_and_the_head(store, ctx, sql):
    parent = None
    for cursor in range(1, 7):
        parent = publish(store, parent, cursor, answers=[("q", "q", f"a{cursor}")]).version
    store.rollback(ctx, 2)
    assert store.prune_checkpoints(ctx, keep=3) == [3, 1]
    assert [c.version for c in store.list_checkpoints(ctx)] == [6, 5, 4, 2]
    assert sql("SELECT DISTINCT version FROM precomputed_answers ORDER BY version") == [(2,), (4,), (5,), (6,)]
    assert store.prune_checkpoints(ctx, keep=3) == []
    assert store.load_checkpoint(ctx).version == 2
    with pytest.raises(InvalidInput, match="at least 1"):
        store.prune_checkpoints(ctx, keep=0)

