"""Checkpoint versions of a context, and consolidation (which publishes the next one)."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from sleeptime.db import CheckpointInfo, UnknownVersion
from sleeptime.frontend.deps import ApiKeyDep, AppDep, ContextId, MetricsDep
from sleeptime.frontend.schemas import ERROR_RESPONSES, CheckpointOut, ConsolidationOut, JobOut
from sleeptime.jobs.worker import CONSOLIDATE

router = APIRouter(
    prefix="/v1/contexts/{context}", tags=["checkpoints"], dependencies=[ApiKeyDep], responses=ERROR_RESPONSES
)


def _out(info: CheckpointInfo | None, head: int | None) -> CheckpointOut | None:
    if info is None:
        return None
    return CheckpointOut(
        version=info.version,
        parent_version=info.parent_version,
        cursor_seq=info.cursor_seq,
        model_id=info.model_id,
        sha256=info.sha256,
        size_bytes=info.size_bytes,
        meta=info.meta,
        created_at=info.created_at,
        head=info.version == head,
    )


@router.get("/checkpoints", response_model=list[CheckpointOut], summary="Checkpoint versions, newest first")
def list_checkpoints(context: ContextId, app: AppDep) -> list[CheckpointOut]:
    versions = app.checkpoints(context)
    head = app.store.get_context(context).head_version
    return [_out(info, head) for info in versions]


@router.get("/checkpoints/{version}", response_model=CheckpointOut, summary="One checkpoint version")
def get_checkpoint(context: ContextId, version: Annotated[int, Path(ge=1)], app: AppDep) -> CheckpointOut:
    head = app.store.get_context(context).head_version
    for info in app.checkpoints(context):
        if info.version == version:
            return _out(info, head)
    raise UnknownVersion(f"context {context!r} has no checkpoint version {version}")


@router.post(
    "/consolidate",
    status_code=202,
    response_model=JobOut | ConsolidationOut,
    responses={202: {"model": JobOut}, 200: {"model": ConsolidationOut}},
    summary="Queue a consolidation, or run it now with ?wait=true",
)
def consolidate(
    context: ContextId,
    app: AppDep,
    metrics: MetricsDep,
    response: Response,
    wait: Annotated[bool, Query(description="run the pass now and return the new checkpoint")] = False,
):
    """Without `wait`: queue a job (202) for a daemon's worker (`sleeptime up` or `sleeptime daemon`); a job already
    queued for the context is returned instead of a new one. With `wait=true`: run the pass in this request (200), after
    any pass already running on the context (one pass per context at a time; the later one then finds nothing to do)."""
    if not wait:
        job_id = app.enqueue(CONSOLIDATE, context, {"reason": "http"})
        return JobOut(id=job_id, kind=CONSOLIDATE, context=context, status="queued")
    try:
        result = app.consolidate(context)
    except Exception:
        metrics.consolidations.labels(trigger="http", outcome="failed").inc()
        raise
    metrics.consolidations.labels(trigger="http", outcome="published" if result.published else "nothing").inc()
    response.status_code = 200
    head = result.checkpoint.version if result.checkpoint else None
    return ConsolidationOut(
        published=result.published,
        checkpoint=_out(result.checkpoint, head),
        answered=result.answered,
        tokens=result.tokens,
        bytes=result.bytes,
        messages=result.messages,
    )
