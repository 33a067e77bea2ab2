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
