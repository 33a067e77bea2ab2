"""The generator pool (frontend/generators.py): real spawned processes over the test database and the tiny model."""

import os
import signal
import threading
import time

import pytest

from sleeptime.frontend.generators import GeneratorConfig, GeneratorLost, GeneratorPool
from sleeptime.frontend.query import Overloaded, QueryEngine
from sleeptime.models.tokenizer import ANSWER_TOKENS

WORDS = ["the", "river", "runs", "north", "my", "name", "is", "Ada", "seven", "apples", "blue", "cat"]


def transcript(n: int, seed: int = 0) -> list[dict[str, str]]:
    """n alternating user/assistant messages of seeded words."""
    import random

    rng = random.Random(seed)
    return [{"role": ("user", "assistant")[i % 2], "content": " ".join(rng.choices(WORDS, k=20))} for i in range(n)]


@pytest.fixture
def pool_for(store, tiny_model_path):
    pools = []

    def build(processes=1, batch=8):
        url = store.url.render_as_string(hide_password=False)
        config = GeneratorConfig(url, str(tiny_model_path), "cpu", 1, 10**8, batch, ANSWER_TOKENS)
        pools.append(GeneratorPool(config, processes))
        return pools[-1]

    yield build
    for pool in pools:
        pool.close()


def ask_together(pool, asks):
    """Each (ctx, question) from its own thread, all sent while the generator is stopped: they wait in its pipe
    and are answered as one batch when it goes on."""
    results = [None] * len(asks)

    def ask(i, ctx, question):
        try:
            results[i] = pool.answer(ctx, question, timeout=60)
        except Exception as exc:  # noqa: BLE001 the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=ask, args=(i, *a)) for i, a in enumerate(asks)]
    for t in threads:
        t.start()
    return threads, results


def test_answers_from_a_generator_batch_equal_answers_given_one_at_a_time(make_app, store, pool_for):
    app = make_app()
    for name in ("a", "b"):
        app.ingest(name, transcript(6, seed=ord(name)))
        app.consolidate(name)
    app.ingest("b", transcript(2, seed=5))  # a tail after the head
    app.ingest("fresh", transcript(3, seed=9))  # no head: an empty memory and its messages
    pool = pool_for(processes=1)
    [pid] = pool.pids()
    os.kill(pid, signal.SIGSTOP)
    asks = [(store.get_context(name), question) for name in ("a", "b", "fresh") for question in ("Who runs?", "Where?")]
    threads, results = ask_together(pool, asks)
    time.sleep(1.0)
    os.kill(pid, signal.SIGCONT)
    for t in threads:
        t.join(60)
    engine = app.engine
    for (ctx, question), online in zip(asks, results, strict=True):
        state, version, tail = app.queries.prepare_online(ctx, engine)
        reply = engine.reply(state, question, tail, ANSWER_TOKENS)
        assert (online.answer, online.version) == (reply.text, version)
        assert online.confidence == pytest.approx(reply.confidence, rel=1e-5)
    assert max(online.batch for online in results) > 1  # they were answered together
    assert pool.answered == 6 and pool.batches < 6


def test_a_generator_killed_mid_request_fails_it_at_once_and_is_replaced(make_app, store, pool_for):
    app = make_app()
    app.ingest("c", transcript(4))
    app.consolidate("c")
    pool = pool_for(processes=1)
    [pid] = pool.pids()
    os.kill(pid, signal.SIGSTOP)  # the question waits in its pipe, unanswered
    threads, results = ask_together(pool, [(store.get_context("c"), "Who runs?")])
    time.sleep(0.5)
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    threads[0].join(30)
    assert isinstance(results[0], GeneratorLost) and "try again" in str(results[0])
    assert time.monotonic() - started < 10  # failed when the process died, not at the answer timeout
    deadline = time.monotonic() + 30
    while pool.replaced < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.replaced == 1 and pool.pids() != [pid]
    assert pool.answer(store.get_context("c"), "Who runs?", timeout=60).version == 1  # the new one answers


def test_online_answers_beyond_the_limit_are_refused_not_queued(make_app, store, pool_for):
    app = make_app()
    app.ingest("c", transcript(4))
    app.consolidate("c")
    pool = pool_for(processes=1)
    queries = QueryEngine(store, lambda: app.engine, 10**8, max_online=2, pool=pool)
    [pid] = pool.pids()
    os.kill(pid, signal.SIGSTOP)
    results = []
    threads = [threading.Thread(target=lambda q=q: results.append(queries.query("c", q))) for q in ("a?", "b?")]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while queries.online_now < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(Overloaded, match="try again"):
        queries.query("c", "one too many?")
    os.kill(pid, signal.SIGCONT)
    for t in threads:
        t.join(60)
    assert len(results) == 2 and all(r.source == "online" for r in results) and queries.online_now == 0
    assert queries.query("c", "and now?").source == "online"


def test_over_http_online_answers_come_from_generators_and_a_full_queue_answers_503(make_app, live):
    from .conftest import assert_error

    app = make_app(generators=1, max_online=1)
    app.ingest("c", transcript(4))
    app.consolidate("c")
    server = live(app)
    pool = app.queries.pool
    assert pool is not None and pool.size == 1
    [pid] = pool.pids()
    os.kill(pid, signal.SIGSTOP)
    first = []
    thread = threading.Thread(target=lambda: first.append(server.client.post("/v1/contexts/c/query", json={"question": "Who?"})))
    thread.start()
    deadline = time.monotonic() + 10
    while app.queries.online_now < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    refused = server.client.post("/v1/contexts/c/query", json={"question": "And where?"})
    assert_error(refused, 503, "overloaded")
    assert refused.headers["retry-after"] == "1"
    os.kill(pid, signal.SIGCONT)
    thread.join(60)
    assert first[0].status_code == 200 and first[0].json()["source"] == "online"
    metrics = server.client.get("/metrics").text
    assert "sleeptime_generators 1.0" in metrics and "sleeptime_generator_answers_total 1.0" in metrics
    assert "sleeptime_online_in_flight 0.0" in metrics
