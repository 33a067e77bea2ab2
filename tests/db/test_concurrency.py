"""Several real processes on one database: writers queue instead of failing, the CAS lets exactly one of several
simultaneous publishers win, and no job is claimed twice."""

from .workers import append, claim_all, publish, run_processes


def test_simultaneous_publishers_on_one_parent_exactly_one_wins(store):
    store.append_messages("ctx", [("user", "hello", 5)])
    outcomes = run_processes(publish, store, 0, 1, 2)
    winners = [o for o in outcomes if o[0] == "won"]
    assert len(winners) == 1 and [o[0] for o in outcomes].count("lost") == 2
    [(_, version, tag)] = winners
    [checkpoint] = store.list_checkpoints("ctx")
    assert (checkpoint.version, checkpoint.meta) == (version, {"tag": tag}) == (1, {"tag": tag})
    assert store.load_checkpoint("ctx").payload == f"state {tag}".encode()


def test_concurrent_appends_get_distinct_contiguous_seqs(store):
    store.ensure_context("ctx")
    outcomes = run_processes(append, store, 20, 20, 20)
    seqs = sorted(seq for batch in outcomes for seq in batch)
    assert seqs == list(range(1, 121))
    # each batch of two landed contiguously: appends are atomic
    for batch in outcomes:
        assert all(batch[i + 1] == batch[i] + 1 for i in range(0, len(batch), 2))


def test_concurrent_claimers_never_share_a_job(store):
    jobs = []
    for i in range(24):
        store.ensure_context(f"c{i}")
        jobs.append(store.enqueue("consolidate", f"c{i}"))
    outcomes = run_processes(claim_all, store, "w0", "w1", "w2")
    claimed = [job for batch in outcomes for job in batch]
    assert sorted(claimed) == sorted(jobs)
    assert {job.status for job in store.list_jobs()} == {"done"}
