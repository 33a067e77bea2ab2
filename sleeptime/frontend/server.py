"""Running the front end: `sleeptime serve` (uvicorn alone) and `sleeptime up` (uvicorn and the daemon in one
process, sharing one App: one database engine, one model in memory).

uvicorn runs in a thread, so this module owns the signals (uvicorn re-raises a captured SIGTERM after its own
shutdown, which would end the process by the signal rather than with a status):
  first SIGTERM/SIGINT   /readyz turns 503, the daemon stops claiming jobs and finishes the running one while
                         queries are still answered; then uvicorn finishes its in-flight requests and exits
  second one             the running job is aborted before it publishes (the head is untouched), uvicorn quits
Exit status: 0 after a clean drain, 1 when a job was aborted or a part failed.
"""

import logging
import signal
import threading
from typing import Any

import uvicorn

from sleeptime.app import App
from sleeptime.frontend.app import create_app

log = logging.getLogger(__name__)

# seconds uvicorn waits for in-flight requests once told to exit
GRACEFUL_SECONDS = 30


class _Part(threading.Thread):
    """A thread that keeps its target's exception (or return value) for the main thread to report."""

    def __init__(self, name: str, target: Any):
        super().__init__(name=name, daemon=True)
        self.work, self.result, self.error = target, None, None

    def run(self) -> None:
        try:
            self.result = self.work()
        # SystemExit too: uvicorn exits that way when it cannot bind; the main thread reports it
        except BaseException as exc:  # noqa: BLE001
            self.error = exc


def run(app: App, *, with_daemon: bool, workers: int = 1) -> int:
    """Serve HTTP on settings.host:settings.port (and run the daemon when `with_daemon`) until SIGTERM/SIGINT."""
    from sleeptime.daemon import run_daemon

    settings = app.settings
    api = create_app(settings, app=app)
    frontend = api.state.frontend
    config = uvicorn.Config(
        api,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )
    server = uvicorn.Server(config)
    stop, abort = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if not stop.is_set():
            log.info("draining", extra={"event": "up_draining", "signal": name})
            stop.set()
        else:
            log.warning("aborting", extra={"event": "up_aborting", "signal": name})
            abort.set()
            server.force_exit = True

    if with_daemon:
        # load the model first: a missing or bad model fails the start with one clear error, before anything runs
        log.info("model loaded", extra={"event": "up_model", "model": app.engine.model_id})
    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    parts = [_Part("http", server.run)]
    if with_daemon:
        daemon = _Part(
            "daemon", lambda: run_daemon(app, stop, workers=workers, abort_event=abort, handle_signals=False)
        )
        parts.append(daemon)
    try:
        for part in parts:
            part.start()
        # short waits: the main thread must come back to Python for the signal handlers to run
        while not stop.wait(0.2):
            if any(not part.is_alive() for part in parts):
                break
        frontend.drain()
        stop.set()
        if with_daemon:
            _join(daemon)
        server.should_exit = True
        _join(parts[0])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return _status(parts, server)


def _join(part: _Part) -> None:
    while part.is_alive():
        part.join(0.2)


def _status(parts: list[_Part], server: uvicorn.Server) -> int:
    status = 0
    for part in parts:
        if part.error is not None and not (isinstance(part.error, SystemExit) and part.error.code in (0, None)):
            log.error("%s failed: %s", part.name, part.error, extra={"event": "up_failed", "part": part.name})
            status = 1
        elif isinstance(part.result, int) and part.result != 0:
            status = part.result
    if not server.started and status == 0:
        log.error("the HTTP server did not start", extra={"event": "up_failed", "part": "http"})
        status = 1
    return status
