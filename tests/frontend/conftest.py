"""Fixtures of the HTTP tests: a real uvicorn on a free loopback port, in a thread of the test process, serving
create_app() over an App with the tiny model; tests talk to it with httpx."""

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from sleeptime.frontend.app import create_app


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving `api` on 127.0.0.1 (a socket bound here, so the port cannot be taken in between)."""

    def __init__(self, api):
        self.api = api
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(api, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), 30, "uvicorn to start")
        assert self.server.started, "uvicorn did not start"
        self.client = httpx.Client(base_url=self.url, timeout=120)

    @property
    def frontend(self):
        return self.api.state.frontend

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(lambda: self.client.get("/readyz").status_code == 200, timeout, "/readyz to answer 200")

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def live():
    """live(app, **create_app kwargs): a running server over `app`, ready; stopped after the test."""
    servers = []

    def start(app, **kwargs):
        servers.append(LiveServer(create_app(app.settings, app=app, **kwargs)))
        servers[-1].wait_ready()
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def http(live, app):
    """An httpx client on a live server over the default App."""
    return live(app).client


def assert_error(response: httpx.Response, status: int, kind: str | None = None) -> dict:
    """The response is `status` with the JSON error body {"error": {"type", "message"}}."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert isinstance(error["type"], str) and isinstance(error["message"], str) and error["message"]
    if kind is not None:
        assert error["type"] == kind, error
    return error
