"""Process entry points for the multi-process tests (spawned children import this module, not a test file)."""

import multiprocessing

from sleeptime.db import HeadConflict, Store, upgrade


def guarded(target, url: str, barrier, results, arg) -> None:
    """Report a child's crash as a result, so that the parent fails at once with the reason."""
    try:
        target(url, barrier, results, arg)
    except Exception as exc:  # noqa: BLE001 report any child crash
        results.put(("crashed", repr(exc)))


def publish(url: str, barrier, results, tag: int) -> None:
    with Store(url) as store:
        barrier.wait()
        try:
            info = store.publish_checkpoint("ctx", None, 1, "demo", f"state {tag}".encode(), {"tag": tag})
            results.put(("won", info.version, tag))
        except HeadConflict:
            results.put(("lost", None, tag))


def append(url: str, barrier, results, rounds: int) -> None:
    with Store(url) as store:
        barrier.wait()
        seqs = []
        for i in range(rounds):
            seqs += store.append_messages("ctx", [("user", f"m{i}", 1), ("assistant", f"r{i}", 1)])
        results.put(seqs)


def claim_all(url: str, barrier, results, worker: str) -> None:
    with Store(url) as store:
        barrier.wait()
        claimed = []
        while (job := store.claim(worker, lease_seconds=60)) is not None:
            claimed.append(job.id)
            store.complete(job.id, worker)
        results.put(claimed)


def migrate(url: str, barrier, results, _) -> None:
    barrier.wait()
    upgrade(url)
    results.put("migrated")


# spawn, not fork: a child must not inherit the parent's pooled connections
SPAWN = multiprocessing.get_context("spawn")


def run_processes(target, db, *per_process):
    """Run target(url, barrier, results, arg) in one process per arg, released together; returns their results."""
    url = db if isinstance(db, str) else db.url.render_as_string(hide_password=False)
    barrier, results = SPAWN.Barrier(len(per_process)), SPAWN.Queue()
    processes = [SPAWN.Process(target=guarded, args=(target, url, barrier, results, arg)) for arg in per_process]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    crashes = [o for o in outcomes if isinstance(o, tuple) and o[0] == "crashed"]
    assert not crashes, crashes
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return outcomes
