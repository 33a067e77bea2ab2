"""The `sleeptime` command: acceptance tests through real subprocesses on a temp database, and a few in-process
(CliRunner) checks."""

import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from sleeptime.app import parse_transcript
from sleeptime.cli import app as cli_app
from sleeptime.db import InvalidInput, Store
from sleeptime.settings import DEFAULT_MIN_CONFIDENCE

WORDS = ["alpha", "beta", "gamma", "delta", "cat", "blue", "the", "river", "runs", "north", "seven", "apples"]


def jsonl(n: int, seed: int = 0, words: int = 30) -> str:
    rng = random.Random(seed)
    lines = [
        json.dumps({"role": "user" if i % 2 == 0 else "assistant", "content": " ".join(rng.choices(WORDS, k=words))})
        for i in range(n)
    ]
    return "\n".join(lines) + "\n"


def sqlite_url(path) -> str:
    return f"sqlite:///{path}"


def error_line(done) -> str:
    """The single stderr line of a user error (exit 1, no traceback)."""
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def snapshot(url: str) -> tuple:
    """Everything a bad command must leave alone."""
    with Store(url) as store:
        contexts = store.list_contexts()
        return (
            [(c.name, c.head_version, c.cursor_seq, c.last_seq) for c in contexts],
            {c.name: [(m.seq, m.content) for m in store.messages_after(c.name, 0)] for c in contexts},
            {c.name: [(k.version, k.sha256) for k in store.list_checkpoints(c.name)] for c in contexts},
            {c.name: [a.question for a in store.list_anticipated(c.name)] for c in contexts},
        )


def test_ingest_consolidate_query_end_to_end(make_cli, tmp_path):
    cli = make_cli(sqlite_url(tmp_path / "db.sqlite"))
    assert cli.ok("init", "--json")["revision"]
    transcript = tmp_path / "chat.jsonl"
    transcript.write_text(jsonl(6) + json.dumps({"role": "user", "content": "my name is Ada"}) + "\n")
    ingested = cli.ok("ingest", "c", str(transcript), "--json")
    assert ingested == {"context": "c", "messages": 7, "first_seq": 1, "last_seq": 7}
    assert cli.ok("anticipate", "c", "Where is the river?", "--json") == {"context": "c", "added": 1}

    first = cli.ok("consolidate", "c", "--json")
    assert first["published"] and first["checkpoint"]["version"] == 1 and first["checkpoint"]["cursor_seq"] == 7
    registered = cli.ok("query", "c", "where is the river", "--json")
    assert (registered["source"], registered["checkpoint"]) == ("precomputed", 1)
    assert set(registered) == {
        "answer", "source", "checkpoint", "latency_ms", "sources", "confidence", "abstained", "guess"
    }
    assert 0.0 <= registered["confidence"] <= 1.0
    # the default threshold withholds the tiny random model's unsure answers, keeping them as the guess
    withheld = registered["confidence"] < DEFAULT_MIN_CONFIDENCE
    assert registered["abstained"] == withheld and (registered["guess"] is not None) == withheld
    assert all(isinstance(seq, int) and 1 <= seq <= 7 for seq in registered["sources"])
    other = cli.ok("query", "c", "How old is the cat?", "--json")
    assert (other["source"], other["checkpoint"], other["sources"]) == ("online", 1, [])
    # asking is enough for a pass: no new message, so the answers join the same head
    asked = cli.ok("consolidate", "c", "--json")
    assert (asked["published"], asked["checkpoint"]["version"], asked["answered"]) == (False, 1, 1)
    assert cli.ok("query", "c", "how old is the cat", "--json")["source"] == "precomputed"

    cli.ok("ingest", "c", input="a plain text note\nof two lines\n")
    [status] = cli.ok("status", "c", "--json")
    assert [status[k] for k in ("head_version", "cursor_seq", "last_seq", "pending_messages")] == [1, 7, 8, 1]
    second = cli.ok("consolidate", "c")
    assert second.stderr.startswith("published checkpoint 2 of c: cursor 8")
    # the question asked online came back through the query log: now it is precomputed
    assert cli.ok("query", "c", "how old is the cat", "--json")["source"] == "precomputed"
    versions = cli.ok("checkpoints", "c", "--json")
    assert [(v["version"], v["parent_version"], v["head"]) for v in versions] == [(2, 1, True), (1, None, False)]
    assert cli.ok("rollback", "c", "1", "--json")["version"] == 1
    human = cli.ok("status")
    assert "c" in human.stdout and human.stderr == ""


def test_query_withholds_an_unsure_answer_and_shows_the_guess_when_asked(make_cli, local_app, tmp_path):
    url = sqlite_url(tmp_path / "db.sqlite")
    app = local_app(url)
    app.ingest("c", [{"role": "user", "content": "my name is Ada"}, {"role": "assistant", "content": "noted"}])
    app.consolidate("c")
    stored = app.store.get_precomputed("c", 1, "what is my name")
    lenient = make_cli(url, SLEEPTIME_MIN_CONFIDENCE="0")
    given = lenient.ok("query", "c", "What is my name?", "--json")
    assert given | {"latency_ms": 0} == {
        "answer": stored.answer, "source": "precomputed", "checkpoint": 1, "latency_ms": 0,
        "sources": list(stored.sources), "confidence": stored.confidence, "abstained": False, "guess": None,
    }
    strict = make_cli(url, SLEEPTIME_MIN_CONFIDENCE="1")
    withheld = strict.ok("query", "c", "What is my name?", "--json")
    assert (withheld["answer"], withheld["abstained"], withheld["guess"], withheld["confidence"]) == (
        "I don't know that yet.", True, stored.answer, stored.confidence
    )
    online = strict.ok("query", "c", "How old is the cat?", "--json")
    assert (online["source"], online["abstained"], online["answer"]) == ("online", True, "I don't know that yet.")
    assert isinstance(online["guess"], str) and 0.0 <= online["confidence"] < 1.0
    human = strict.ok("query", "c", "What is my name?")
    assert human.stdout == "I don't know that yet.\n"
    assert f"precomputed, checkpoint 1, confidence {stored.confidence:.1%}, withheld" in human.stderr
    shown = strict.ok("query", "c", "What is my name?", "--show-guess")
    assert shown.stdout == f"I don't know that yet.\nguess: {stored.answer}\n"
    # nothing withheld, nothing more to show
    assert lenient.ok("query", "c", "What is my name?", "--show-guess").stdout == f"{stored.answer}\n"


def test_bad_input_exits_1_with_one_line_and_changes_nothing(make_cli, local_app, tmp_path):
    url = sqlite_url(tmp_path / "db.sqlite")
    app = local_app(url)
    app.ingest("c", [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}])
    app.consolidate("c")
    before = snapshot(url)
    cli = make_cli(url, SLEEPTIME_MAX_MESSAGE_BYTES="64")
    cases = {
        "not valid UTF-8": ("ingest", "c", "-", b'{"role": "user", "content": "caf\xe9"}\n'),
        "line 2 is not valid JSON": ("ingest", "c", "-", jsonl(1, words=3) + '{"role": "user", "content": oops}\n'),
        "input is empty": ("ingest", "c", "-", " \n\t\n"),
        "message 2 is 2": ("ingest", "c", "-", jsonl(1, words=3) + jsonl(1, words=40)),
        "unknown context 'ghost'": ("query", "ghost", "hello?"),
        "unknown context 'ghost' ": ("consolidate", "ghost"),
        "no checkpoint version 9": ("rollback", "c", "9"),
    }
    for expected, (command, *args) in cases.items():
        data = args.pop() if command == "ingest" else None
        done = cli.run(command, *args, input=data)
        assert expected.strip() in error_line(done), (command, args)
    assert cli.run("rollback", "c", "one").returncode == 2
    assert snapshot(url) == before


@pytest.mark.parametrize(
    "messages, error",
    [
        pytest.param([{"role": "robot", "content": "beep"}], "role 'robot'", id="role"),
        pytest.param([{"role": "user", "content": "ok"}, {"role": "user", "content": " "}], "message 2 is empty"),
        pytest.param([{"role": "user", "content": 5}], "must be a string", id="not-text"),
        pytest.param([{"role": "user", "content": "\ud800"}], "not valid UTF-8", id="surrogate"),
        pytest.param([["user", "hi"]], "expected an object", id="not-an-object"),
        pytest.param([{"role": "user", "content": "x" * 65}], "over the limit of 64", id="oversized"),
        pytest.param([], "no messages", id="none"),
    ],
)
def test_ingest_refuses_bad_messages_atomically(make_app, store, messages, error):
    app = make_app(max_message_bytes=64)
    app.ingest("c", [{"role": "user", "content": "first"}])
    with pytest.raises(InvalidInput, match=error):
        app.ingest("c", messages)
    with pytest.raises(InvalidInput, match="invalid context name"):
        app.ingest("no spaces", [{"role": "user", "content": "hi"}])
    assert [m.content for m in store.messages_after("c", 0)] == ["first"]


def test_a_corrupt_checkpoint_is_refused_and_the_previous_version_serves(make_cli, local_app, tmp_path):
    path = tmp_path / "db.sqlite"
    app = local_app(sqlite_url(path))
    for seed in (1, 2):
        app.ingest("c", parse_transcript(jsonl(3, seed=seed).encode()))
        app.consolidate("c")
    with sqlite3.connect(path) as db:
        [(payload,)] = db.execute("SELECT payload FROM checkpoints WHERE version = 2").fetchall()
        flipped = payload[:-4] + bytes(b ^ 0xFF for b in payload[-4:])
        db.execute("UPDATE checkpoints SET payload = ? WHERE version = 2", (flipped,))
    cli = make_cli(sqlite_url(path))
    answer = cli.ok("query", "c", "What happened?", "--json")
    assert (answer["source"], answer["checkpoint"]) == ("online", 1)
    assert "checkpoint 2 of context 'c' is corrupt" in error_line(cli.run("rollback", "c", "2"))
    app.ingest("c", [{"role": "user", "content": "one more"}])
    assert "corrupt" in error_line(cli.run("consolidate", "c"))


@pytest.mark.slow
def test_sigkill_during_consolidation_leaves_a_consistent_database(make_cli, tmp_path):
    """Kill -9 at 20%, 50% and 90% of a typical run: each time the head is unchanged or fully advanced, SQLite is
    intact, and the run that finally completes gives the same checkpoint as an uninterrupted one (no message lost or
    consumed twice). The uninterrupted reference run also takes messages ingested while it runs: they wait for the
    next pass."""
    base = tmp_path / "base.sqlite"
    cli = make_cli(sqlite_url(base))
    cli.ok("init")
    cli.ok("ingest", "c", input=jsonl(240, words=40))
    reference_db = tmp_path / "reference.sqlite"
    shutil.copy(base, reference_db)
    reference = make_cli(sqlite_url(reference_db))

    started = time.monotonic()
    proc = reference.popen("consolidate", "c", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with Store(sqlite_url(reference_db)) as store:
        while store.last_run("c") is None:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    reference.ok("ingest", "c", input=jsonl(3, seed=5))
    out, err = proc.communicate(timeout=120)
    typical = time.monotonic() - started
    assert proc.returncode == 0, err
    expected = json.loads(out)["checkpoint"]
    assert expected["cursor_seq"] == 240
    assert reference.ok("consolidate", "c", "--json")["checkpoint"]["cursor_seq"] == 243

    target = make_cli(sqlite_url(base))
    for fraction in (0.2, 0.5, 0.9):
        proc = target.popen("consolidate", "c", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(typical * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with sqlite3.connect(base) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        with Store(sqlite_url(base)) as store:
            heads = [(k.version, k.cursor_seq, k.sha256) for k in store.list_checkpoints("c")]
            assert heads in ([], [(1, 240, expected["sha256"])]), fraction
            assert len(store.messages_after("c", 0)) == 240
    target.ok("consolidate", "c")
    with Store(sqlite_url(base)) as store:
        [head] = store.list_checkpoints("c")
        assert (head.version, head.parent_version, head.cursor_seq, head.sha256) == (1, None, 240, expected["sha256"])
        assert store.pending("c").messages == 0


def test_two_consolidations_started_together_publish_once(make_cli, db_url):
    cli = make_cli(db_url)
    cli.ok("init")
    cli.ok("ingest", "c", input=jsonl(30, words=40))
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [cli.popen("consolidate", "c", "--json", **pipes) for _ in range(2)]
    outcomes = [subprocess.CompletedProcess(p.args, p.wait(timeout=120), *p.communicate()) for p in procs]
    with Store(db_url) as store:
        [checkpoint] = store.list_checkpoints("c")
        runs = store.list_runs("c")
    assert checkpoint.parent_version is None and checkpoint.cursor_seq == 30
    assert [r.status for r in runs].count("published") == 1
    # the second waited for the first pass (the context's lock), then found nothing left to do
    assert [done.returncode for done in outcomes] == [0, 0], [done.stderr for done in outcomes]
    assert sorted(json.loads(done.stdout)["published"] for done in outcomes) == [False, True]
    assert [r.status for r in runs] == ["published"]


def _kill_during_a_pass(cli, url, sig):
    """Start `consolidate c` and send `sig` once its run is recorded; returns (exit status, stderr)."""
    with Store(url) as store:
        runs = len(store.list_runs("c"))
        proc = cli.popen("consolidate", "c", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while len(store.list_runs("c")) == runs:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_runs_of_a_killed_or_stopped_pass_do_not_stay_running(make_cli, tmp_path):
    url = sqlite_url(tmp_path / "db.sqlite")
    cli = make_cli(url)
    cli.ok("init")
    cli.ok("ingest", "c", input=jsonl(240, words=40))
    assert _kill_during_a_pass(cli, url, signal.SIGKILL)[0] == -signal.SIGKILL
    [status] = cli.ok("status", "--json")
    assert status["last_run"]["status"] == "abandoned" and status["head_version"] is None

    code, err = _kill_during_a_pass(cli, url, signal.SIGTERM)
    assert code == 1 and "aborted before publishing" in err and len(err.strip().splitlines()) == 1, err
    with Store(url) as store:
        runs = store.list_runs("c")
        assert [r.status for r in runs] == ["failed", "abandoned"] and store.get_context("c").head_version is None
    assert cli.ok("consolidate", "c", "--json")["published"]


def test_forget_deletes_a_context_and_every_byte_of_its_text(make_cli, tmp_path):
    url = sqlite_url(tmp_path / "db.sqlite")
    cli = make_cli(url)
    cli.ok("init")
    marker = "Quetzalcoatl-7781 is my secret"
    cli.ok("ingest", "c", input=json.dumps({"role": "user", "content": marker}) + "\n" + jsonl(20))
    cli.ok("ingest", "other", input=jsonl(3))
    cli.ok("anticipate", "c", f"what is {marker}?")
    cli.ok("consolidate", "c")
    cli.ok("query", "c", f"where is {marker}?")
    files = lambda: b"".join(p.read_bytes() for p in tmp_path.glob("db.sqlite*") if p.is_file())
    assert marker.encode() in files()

    assert cli.run("forget", "c").returncode == 2
    assert cli.ok("status", "c", "--json")[0]["head_version"] == 1
    deleted = cli.ok("forget", "c", "--yes", "--json")["deleted"]
    assert deleted["messages"] == 21 and deleted["checkpoints"] == 1 and deleted["query_log"] == 1
    assert marker.encode() not in files() and marker.lower().encode() not in files()
    assert "unknown context 'c'" in error_line(cli.run("forget", "c", "--yes"))
    assert [row["name"] for row in cli.ok("status", "--json")] == ["other"]
    assert cli.ok("ingest", "c", "--json", input="a new start")["first_seq"] == 1
    [fresh] = cli.ok("status", "c", "--json")
    assert (fresh["head_version"], fresh["last_seq"], fresh["last_run"]) == (None, 1, None)


@pytest.mark.parametrize(
    "data, messages",
    [
        pytest.param(b"  hello there \n", [{"role": "user", "content": "hello there"}], id="plain"),
        pytest.param(b'\n{"role": "tool", "content": "hi", "x": 1}\n\n', [{"role": "tool", "content": "hi", "x": 1}]),
        pytest.param(b"{not json at all", None, id="brace-but-not-json"),
        pytest.param(b"\xff", None, id="bad-utf8"),
        pytest.param(b"", None, id="empty"),
        pytest.param(
            b'\xef\xbb\xbf{"role": "assistant", "content": "hi"}\n', [{"role": "assistant", "content": "hi"}], id="bom"
        ),
    ],
)
def test_parse_transcript(data, messages):
    if messages is None:
        with pytest.raises(InvalidInput):
            parse_transcript(data)
    else:
        assert parse_transcript(data) == messages


def test_a_jsonl_file_with_a_byte_order_mark_is_read_as_jsonl(make_cli, tmp_path):
    cli = make_cli(sqlite_url(tmp_path / "db.sqlite"))
    cli.ok("init")
    transcript = tmp_path / "chat.jsonl"
    transcript.write_bytes(b"\xef\xbb\xbf" + jsonl(2, words=3).encode())
    assert cli.ok("ingest", "c", str(transcript), "--json")["messages"] == 2
    with Store(sqlite_url(tmp_path / "db.sqlite")) as store:
        assert [m.role for m in store.messages_after("c", 0)] == ["user", "assistant"]


def test_unusable_databases_are_one_line_errors(make_cli, local_app, tmp_path):
    not_a_db = tmp_path / "passwd"
    not_a_db.write_text("root:x:0:0:root:/root:/bin/bash\n")
    local_app(sqlite_url(tmp_path / "db.sqlite")).ingest("c", [{"role": "user", "content": "hello"}])
    # read-only through SQLite's own flag: file permissions do not stop root, who runs many CI jobs
    read_only = f"sqlite:///file:{tmp_path / 'db.sqlite'}?mode=ro&uri=true"
    cases = [
        ("postgresql+psycopg://u:hunter2@127.0.0.1:1/x", ("status",), "connection refused"),
        (sqlite_url(not_a_db), ("status",), "file is not a database"),
        (read_only, ("ingest", "c", "-"), "readonly database"),
        ("postgresql://u:hunter2@host:port/db", ("status",), "invalid database url"),
    ]
    for url, args, expected in cases:
        line = error_line(make_cli(url).run(*args, input="hi"))
        assert expected in line.lower() and "hunter2" not in line, (url, line)
    assert not_a_db.read_text().startswith("root:")


@pytest.mark.postgres
def test_a_missing_postgres_database_is_one_line(make_cli, pg_url):
    from sqlalchemy.engine import make_url

    missing = make_url(pg_url).set(database="sleeptime_no_such_database").render_as_string(hide_password=False)
    assert 'database "sleeptime_no_such_database" does not exist' in error_line(make_cli(missing).run("status"))


def test_huge_version_numbers_are_unknown_versions(make_cli, local_app, db_url):
    local_app(db_url).ingest("c", [{"role": "user", "content": "hello"}])
    cli = make_cli(db_url)
    for version in ("99999999999999999999", "2147483648", "-1"):
        assert f"no checkpoint version {version}" in error_line(cli.run("rollback", "c", "--", version))


def test_context_names_dot_and_dotdot_are_refused_and_long_names_cut(make_cli, local_app, tmp_path):
    url = sqlite_url(tmp_path / "db.sqlite")
    local_app(url)
    cli = make_cli(url)
    for name in (".", ".."):
        assert "invalid context name" in error_line(cli.run("ingest", name, "-", input="hello"))
    long = "x" * 10_000
    for args in (("ingest", long, "-"), ("status", long), ("query", long, "hi?")):
        line = error_line(cli.run(*args, input="hello"))
        assert len(line) < 200 and "10000 characters" in line, line
    assert snapshot(url) == ([], {}, {}, {})


def _damaged_models(tiny_model_path, tmp_path) -> dict:
    data = tiny_model_path.read_bytes()
    flipped = bytearray(data)
    # one bit of a weight near the end of the file: it still loads as a model unless its digest is checked
    flipped[-100] ^= 0x10
    paths = {"corrupt": tmp_path / "flipped.safetensors", "truncated": tmp_path / "cut.safetensors"}
    paths["corrupt"].write_bytes(bytes(flipped))
    paths["truncated"].write_bytes(data[: len(data) // 2])
    return paths


def test_a_damaged_model_file_is_refused_in_one_line(make_cli, local_app, tiny_model_path, tmp_path):
    url = sqlite_url(tmp_path / "db.sqlite")
    local_app(url).ingest("c", [{"role": "user", "content": "hello"}])
    before = snapshot(url)
    for kind, path in _damaged_models(tiny_model_path, tmp_path).items():
        cli = make_cli(url, SLEEPTIME_MODEL=str(path))
        for args in (("consolidate", "c"), ("query", "c", "what did I say?")):
            assert "cannot load model" in error_line(cli.run(*args)), (kind, args)
    assert snapshot(url) == before


def test_commands_without_a_model_never_import_torch(make_cli, local_app, tmp_path):
    url = sqlite_url(tmp_path / "db.sqlite")
    app = local_app(url)
    app.ingest("c", [{"role": "user", "content": "hello"}])
    app.anticipate("c", ["What is my name?"])
    app.consolidate("c")
    # a precomputed answer needs no model either
    script = (
        "import sys\n"
        "from sleeptime import cli\n"
        "for argv in (['status'], ['checkpoints', 'c'], ['query', 'c', 'what is my name'], ['anticipate', 'c', 'Who?'],"
        " ['rollback', 'c', '1'], ['ingest', 'c', '-']):\n"
        "    sys.argv = ['sleeptime', *argv]\n"
        "    try:\n"
        "        cli.app()\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, argv\n"
        "print('torch' in sys.modules)\n"
    )
    cli = make_cli(url)
    done = subprocess.run(
        [sys.executable, "-c", script], input=b"hi", env=cli.env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0 and done.stdout.decode().splitlines()[-1] == "False", done.stderr.decode()


def test_help_lists_the_commands():
    result = CliRunner().invoke(cli_app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    commands = ("init", "ingest", "consolidate", "query", "anticipate", "status", "checkpoints", "rollback", "daemon")
    for command in commands:
        assert command in result.output
