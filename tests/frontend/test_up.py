"""`sleeptime up` and `sleeptime serve` as real processes."""

import re
import signal
import socket
import subprocess

import httpx

from .conftest import free_port, wait_until


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None


def worker_runs_done(metrics: str) -> float:
    pattern = r'^sleeptime_consolidation_runs_total\{outcome="done",trigger="worker"\} (\S+)$'
    found = re.search(pattern, metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_up_on_a_fresh_machine_serves_consolidates_and_drains_on_sigterm(make_cli, tmp_path):
    port = free_port()
    url, db = f"http://127.0.0.1:{port}", tmp_path / "fresh" / "db.sqlite"
    cli = make_cli(f"sqlite:///{db}")
    env = {"SLEEPTIME_PORT": str(port), "SLEEPTIME_IDLE_AFTER": "0.3", "SLEEPTIME_SWEEP_INTERVAL": "0.3"}
    proc = cli.popen("up", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        health = wait_until(lambda: proc.poll() is not None or _get(f"{url}/healthz"), 60, "/healthz")
        assert proc.poll() is None, proc.stderr.read()
        assert health.json()["status"] == "ok"
        wait_until(lambda: _get(f"{url}/readyz").status_code == 200, 60, "/readyz")
        with httpx.Client(base_url=url, timeout=60) as http:
            added = http.post("/v1/contexts/c/messages", json={"messages": [{"role": "user", "content": "hello"}]})
            assert added.status_code == 201, added.text
            # the daemon in the same process finds the context idle and consolidates it
            wait_until(lambda: http.get("/v1/contexts/c").json()["head_version"] == 1, 60, "the idle consolidation")
            answer = http.post("/v1/contexts/c/query", json={"question": "what did I say?"}).json()
            assert answer["checkpoint"] == 1
            # the worker counts the run once its publish has returned, so the head can move a moment before; the
            # question just asked makes another pass due, which may be counted too by the time /metrics is read
            wait_until(lambda: worker_runs_done(http.get("/metrics").text) >= 1, 30, "the run counted in /metrics")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stderr.read()
    assert code == 0, log
    assert '"event": "up_draining"' in log and '"event": "daemon_stopped"' in log
    assert _get(f"{url}/healthz") is None


def test_serve_refuses_a_database_without_schema_or_a_taken_port(make_cli, local_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    done = make_cli(url).run("serve", "--port", str(free_port()), timeout=60)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "sleeptime init" in done.stderr
    local_app(url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = make_cli(url).run("serve", "--port", str(taken.getsockname()[1]), timeout=60)
    assert done.returncode == 1 and "address already in use" in done.stderr.lower(), done.stderr


def test_up_with_a_damaged_model_stops_with_one_line(make_cli, tiny_model_path, tmp_path):
    damaged = bytearray(tiny_model_path.read_bytes())
    # one bit of a weight: without the digest in the file's metadata the model would load and serve
    damaged[-100] ^= 0x10
    model = tmp_path / "damaged.safetensors"
    model.write_bytes(bytes(damaged))
    cli = make_cli(f"sqlite:///{tmp_path / 'db.sqlite'}", SLEEPTIME_MODEL=str(model), SLEEPTIME_PORT=str(free_port()))
    done = cli.run("up", timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "cannot load model" in lines[0] and "is corrupt" in lines[0]
