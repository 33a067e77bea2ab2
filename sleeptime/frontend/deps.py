"""What routes depend on, as Annotated aliases: a route states its needs through its parameter types."""

from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.security import APIKeyHeader

from sleeptime.app import App
from sleeptime.db import Store
from sleeptime.db.store import CONTEXT_NAME
from sleeptime.frontend.metrics import Metrics

Phase = Literal["starting", "warming", "ready", "draining", "stopped"]


class Frontend:
    """The state one HTTP app shares with its routes: the App (opened by the lifespan), the metrics, and the
    readiness phase (starting -> warming -> ready -> draining -> stopped)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.app: App | None = None
        self.phase: Phase = "starting"
        # why warming failed (the model did not load): /readyz reports it
        self.error: str | None = None

    def drain(self) -> None:
        """Report not-ready from now on (a load balancer stops sending), while in-flight requests finish."""
        self.phase = "draining"


# the trivial dependencies are async so they run on the event loop: FastAPI sends each sync one to the threadpool
async def get_frontend(request: Request) -> Frontend:
    return request.app.state.frontend


async def get_app(request: Request) -> App:
    app = request.app.state.frontend.app
    if app is None:
        # only reachable between startup and the lifespan's open, or after shutdown
        raise HTTPException(503, "the service is starting or stopping")
    return app


async def get_store(app: Annotated[App, Depends(get_app)]) -> Store:
    return app.store


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.frontend.metrics


FrontendDep = Annotated[Frontend, Depends(get_frontend)]
AppDep = Annotated[App, Depends(get_app)]
StoreDep = Annotated[Store, Depends(get_store)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

ContextId = Annotated[
    str,
    Path(
        description="context name: 1-128 characters from A-Z a-z 0-9 _ . : @ -",
        pattern=f"^{CONTEXT_NAME.pattern}$",
        examples=["alice"],
    ),
]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="needed once any API key exists")


async def require_api_key(app: AppDep, key: Annotated[str | None, Security(_api_key_header)]) -> str | None:
    """The name of the caller's key, or None while no key exists (the API is open until one is created)."""
    # on the event loop, on purpose: one indexed read (~0.2 ms) costs less than a threadpool hop, whose two thread
    # switches took ~1 ms per request on a loaded 2-core machine (benchmarks/query_latency.py)
    # one read per call: a valid key answers at once; only a missing or wrong one asks whether keys exist
    if key and (name := app.store.verify_api_key(key)) is not None:
        return name
    if not app.store.has_api_keys():
        return None
    message = "missing X-API-Key header" if not key else "invalid or revoked API key"
    raise HTTPException(401, message, headers={"WWW-Authenticate": "X-API-Key"})


ApiKeyDep = Depends(require_api_key)
