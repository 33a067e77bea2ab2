"""Every endpoint over real HTTP: the happy path, JSON errors for bad input (which change nothing), API keys."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from sleeptime.frontend.app import create_app

from .conftest import LiveServer, assert_error, wait_until


def msgs(*contents, role="user"):
    return {"messages": [{"role": role, "content": c} for c in contents]}


def test_every_endpoint_over_http(http):
    assert http.get("/healthz").json()["status"] == "ok"
    assert http.get("/readyz").json()["status"] == "ready"

    added = http.post("/v1/contexts/alice/messages", json=msgs("my name is Alice", "I live in Lyon"))
    assert added.status_code == 201 and added.json() == {
        "context": "alice",
        "messages": 2,
        "first_seq": 1,
        "last_seq": 2,
    }
    status = http.get("/v1/contexts/alice").json()
    assert (status["head_version"], status["pending_messages"], status["last_run"]) == (None, 2, None)
    assert status["pending_tokens"] > 0

    registered = http.post("/v1/contexts/alice/anticipated", json={"questions": ["What is my name?"]})
    assert registered.json() == {"context": "alice", "added": 1}

    queued = http.post("/v1/contexts/alice/consolidate")
    assert queued.status_code == 202
    assert queued.json() | {"id": 0} == {"id": 0, "kind": "consolidate", "context": "alice", "status": "queued"}
    done = http.post("/v1/contexts/alice/consolidate", params={"wait": "true"})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["published"] and body["messages"] == 2 and body["tokens"] == status["pending_tokens"]
    assert (body["checkpoint"]["version"], body["checkpoint"]["head"], body["checkpoint"]["cursor_seq"]) == (1, True, 2)

    [listed] = http.get("/v1/contexts/alice/checkpoints").json()
    assert listed == body["checkpoint"]
    assert http.get("/v1/contexts/alice/checkpoints/1").json() == listed
    assert http.get("/v1/contexts/alice").json()["last_run"]["status"] == "published"

    hit = http.post("/v1/contexts/alice/query", json={"question": "what is my NAME"}).json()
    assert (hit["source"], hit["checkpoint"]) == ("precomputed", 1) and hit["latency_ms"] >= 0
    miss = http.post("/v1/contexts/alice/query", json={"question": "What colour is the sky?"}).json()
    assert (miss["source"], miss["checkpoint"]) == ("online", 1) and isinstance(miss["answer"], str)

    metrics = http.get("/metrics").text
    assert 'sleeptime_query_latency_seconds_count{source="precomputed"} 1.0' in metrics
    assert 'sleeptime_query_latency_seconds_count{source="online"} 1.0' in metrics
    assert "sleeptime_precomputed_hit_ratio 0.5" in metrics
    assert "sleeptime_state_cache_misses_total 1.0" in metrics
    assert 'sleeptime_consolidation_runs_total{outcome="published",trigger="http"} 1.0' in metrics
    # the job queued above waits for a daemon: `serve` alone runs none
    assert 'sleeptime_jobs{status="queued"} 1.0' in metrics

    assert http.get("/openapi.json").json()["info"]["title"] == "sleeptime"
    assert http.get("/docs").status_code == 200


def test_the_query_log_is_written_behind_the_answers_and_kept_on_a_clean_stop(live, app, store):
    app.ingest("c", msgs("my name is Alice")["messages"])
    app.anticipate("c", ["What is my name?"])
    app.consolidate("c")
    server = live(app)
    questions = ["what is my name", "Where do I live?", "What is my name?"]
    sources = [server.client.post("/v1/contexts/c/query", json={"question": q}).json()["source"] for q in questions]
    assert sources == ["precomputed", "online", "precomputed"]
    server.close()
    assert store.recent_questions("c") == ["What is my name?", "Where do I live?", "what is my name"]


def test_the_state_cache_is_warmed_with_recent_heads(live, app):
    for name in ("a", "b"):
        app.ingest(name, msgs("hello there")["messages"])
        app.consolidate(name)
    server = live(app)
    assert len(app.queries.cache) == 2
    server.client.post("/v1/contexts/a/query", json={"question": "anything?"})
    metrics = server.client.get("/metrics").text
    assert "sleeptime_state_cache_hits_total 1.0" in metrics and "sleeptime_state_cache_misses_total 0.0" in metrics


def snapshot(store):
    """What bad input must leave unchanged."""
    contexts = [(c.name, c.head_version, c.cursor_seq, c.last_seq) for c in store.list_contexts()]
    rows = {c[0]: (store.messages_after(c[0], 0), store.list_anticipated(c[0])) for c in contexts}
    return contexts, rows, [(j.id, j.status) for j in store.list_jobs()], store.list_checkpoints("c")


JSON = {"content-type": "application/json"}


def escaped(body) -> dict:
    """The body as ASCII JSON: a lone surrogate travels as \\ud800, which httpx's own encoder refuses."""
    return {"content": json.dumps(body).encode(), "headers": JSON}


BAD_REQUESTS = [
    ("post", "/v1/contexts/c/messages", {"content": b'{"messages": [', "headers": JSON}, 400, "malformed_json"),
    (
        "post",
        "/v1/contexts/c/messages",
        {"content": b'{"messages": "\xff\xfe"}', "headers": JSON},
        400,
        "malformed_json",
    ),
    (
        "post",
        "/v1/contexts/c/messages",
        {"content": b"role=user", "headers": {"content-type": "text/plain"}},
        415,
        None,
    ),
    ("post", "/v1/contexts/c/messages", {"json": {"messages": []}}, 422, "validation_error"),
    ("post", "/v1/contexts/c/messages", {"json": {}}, 422, "validation_error"),
    ("post", "/v1/contexts/c/messages", {"json": msgs("fine", "  ")}, 422, "invalid_input"),
    ("post", "/v1/contexts/c/messages", {"json": msgs("fine", "x" * 1001)}, 422, "invalid_input"),
    ("post", "/v1/contexts/c/messages", escaped(msgs("fine", "\ud800")), 422, "invalid_input"),
    ("post", "/v1/contexts/c/messages", {"json": msgs("fine", "nul \x00 inside")}, 422, "invalid_input"),
    ("post", "/v1/contexts/c/messages", {"json": msgs("fine", role="robot")}, 422, "validation_error"),
    ("post", "/v1/contexts/c/messages", {"json": {"messages": [{"role": "user", "content": 7}]}}, 422, None),
    ("post", "/v1/contexts/c/messages", {"json": {"messages": [{"role": "user", "content": "a", "x": 1}]}}, 422, None),
    ("post", "/v1/contexts/new/messages", {"json": msgs("fine", "")}, 422, "invalid_input"),
    ("post", "/v1/contexts/bad%20name/messages", {"json": msgs("fine")}, 422, "validation_error"),
    ("post", "/v1/contexts/c/query", {"json": {"question": ""}}, 422, "invalid_input"),
    ("post", "/v1/contexts/c/query", {"json": {"question": "?!"}}, 422, "invalid_input"),
    ("post", "/v1/contexts/c/query", {"json": {"q": "hi"}}, 422, "validation_error"),
    ("post", "/v1/contexts/nobody/query", {"json": {"question": "hi?"}}, 404, "unknown_context"),
    ("post", "/v1/contexts/c/anticipated", {"json": {"questions": []}}, 422, "validation_error"),
    ("post", "/v1/contexts/c/anticipated", {"json": {"questions": ["ok?", " "]}}, 422, "invalid_input"),
    ("post", "/v1/contexts/nobody/anticipated", {"json": {"questions": ["hi?"]}}, 404, "unknown_context"),
    ("get", "/v1/contexts/nobody", {}, 404, "unknown_context"),
    ("get", "/v1/contexts/nobody/checkpoints", {}, 404, "unknown_context"),
    ("get", "/v1/contexts/c/checkpoints/99", {}, 404, "unknown_version"),
    ("get", "/v1/contexts/c/checkpoints/0", {}, 422, "validation_error"),
    ("get", "/v1/contexts/c/checkpoints/one", {}, 422, "validation_error"),
    ("post", "/v1/contexts/nobody/consolidate", {}, 404, "unknown_context"),
    ("post", "/v1/contexts/nobody/consolidate", {"params": {"wait": "true"}}, 404, "unknown_context"),
    ("post", "/v1/contexts/c/consolidate", {"params": {"wait": "maybe"}}, 422, "validation_error"),
    ("get", "/v1/nothing-here", {}, 404, "not_found"),
    ("put", "/v1/contexts/c", {}, 405, "method_not_allowed"),
    ("delete", "/v1/contexts/ghost", {}, 404, "unknown_context"),
    ("post", "/v1/contexts/c/messages", {"content": b"x" * (16 * 1024 * 1024 + 1), "headers": JSON}, 413, None),
]


def test_bad_input_gets_a_json_error_and_changes_nothing(live, make_app, store):
    app = make_app(max_message_bytes=1000)
    app.ingest("c", msgs("first message")["messages"])
    app.consolidate("c")
    http = live(app).client
    before = snapshot(store)
    for method, path, kwargs, status, kind in BAD_REQUESTS:
        response = http.request(method, path, **kwargs)
        try:
            assert_error(response, status, kind)
        except AssertionError as exc:
            raise AssertionError(f"{method} {path} {kwargs.get('json', '')!s:.80}: {exc}") from None
        assert snapshot(store) == before, (method, path, kwargs)


def test_api_keys(live, app, store):
    http = live(app).client
    # no key exists: the API is open, whatever header is sent
    assert http.get("/v1/contexts/x").status_code == 404
    assert http.get("/v1/contexts/x", headers={"X-API-Key": "st_whatever"}).status_code == 404

    key, other = store.create_api_key("ci"), store.create_api_key("other")
    for headers in ({}, {"X-API-Key": "st_wrong"}, {"X-API-Key": ""}, {"X-API-Key": key[:-1]}):
        error = assert_error(http.post("/v1/contexts/x/messages", json=msgs("hi"), headers=headers), 401)
        assert error["type"] == "unauthorized"
    assert store.list_contexts() == []
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert http.get(path).status_code == 200, path

    ok = http.post("/v1/contexts/x/messages", json=msgs("hi"), headers={"X-API-Key": key})
    assert ok.status_code == 201
    assert http.get("/v1/contexts/x", headers={"X-API-Key": other}).status_code == 200

    store.revoke_api_key("ci")
    assert_error(http.get("/v1/contexts/x", headers={"X-API-Key": key}), 401, "unauthorized")
    assert http.get("/v1/contexts/x", headers={"X-API-Key": other}).status_code == 200
    store.revoke_api_key("other")
    # every key revoked: closed stays closed (invariant 9), for no key and for either revoked key
    for headers in ({}, {"X-API-Key": key}, {"X-API-Key": other}):
        assert_error(http.post("/v1/contexts/x/messages", json=msgs("hi"), headers=headers), 401, "unauthorized")
    assert len(store.messages_after("x", 0)) == 1


def test_keys_commands_store_only_a_hash(make_cli, local_app, tmp_path):
    url = local_app(f"sqlite:///{tmp_path / 'db.sqlite'}").settings.db
    cli = make_cli(url)
    created = cli.ok("keys", "create", "ci", "--json")
    assert created["name"] == "ci" and created["key"].startswith("st_")
    [listed] = cli.ok("keys", "list", "--json")
    assert (listed["name"], listed["revoked_at"]) == ("ci", None) and created["key"] not in json.dumps(listed)
    # the database file and its WAL: only the sha256 is stored
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("db.sqlite*"))
    assert created["key"].encode() not in stored and created["key"][:10].encode() in stored
    cli.ok("keys", "revoke", "ci")
    assert cli.ok("keys", "list", "--json")[0]["revoked_at"] is not None
    again = cli.run("keys", "create", "ci")
    assert again.returncode == 1 and "already exists" in again.stderr and len(again.stderr.splitlines()) == 1


@pytest.mark.parametrize("phase", ["warming", "draining"])
def test_readyz_is_503_while_warming_or_draining(live, app, phase):
    server = live(app)
    server.frontend.phase = phase
    response = server.client.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == phase
    assert server.client.get("/healthz").status_code == 200


def test_without_a_model_readyz_says_why_and_precomputed_answers_still_work(app, store, tmp_path):
    from sleeptime.app import App
    from sleeptime.settings import load_settings

    app.ingest("c", msgs("my name is Alice")["messages"])
    app.anticipate("c", ["What is my name?"])
    app.consolidate("c")
    missing = load_settings(db=app.settings.db, model=str(tmp_path / "missing.safetensors"), device="cpu")
    server = LiveServer(create_app(missing, app=App(missing, store=store)))
    try:
        ready = wait_until(lambda: server.client.get("/readyz").json()["status"] == "error", 30, "the failed warm-up")
        response = server.client.get("/readyz")
        assert ready and response.status_code == 503 and "missing.safetensors" in response.json()["error"]
        hit = server.client.post("/v1/contexts/c/query", json={"question": "What is my name?"})
        assert hit.json()["source"] == "precomputed"
        error = assert_error(server.client.post("/v1/contexts/c/query", json={"question": "Who am I?"}), 503)
        assert "cannot load model" in error["message"]
    finally:
        server.close()


def test_delete_forgets_a_context_and_its_name_starts_fresh(http, store):
    http.post("/v1/contexts/c/messages", json=msgs("my name is Alice", "I live in Lyon"))
    http.post("/v1/contexts/c/anticipated", json={"questions": ["What is my name?"]})
    assert http.post("/v1/contexts/c/consolidate", params={"wait": "true"}).json()["published"]
    assert http.post("/v1/contexts/c/query", json={"question": "Where do I live?"}).status_code == 200
    http.post("/v1/contexts/other/messages", json=msgs("hello"))

    forgotten = http.delete("/v1/contexts/c")
    assert forgotten.status_code == 200, forgotten.text
    deleted = forgotten.json()["deleted"]
    assert (deleted["messages"], deleted["checkpoints"], deleted["precomputed_answers"]) == (2, 1, 2)
    assert deleted["query_log"] == 1 and deleted["anticipated_queries"] == 2
    assert_error(http.get("/v1/contexts/c"), 404, "unknown_context")
    assert_error(http.delete("/v1/contexts/c"), 404, "unknown_context")
    assert [c.name for c in store.list_contexts()] == ["other"]
    assert http.post("/v1/contexts/c/messages", json=msgs("a new start")).json()["first_seq"] == 1
    assert http.get("/v1/contexts/c").json()["head_version"] is None


def test_consolidations_with_wait_at_once_run_one_pass(live, app, store):
    http = live(app).client
    app.ingest("c", [{"role": "user", "content": " ".join(["the river runs north"] * 20)}] * 30)
    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda _: http.post("/v1/contexts/c/consolidate", params={"wait": "true"}), range(3)))
    assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
    # one pass published; the others waited for it (the context's lock) and found nothing left to do
    assert sorted(r.json()["published"] for r in responses) == [False, False, True]
    assert {r.json()["checkpoint"]["version"] for r in responses} == {1}
    assert [run.status for run in store.list_runs("c")] == ["published"]


def test_precomputed_answers_carry_their_sources_and_asking_is_enough_for_a_pass(http):
    statement = {"role": "user", "content": "my locker code is 4821, don't forget it"}
    chatter = [{"role": "assistant", "content": "noted"}, {"role": "user", "content": "the river runs north"}]
    assert http.post("/v1/contexts/bob/messages", json={"messages": [statement, *chatter]}).status_code in (200, 201)
    assert http.post("/v1/contexts/bob/consolidate", params={"wait": "true"}).json()["published"]

    hit = http.post("/v1/contexts/bob/query", json={"question": "What is my locker code?"}).json()
    assert (hit["source"], hit["checkpoint"]) == ("precomputed", 1) and 1 in hit["sources"]
    online = http.post("/v1/contexts/bob/query", json={"question": "Where does the river run?"}).json()
    assert (online["source"], online["sources"]) == ("online", [])

    # no new message: the pass answers the question asked since, for the same head
    done = http.post("/v1/contexts/bob/consolidate", params={"wait": "true"}).json()
    assert (done["published"], done["checkpoint"]["version"], done["answered"]) == (False, 1, 1)
    again = http.post("/v1/contexts/bob/query", json={"question": "where does the river run"}).json()
    assert (again["source"], again["checkpoint"]) == ("precomputed", 1) and 3 in again["sources"]


@pytest.mark.parametrize("min_confidence", [0.0, 1.0])
def test_answers_less_probable_than_the_threshold_are_withheld_over_http(live, make_app, store, min_confidence):
    from sleeptime.models.tokenizer import ANSWER_TOKENS

    app = make_app(min_confidence=min_confidence)
    app.ingest("c", msgs("my name is Alice", "the river runs north")["messages"])
    app.consolidate("c")
    # as a pass wrote it before confidence was kept: never withheld
    store.add_answers("c", 1, [("Who am I?", "who am i", "Alice", [1])])
    http = live(app).client
    state = app.engine.decode_state(store.load_checkpoint("c").payload)
    expected = {
        "What is my name?": ("precomputed", store.get_precomputed("c", 1, "what is my name")),
        "Where does the river run?": ("online", app.engine.reply(state, "Where does the river run?", [], ANSWER_TOKENS)),
    }
    for question, (source, model) in expected.items():
        body = http.post("/v1/contexts/c/query", json={"question": question}).json()
        text = model.answer if source == "precomputed" else model.text
        assert (body["source"], body["confidence"]) == (source, model.confidence)
        assert isinstance(body["confidence"], float) and 0.0 <= body["confidence"] <= 1.0
        if min_confidence == 1.0:
            assert (body["answer"], body["abstained"], body["guess"]) == ("I don't know that yet.", True, text)
        else:
            assert (body["answer"], body["abstained"], body["guess"]) == (text, False, None)
    old = http.post("/v1/contexts/c/query", json={"question": "who am I"}).json()
    assert (old["answer"], old["source"], old["confidence"], old["abstained"], old["guess"]) == (
        "Alice", "precomputed", None, False, None
    )
