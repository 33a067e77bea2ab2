"""Forgetting a context (invariant 8) and the per-context consolidation lock, on SQLite and PostgreSQL."""

import threading
import uuid

import pytest

from sleeptime.db import Store, UnknownContext

TABLES = ("messages", "checkpoints", "precomputed_answers", "anticipated_queries", "query_log", "consolidation_runs",
          "jobs")


def fill(store: Store, name: str, marker: str) -> None:
    """A context with a row in every table that holds something of it, `marker` in each text."""
    # a long message too: its text spills into overflow pages
    store.append_messages(name, [("user", f"{marker} my locker code is 4411", 9), ("user", marker * 400, 900)])
    store.add_anticipated(name, [f"what is {marker}?"])
    run = store.start_run(name, None, 0, 2)
    answers = [(f"what is {marker}?", f"what is {marker.lower()}", f"it is {marker}")]
    store.publish_checkpoint(name, None, 2, "demo", marker.encode() * 50, {"note": marker}, answers, run_id=run)
    store.log_query(name, f"where is {marker}?", "online", 1.0, 1)
    store.enqueue("consolidate", name, {"reason": marker})


def rows_of(sql, context_id: int) -> dict[str, int]:
    return {t: sql(f"SELECT count(*) FROM {t} WHERE context_id = :id", id=context_id)[0][0] for t in TABLES}


def test_forget_deletes_every_row_and_the_name_starts_fresh(store, sql):
    fill(store, "alice", "Zanzibar")
    fill(store, "bob", "Kathmandu")
    [(alice_id,)] = sql("SELECT id FROM contexts WHERE name = 'alice'")
    assert all(rows_of(sql, alice_id).values())

    deleted = store.forget("alice")
    assert deleted == {"precomputed_answers": 1, "checkpoints": 1, "anticipated_queries": 1, "query_log": 1,
                       "consolidation_runs": 1, "jobs": 1, "messages": 2, "contexts": 1}
    assert rows_of(sql, alice_id) == dict.fromkeys(TABLES, 0)
    with pytest.raises(UnknownContext):
        store.get_context("alice")
    with pytest.raises(UnknownContext):
        store.forget("alice")
    # the other context is untouched
    assert len(store.messages_after("bob", 0)) == 2 and store.get_context("bob").head_version == 1

    assert store.append_messages("alice", [("user", "hello again", 3)]) == [1]
    again = store.get_context("alice")
    assert (again.head_version, again.cursor_seq, again.last_seq) == (None, 0, 1)
    assert store.list_runs("alice") == [] and store.list_anticipated("alice") == []
    assert store.recent_questions("alice") == []


def test_forget_leaves_no_byte_of_the_text_in_the_sqlite_files(tmp_path):
    marker = f"Forgotten-{uuid.uuid4().hex}"
    with Store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        store.migrate()
        fill(store, "alice", marker)
        fill(store, "bob", "Kathmandu")

        def on_disk() -> bytes:
            return b"".join(path.read_bytes() for path in sorted(tmp_path.glob("db.sqlite*")) if path.is_file())

        # the text is there before (in the WAL at least): the grep below can see it
        assert marker.encode() in on_disk()
        store.forget("alice")
        data = on_disk()
        assert marker.encode() not in data and marker.lower().encode() not in data
        assert b"Kathmandu" in data


def test_a_publish_for_a_forgotten_context_is_refused(store):
    store.append_messages("c", [("user", "hello", 3)])
    run = store.start_run("c", None, 0, 1)
    store.forget("c")
    # the name is taken again meanwhile, with the same head (none) and as many messages: still refused
    store.append_messages("c", [("user", "a new person", 3)])
    with pytest.raises(UnknownContext, match="forgotten while this pass ran"):
        store.publish_checkpoint("c", None, 1, "demo", b"state", {}, run_id=run)
    assert store.list_checkpoints("c") == [] and store.get_context("c").head_version is None


def test_the_pass_lock_admits_one_pass_per_context_and_reaps_dead_runs(store):
    store.append_messages("c", [("user", "hello", 3)])
    store.append_messages("d", [("user", "hello", 3)])
    run = store.start_run("c", None, 0, 1)
    release = threading.Event()
    order = []

    def second() -> None:
        with store.pass_lock("c") as abandoned:
            order.append(("second", abandoned))

    with store.pass_lock("c") as abandoned:
        # nobody held the lock: the run left "running" belonged to a process that is gone
        assert abandoned == [run] and store.list_runs("c")[0].status == "abandoned"
        live = store.start_run("c", None, 0, 1)
        waiter = threading.Thread(target=second)
        waiter.start()
        # another context is not held up; this one is, and a live run is not reaped
        with store.pass_lock("d") as other:
            assert other == []
        assert store.reap_runs("c") == [] and waiter.is_alive()
        stop = threading.Event()
        stop.set()
        with store.pass_lock("c", stop=stop) as stopped:
            assert stopped is None
        order.append(("first", None))
        release.set()
    waiter.join(10)
    assert order == [("first", None), ("second", [live])]
