import threading

from sleeptime.jobs.worker import CONSOLIDATE, PRUNE, Worker

from .conftest import transcript


def worker_for(app, name="w1"):
    return Worker(app, name, stop=threading.Event(), abort=threading.Event())


def test_sweep_queues_idle_contexts_with_pending_messages_once(make_app, store, clock):
    app = make_app(idle_after=60)
    app.ingest("idle", transcript(2))
    app.ingest("done", transcript(2))
    app.consolidate("done")
    assert app.sweep() == []
    clock.advance(61)
    app.ingest("busy", transcript(2))
    assert app.sweep() == ["idle"] and app.sweep() == ["idle"]
    assert [(j.kind, j.context, j.status) for j in store.list_jobs()] == [(CONSOLIDATE, "idle", "queued")]


def test_a_worker_consolidates_then_prunes(make_app, store):
    app = make_app(keep_checkpoints=1)
    for seed in range(3):
        app.ingest("c", transcript(2, seed=seed))
        app.consolidate("c")
    app.ingest("c", transcript(2, seed=7))
    assert app.queue_prunes() == ["c"]
    store.enqueue(CONSOLIDATE, "c")
    worker = worker_for(app)
    # the prune queued by the GC goes first, then the consolidation, then the prune it queues
    assert worker.run_once() and worker.run_once() and worker.run_once() and not worker.run_once()
    assert [(j.kind, j.status) for j in store.list_jobs()] == [(PRUNE, "done"), (CONSOLIDATE, "done"), (PRUNE, "done")]
    assert [c.version for c in store.list_checkpoints("c")] == [4]
    assert store.pending("c").messages == 0


def test_failed_and_unknown_jobs_are_marked_failed(make_app, store):
    app = make_app()
    app.ingest("c", transcript(2))
    store.publish_checkpoint("c", None, 1, "other-model", b"state", {})
    store.enqueue(CONSOLIDATE, "c")
    store.enqueue("defragment", "c")
    worker = worker_for(app)
    assert worker.run_once() and worker.run_once()
    errors = {j.kind: j.error for j in store.list_jobs(status="failed")}
    assert "other-model" in errors[CONSOLIDATE] and "unknown job kind" in errors["defragment"]


def test_a_lost_lease_stops_the_job_without_settling_it(make_app, store, monkeypatch):
    app = make_app(lease_seconds=1)
    # long enough to outlast the first heartbeat by far; it is cut short there
    app.ingest("c", transcript(300))
    job_id = store.enqueue(CONSOLIDATE, "c")
    monkeypatch.setattr(store, "heartbeat", lambda *args: False)
    worker = worker_for(app)
    assert worker.run_once()
    [job] = store.list_jobs()
    assert (job.id, job.status) == (job_id, "running") and worker.aborted_jobs == []
    assert store.get_context("c").head_version is None and store.last_run("c").status == "failed"


def test_a_job_taken_over_after_its_lease_expired_closes_the_dead_run(make_app, store, clock):
    app = make_app(lease_seconds=30)
    app.ingest("c", transcript(4))
    store.enqueue(CONSOLIDATE, "c")
    # a worker claimed the job and started its run, then died without a word
    dead = store.claim("dead-worker", 30)
    dead_run = store.start_run("c", None, 0, 4)
    clock.advance(31)
    assert worker_for(app).run_once()
    runs = {r.id: r for r in store.list_runs("c")}
    assert runs[dead_run].status == "abandoned" and "lease of job" in runs[dead_run].error
    assert runs[dead_run].finished_at is not None
    [published] = [r for r in runs.values() if r.status == "published"]
    assert runs[dead_run].finished_at <= published.started_at
    assert store.list_jobs()[0].id == dead.id and store.list_jobs()[0].status == "done"
    assert store.pending("c").messages == 0


def test_the_gc_prunes_and_trims_old_history(make_app, store, clock):
    app = make_app(keep_checkpoints=1, keep_history_days=30)
    for seed in range(2):
        app.ingest("c", transcript(2, seed=seed))
        app.consolidate("c")
    store.enqueue(CONSOLIDATE, "c")
    assert worker_for(app).run_once()
    store.log_query("c", "what happened?", "online", 2.0)
    assert app.collect_garbage() == ["c"]
    assert [(j.kind, j.status) for j in store.list_jobs()] == [(CONSOLIDATE, "done"), (PRUNE, "queued")]
    clock.advance(31 * 86400)
    assert app.collect_garbage() == ["c"]  # the queued prune absorbs the new one and stays, however old
    assert [(j.kind, j.status) for j in store.list_jobs()] == [(PRUNE, "queued")]
    assert store.recent_questions("c") == []
    assert len(store.list_runs("c")) == 1 and store.pending("c").messages == 0
    assert len(store.messages_after("c", 0)) == 4


def test_a_zero_history_setting_keeps_everything(make_app, store, clock):
    app = make_app(keep_history_days=0)
    app.ingest("c", transcript(2))
    store.log_query("c", "what happened?", "online", 2.0)
    clock.advance(10 * 365 * 86400)
    app.collect_garbage()
    assert store.recent_questions("c") == ["what happened?"]


def test_a_worker_consolidates_due_contexts_together(make_app, store):
    app = make_app(batch_contexts=3)
    for name in ("a", "b", "c", "d"):
        app.ingest(name, transcript(6, seed=ord(name)))
    store.enqueue(PRUNE, "a")  # not a consolidation: it runs on its own
    for name in ("a", "b", "c", "d"):
        store.enqueue(CONSOLIDATE, name)
    fed = []
    consume_many = app.engine.consume_many
    app.engine.consume_many = lambda states, *args, **kwargs: fed.append(len(states)) or consume_many(states, *args, **kwargs)
    worker = worker_for(app)

    def consolidations():
        return [(j.context, j.status) for j in store.list_jobs() if j.kind == CONSOLIDATE]

    assert worker.run_once() and fed == [] and consolidations()[0] == ("a", "queued")
    assert worker.run_once()  # three consolidations, one batch through the model
    assert fed == [3] and consolidations() == [("a", "done"), ("b", "done"), ("c", "done"), ("d", "queued")]
    assert all(store.get_context(name).head_version == 1 for name in "abc")
    assert worker.run_once() and fed == [3]  # the fourth, alone
    assert store.get_context("d").head_version == 1
