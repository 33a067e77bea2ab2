"""The daemon: in-process on both backends (run_daemon with a stop event), and as a real `sleeptime daemon`
process driven by signals."""

import json
import logging
import random
import signal
import subprocess
import threading
import time
from datetime import datetime

import pytest

from sleeptime.daemon import JsonFormatter, run_daemon
from sleeptime.db import Store

WORDS = ["alpha", "beta", "gamma", "delta", "cat", "blue", "the", "river", "runs", "north", "seven", "apples"]


def messages(n: int, words: int = 30, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{"role": "user", "content": " ".join(rng.choices(WORDS, k=words))} for _ in range(n)]


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def seconds_between(first: dict, second: dict) -> float:
    return (datetime.fromisoformat(second["ts"]) - datetime.fromisoformat(first["ts"])).total_seconds()


def start_in_thread(app, **kwargs):
    stop, abort, codes = threading.Event(), threading.Event(), []
    options = {"abort_event": abort, "handle_signals": False, "poll_seconds": 0.1, **kwargs}
    thread = threading.Thread(target=lambda: codes.append(run_daemon(app, stop, **options)))
    thread.start()
    return thread, stop, abort, codes


def test_the_daemon_consolidates_idle_contexts_and_drains(make_app, store):
    app = make_app(idle_after=0.2, sweep_interval=0.3, keep_checkpoints=1)
    app.ingest("c", messages(3))
    thread, stop, _, codes = start_in_thread(app, workers=2)
    try:
        wait_until(lambda: store.get_context("c").head_version == 1, 60, "the first consolidation")
        app.ingest("c", messages(2, seed=1))
        wait_until(lambda: store.get_context("c").head_version == 2, 60, "the second consolidation")
        wait_until(lambda: [c.version for c in store.list_checkpoints("c")] == [2], 30, "the prune")
    finally:
        stop.set()
        thread.join(60)
    assert codes == [0] and store.pending("c").messages == 0
    # a sweep during a pass may have queued one more (empty) pass that the stop left queued
    assert {j.status for j in store.list_jobs()} <= {"done", "queued"}


def test_abort_stops_the_running_job_before_it_publishes(make_app, store):
    app = make_app(idle_after=0.1, sweep_interval=0.2)
    app.ingest("c", messages(300, words=40))
    thread, stop, abort, codes = start_in_thread(app)
    wait_until(lambda: store.list_jobs(status="running"), 60, "a running job")
    stop.set()
    abort.set()
    thread.join(60)
    assert codes == [1] and store.get_context("c").head_version is None
    # a sweep between the abort and the scheduler's shutdown may have queued the context again
    [job] = store.list_jobs(status="failed")
    assert job.error == "aborted by a second SIGTERM"
    assert {j.status for j in store.list_jobs()} <= {"failed", "queued"}
    assert store.last_run("c").status == "failed"


def test_json_log_lines_carry_the_extra_fields():
    record = logging.LogRecord("sleeptime.daemon", logging.INFO, __file__, 1, "job %s", ("done",), None)
    record.event, record.job = "job_done", 7
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["msg"], line["event"], line["job"]) == ("info", "job done", "job_done", 7)
    assert {"ts", "logger"} <= set(line)


class DaemonProcess:
    """`sleeptime daemon` with its JSON log lines collected as they come."""

    def __init__(self, cli, **env):
        self.proc = cli.popen("daemon", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stderr.readline, "")))
        self.reader.start()

    def events(self) -> list[dict]:
        return [json.loads(line) for line in list(self.lines)]

    def wait_for(self, event: str, timeout: float = 60, **fields) -> dict:
        def seen():
            assert self.proc.poll() is None, "".join(self.lines)
            wanted = {"event": event, **fields}
            return next((e for e in self.events() if wanted.items() <= e.items()), None)

        return wait_until(seen, timeout, event)

    def stop(self, abort: bool = False, timeout: float = 60) -> int:
        """SIGTERM (drain); with abort, a second SIGTERM once the first was handled (two pending signals of one
        kind would reach Python as one)."""
        self.proc.send_signal(signal.SIGTERM)
        if abort:
            self.wait_for("daemon_draining")
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.reader.join(10)
        return code


@pytest.fixture
def daemon_db(tmp_path, local_app):
    return local_app(f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_a_daemon_process_consolidates_an_idle_context_and_exits_0_on_sigterm(make_cli, daemon_db):
    url = daemon_db.settings.db
    daemon_db.ingest("c", messages(3))
    daemon = DaemonProcess(make_cli(url), SLEEPTIME_IDLE_AFTER="0.5", SLEEPTIME_SWEEP_INTERVAL="1")
    try:
        started = daemon.wait_for("daemon_started")
        done = daemon.wait_for("job_done")
    finally:
        code = daemon.stop()
    assert code == 0, daemon.lines
    assert done["published"] and done["context"] == "c"
    # idle since before the start: a sweep queued it within one sweep period (1 s) of the start
    queued = next(e for e in daemon.events() if e.get("event") == "sweep" and "c" in e["queued"])
    assert seconds_between(started, queued) < 1 + 0.5
    with Store(url) as store:
        assert store.get_context("c").head_version == 1 and store.pending("c").messages == 0
    # the prune queued after the publish may still finish while draining
    events = [e.get("event") for e in daemon.events()]
    assert "daemon_draining" in events and events[-1] == "daemon_stopped"


def test_sigterm_drains_the_running_job_and_a_second_one_aborts_it(make_cli, daemon_db):
    url = daemon_db.settings.db
    daemon_db.ingest("drained", messages(100, words=40))
    cli = make_cli(url)
    env = {"SLEEPTIME_IDLE_AFTER": "0.1", "SLEEPTIME_SWEEP_INTERVAL": "0.5"}

    daemon = DaemonProcess(cli, **env)
    daemon.wait_for("job_started", kind="consolidate")
    assert daemon.stop() == 0, daemon.lines
    with Store(url) as store:
        assert store.get_context("drained").cursor_seq == 100
        assert [j.status for j in store.list_jobs("drained")][:1] == ["done"]

    daemon_db.ingest("aborted", messages(300, words=40, seed=1))
    daemon = DaemonProcess(cli, **env)
    daemon.wait_for("job_started", kind="consolidate", context="aborted")
    assert daemon.stop(abort=True) == 1, daemon.lines
    with Store(url) as store:
        assert store.get_context("aborted").head_version is None
        assert store.list_jobs("aborted", status="failed")[0].error == "aborted by a second SIGTERM"
    assert "job_aborted" in [e.get("event") for e in daemon.events()]
