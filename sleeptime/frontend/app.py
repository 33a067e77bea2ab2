"""The HTTP front end: `create_app(settings)` assembles a FastAPI app (no module-level app, engine or database).

The lifespan opens the App (database; the model loads on first use) and warms up in a background thread: it loads
the model and the head states of the most recently active contexts into the query engine's cache, while /healthz
already answers and /readyz says 503 "warming". While it serves, the query log is written by a background thread
in batches (frontend/query.py QueryLogWriter), flushed when the lifespan ends. Routes are plain functions, so FastAPI
runs them (database and torch work) in its threadpool, never on the event loop; the exceptions are one-read lookups
on every request's path (the API-key check, a precomputed answer), for which the thread hop would cost more.

Every error is JSON, `{"error": {"type", "message"}}`: invalid input 422 (nothing is changed), a body that is not
JSON or not UTF-8 400, a body sent as another media type 415, unknown context or checkpoint 404, a conflict with the
stored state 409, a missing or wrong API key 401, an oversized body 413, another SleeptimeError subclass 400, and the
plain SleeptimeError, which the App raises for server-side conditions (the model did not load, an unreadable
checkpoint), 503.
"""

import logging
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sleeptime import SleeptimeError, __version__
from sleeptime.app import App
from sleeptime.db import (
    CorruptCheckpoint,
    DatabaseUnavailable,
    HeadConflict,
    InvalidInput,
    UnknownContext,
    UnknownVersion,
)
from sleeptime.frontend.deps import Frontend
from sleeptime.frontend.generators import GeneratorConfig, GeneratorLost, GeneratorPool
from sleeptime.frontend.metrics import Metrics
from sleeptime.frontend.query import Overloaded, QueryLogWriter
from sleeptime.frontend.routes import checkpoints, contexts, health, query
from sleeptime.jobs.consolidate import ModelMismatch
from sleeptime.settings import Settings, load_settings

log = logging.getLogger(__name__)

# warm this many of the most recently active contexts: enough for a restart to serve its regulars at once
WARM_CONTEXTS = 16
ERROR_STATUS: dict[type[Exception], int] = {
    InvalidInput: 422,
    UnknownContext: 404,
    UnknownVersion: 404,
    HeadConflict: 409,
    CorruptCheckpoint: 409,
    ModelMismatch: 409,
    # the service cannot reach its database: not the client's fault
    DatabaseUnavailable: 503,
    # too many online answers wait, or the generator of this one stopped: try again (Retry-After says when)
    Overloaded: 503,
    GeneratorLost: 503,
}
# another subclass is a refused request; the plain SleeptimeError is what the App raises for server-side conditions
# (the model does not load, a stored checkpoint is unreadable): the service cannot answer, the client did no wrong
OTHER_SUBCLASS_STATUS = 400
PLAIN_ERROR_STATUS = 503
FASTAPI_BODY_ERROR = "There was an error parsing the body"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


def _status_of(exc: SleeptimeError) -> int:
    if type(exc) is SleeptimeError:
        return PLAIN_ERROR_STATUS
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return OTHER_SUBCLASS_STATUS


async def _sleeptime_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SleeptimeError)
    retry = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return error_response(_status_of(exc), _snake(type(exc).__name__), " ".join(str(exc).splitlines()), headers)


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return error_response(400, "malformed_json", "the request body is not valid JSON")
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and content_type and "json" not in content_type:
        # FastAPI reads only JSON bodies: say so rather than report every field as missing
        message = f"the body must be JSON sent with Content-Type: application/json, not {content_type!r}"
        return error_response(415, "unsupported_media_type", message)
    problems = "; ".join(f"{_where(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return error_response(422, "validation_error", problems + more)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == FASTAPI_BODY_ERROR:
        # FastAPI's words for a body json.loads refused other than by JSON syntax: bytes that are not UTF-8
        return error_response(400, "malformed_json", "the request body is not valid UTF-8 JSON")
    try:
        kind = re.sub(r"[^a-z]+", "_", HTTPStatus(exc.status_code).phrase.lower())
    except ValueError:
        kind = "http_error"
    return error_response(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # ServerErrorMiddleware sends this and re-raises, so uvicorn logs the traceback
    return error_response(500, "internal_error", "internal server error")


# the most of a refused body read and dropped before the connection closes
DRAIN_LIMIT = 64 * 1024 * 1024


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413 before FastAPI reads them into memory."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(scope, receive, send)
        if length is not None:
            return await self.app(scope, receive, send)
        # no length (chunked): read it all, up to the limit, then replay it
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(scope, receive, send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # read (and drop) what the client is still sending, up to a bound, before answering: a server that answers
        # and closes on unread bytes makes the kernel reset the connection, and the client loses the 413
        drained = 0
        while drained <= DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                break
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        message = f"request body over the limit of {self.limit} bytes"
        await error_response(413, "payload_too_large", message, {"Connection": "close"})(scope, receive, send)


def body_limit(settings: Settings) -> int:
    # a batch of messages, JSON-escaped (\uXXXX can take 6 bytes per 2-3 UTF-8 bytes), has room for a few large ones
    return max(16 * 1024 * 1024, 4 * settings.max_message_bytes)


def warm(frontend: Frontend, limit: int = WARM_CONTEXTS) -> None:
    """Load the model and the head states of the `limit` most recently active contexts, then report ready.

    A model that does not load leaves /readyz at 503 with the reason; precomputed answers still work.
    """
    app = frontend.app
    assert app is not None
    try:
        # the model first: without it no online answer can be given, and /readyz must say so
        log.info("model %s loaded", app.engine.model_id, extra={"event": "frontend_model"})
        recent = sorted(
            (c for c in app.store.list_contexts() if c.head_version is not None),
            key=lambda c: c.last_activity_at,
            reverse=True,
        )[:limit]
        loads = app.queries.cache.loads
        for ctx in recent:
            if frontend.phase != "warming":
                return
            try:
                app.queries.warm(ctx.name)
            except SleeptimeError as exc:
                log.warning("cannot warm context %r: %s", ctx.name, exc)
        frontend.metrics.warm_loads += app.queries.cache.loads - loads
        log.info("warmed %d context(s)", len(recent), extra={"event": "frontend_warmed", "contexts": len(recent)})
    except Exception as exc:
        frontend.error = str(exc) or type(exc).__name__
        # a SleeptimeError says it all (the model file is missing); anything else is a bug: keep the trace
        trace = not isinstance(exc, SleeptimeError)
        log.error("warm-up failed: %s", frontend.error, exc_info=trace, extra={"event": "frontend_warm_failed"})
    finally:
        if frontend.phase == "warming" and frontend.error is None:
            frontend.phase = "ready"


def start_generators(settings: Settings, max_new_tokens: int) -> GeneratorPool:
    """The pool of generator processes the online answers go to (SLEEPTIME_GENERATORS): one torch thread each unless
    SLEEPTIME_THREADS says otherwise; the state cache's budget is shared among them (each holds its own contexts)."""
    config = GeneratorConfig(
        settings.db, settings.model, settings.device, settings.threads or 1, settings.cache_bytes // settings.generators,
        settings.generator_batch, max_new_tokens,
    )
    return GeneratorPool(config, settings.generators)


def _open(settings: Settings) -> App:
    app = App(settings)
    try:
        app.require_schema()
    except BaseException:
        app.close()
        raise
    return app


def create_app(
    settings: Settings | None = None, *, app: App | None = None, warm_contexts: int = WARM_CONTEXTS
) -> FastAPI:
    """The HTTP app over `settings`' database and model. Pass `app` to serve an App built elsewhere (`sleeptime up`
    shares one with the daemon; tests pass one with a tiny model): the caller then owns and closes it."""
    settings = settings or (app.settings if app is not None else load_settings())
    frontend = Frontend(Metrics())

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        instance = app if app is not None else await run_in_threadpool(_open, settings)
        frontend.app = instance
        frontend.metrics.attach(instance)
        frontend.phase = "warming"
        # a daemon thread: shutdown need not wait for a model that is still loading
        threading.Thread(target=warm, args=(frontend, warm_contexts), name="frontend-warm", daemon=True).start()
        # the query log is written behind the answers, in batches; closing it below writes what is left
        instance.queries.log_writer = QueryLogWriter(instance.store)
        pool = None
        if settings.generators:
            pool = await run_in_threadpool(start_generators, settings, instance.queries.max_new_tokens)
            instance.queries.pool = pool
        try:
            yield
        finally:
            frontend.drain()
            if pool is not None:
                instance.queries.pool = None
                await run_in_threadpool(pool.close)
            writer, instance.queries.log_writer = instance.queries.log_writer, None
            writer.close()
            frontend.metrics.detach()
            frontend.phase = "stopped"
            if app is None:
                instance.close()

    api = FastAPI(
        title="sleeptime",
        version=__version__,
        summary="Sleep-time memory consolidation: answers from a Titans neural long-term memory per context.",
        lifespan=lifespan,
    )
    api.state.frontend = frontend
    api.add_exception_handler(SleeptimeError, _sleeptime_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(Exception, _unexpected)
    api.add_middleware(BodyLimit, limit=body_limit(settings))
    for router in (contexts.router, query.router, checkpoints.router, health.router):
        api.include_router(router)
    return api
