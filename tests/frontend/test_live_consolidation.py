"""Queries during a consolidation: answered from the old head (unchanged answers), never an error, and from the new
head once it is published."""

import random
import threading

import httpx

WORDS = ["alpha", "beta", "gamma", "delta", "cat", "blue", "the", "river", "runs", "north", "seven", "apples"]


def test_a_query_during_a_consolidation_gets_the_old_heads_answer(live, app):
    rng = random.Random(0)
    app.ingest("c", [{"role": "user", "content": "my name is Alice"}])
    app.consolidate("c")
    # about 50K tokens: a pass of a few seconds with the tiny model on one thread
    app.ingest("c", [{"role": "user", "content": " ".join(rng.choices(WORDS, k=40))} for _ in range(200)])
    # a short tail keeps each online answer cheap, so many of them land inside the pass
    app.queries.tail_tokens = 256
    server = live(app)
    question = {"question": "What is my name?"}
    before = server.client.post("/v1/contexts/c/query", json=question).json()
    assert (before["source"], before["checkpoint"]) == ("online", 1)

    outcome = {}

    def consolidate():
        with httpx.Client(base_url=server.url, timeout=300) as client:
            outcome["response"] = client.post("/v1/contexts/c/consolidate", params={"wait": "true"})

    worker = threading.Thread(target=consolidate)
    worker.start()
    during = []
    while worker.is_alive():
        response = server.client.post("/v1/contexts/c/query", json=question)
        assert response.status_code == 200, response.text
        during.append(response.json())
    worker.join()
    assert outcome["response"].status_code == 200, outcome["response"].text
    assert outcome["response"].json()["checkpoint"]["version"] == 2

    versions = [r["checkpoint"] for r in during]
    # the head moves once, forward; until then every answer is the old head's, byte for byte
    assert versions == sorted(versions) and set(versions) <= {1, 2}
    old = [r for r in during if r["checkpoint"] == 1]
    assert len(old) >= 3, versions
    assert {r["answer"] for r in old} == {before["answer"]}
    after = server.client.post("/v1/contexts/c/query", json=question).json()
    assert after["checkpoint"] == 2
