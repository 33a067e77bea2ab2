"""Probes and metrics: open without an API key (an orchestrator and Prometheus call them)."""

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from sleeptime.frontend.deps import FrontendDep, MetricsDep
from sleeptime.frontend.schemas import HealthOut

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="The process is up")
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "warming, draining, or the model did not load"}},
    summary="Ready for traffic: warmed up, database reachable, not draining",
)
async def readyz(frontend: FrontendDep):
    if frontend.phase != "ready" or frontend.app is None:
        status = "error" if frontend.error else frontend.phase
        return JSONResponse(HealthOut(status=status, error=frontend.error).model_dump(), status_code=503)
    try:
        await run_in_threadpool(frontend.app.store.has_api_keys)
    except Exception as exc:
        log.warning("readiness: the database is unreachable", exc_info=True)
        return JSONResponse(HealthOut(status="error", error=f"database: {exc}").model_dump(), status_code=503)
    return HealthOut(status="ready")


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(metrics: MetricsDep) -> Response:
    # the scrape reads the job queue from the database: off the event loop
    body = await run_in_threadpool(generate_latest, metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
