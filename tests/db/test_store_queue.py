from datetime import timedelta

import pytest

from sleeptime.db import InvalidInput, UnknownContext


@pytest.fixture
def contexts(store):
    for name in ("a", "b"):
        store.ensure_context(name)


def test_a_burst_of_triggers_yields_one_job(store, contexts):
    first = store.enqueue("consolidate", "a", {"reason": "idle"})
    assert store.enqueue("consolidate", "a", {"reason": "again"}) == first
    other_kind = store.enqueue("anticipate", "a")
    other_context = store.enqueue("consolidate", "b")
    assert len({first, other_kind, other_context}) == 3
    jobs = store.list_jobs(status="queued")
    assert [(j.kind, j.context, j.payload) for j in jobs] == [
        ("consolidate", "a", {"reason": "idle"}),
        ("anticipate", "a", None),
        ("consolidate", "b", None),
    ]
    with pytest.raises(UnknownContext):
        store.enqueue("consolidate", "ghost")
    with pytest.raises(InvalidInput):
        store.enqueue("", "a")


def test_claim_complete_fail(store, contexts):
    a = store.enqueue("consolidate", "a")
    b = store.enqueue("consolidate", "b")
    job = store.claim("w1", lease_seconds=30)
    assert (job.id, job.context, job.status, job.attempts, job.lease_owner) == (a, "a", "running", 1, "w1")
    # a trigger while a job runs queues the next pass
    again = store.enqueue("consolidate", "a")
    assert again not in (a, b)
    assert store.claim("w2", lease_seconds=30).id == b
    assert store.complete(a, "w1") and store.fail(b, "boom", "w2")
    assert not store.complete(a)
    assert [(j.id, j.status, j.error) for j in store.list_jobs(context="b")] == [(b, "failed", "boom")]
    assert store.claim("w1", lease_seconds=30).id == again
    assert store.claim("w1", lease_seconds=30) is None


def test_one_job_per_context_runs_at_a_time(store, contexts):
    store.enqueue("consolidate", "a")
    anticipate = store.enqueue("anticipate", "a")
    first = store.claim("w1", lease_seconds=30)
    assert store.claim("w2", lease_seconds=30) is None
    store.complete(first.id)
    assert store.claim("w2", lease_seconds=30).id == anticipate


def test_lease_expiry_and_reclaim(store, contexts, clock):
    job_id = store.enqueue("consolidate", "a")
    store.claim("dead", lease_seconds=10)
    clock.advance(5)
    assert store.heartbeat(job_id, "dead", lease_seconds=10)
    clock.advance(9)
    assert store.claim("w2", lease_seconds=10) is None
    # the worker died: its lease runs out and another worker takes the job over
    clock.advance(2)
    job = store.claim("w2", lease_seconds=10)
    assert (job.id, job.lease_owner, job.attempts) == (job_id, "w2", 2)
    # the old owner learns it lost the job and cannot settle it
    assert not store.heartbeat(job_id, "dead", lease_seconds=10)
    assert not store.complete(job_id, "dead")
    assert store.heartbeat(job_id, "w2", lease_seconds=10)
    assert store.complete(job_id, "w2")


def test_a_job_that_keeps_killing_workers_is_failed(store, contexts, clock):
    job_id = store.enqueue("consolidate", "a")
    for _ in range(3):
        assert store.claim("w", lease_seconds=1, max_attempts=3).id == job_id
        clock.advance(2)
    assert store.claim("w", lease_seconds=1, max_attempts=3) is None
    [job] = store.list_jobs()
    assert (job.status, job.error) == ("failed", "lease expired 3 times")


def test_bad_queue_input(store, contexts):
    with pytest.raises(InvalidInput, match="job payload is not JSON"):
        store.enqueue("consolidate", "a", {"x": object()})
    with pytest.raises(InvalidInput, match="lease must be a positive"):
        store.claim("w", lease_seconds=0)
    assert store.list_jobs() == []


def test_trim_history_deletes_old_bookkeeping_and_nothing_else(store, contexts, clock):
    store.append_messages("a", [("user", "hello", 5)])
    old_done = store.enqueue("consolidate", "a")
    store.claim("w", lease_seconds=30)
    store.complete(old_done, "w")
    old_failed = store.enqueue("consolidate", "b")
    store.claim("w", lease_seconds=30)
    store.fail(old_failed, "boom", "w")
    old_run = store.start_run("a", None, 0, 1)
    store.finish_run(old_run, "failed", error="boom")
    only_run_of_b = store.start_run("b", None, 0, 0)
    store.finish_run(only_run_of_b, "failed", error="boom")
    still_running = store.start_run("b", None, 0, 0)
    store.log_query("a", "old question?", "online", 3.0)
    clock.advance(40 * 86400)
    newest_run = store.start_run("a", None, 0, 1)
    store.finish_run(newest_run, "failed", error="again")
    queued = store.enqueue("consolidate", "a")
    store.log_query("a", "new question?", "online", 3.0)

    for bad in (timedelta(0), 30):
        with pytest.raises(InvalidInput):
            store.trim_history(bad)
    keep = timedelta(days=30)
    assert store.trim_history(keep) == {"jobs": 2, "query_log": 1, "consolidation_runs": 2}
    assert [j.id for j in store.list_jobs()] == [queued]
    assert store.recent_questions("a") == ["new question?"]
    assert [r.id for r in store.list_runs("a")] == [newest_run]
    # b's old finished run goes (it is not b's newest: the running one is), the running one stays
    assert [r.id for r in store.list_runs("b")] == [still_running]
    assert [m.content for m in store.messages_after("a", 0)] == ["hello"]
    assert store.trim_history(keep) == {"jobs": 0, "query_log": 0, "consolidation_runs": 0}
