"""Answering questions: a precomputed answer for the head when one fits, else online from the cached memory state."""

from fastapi import APIRouter

from sleeptime.frontend.deps import ApiKeyDep, AppDep, ContextId, MetricsDep
from sleeptime.frontend.schemas import ERROR_RESPONSES, QueryRequest, QueryResponse

router = APIRouter(prefix="/v1/contexts/{context}", tags=["query"], dependencies=[ApiKeyDep], responses=ERROR_RESPONSES)


# a plain `def`: FastAPI runs it in the threadpool, so generation (torch) never blocks the event loop
@router.post("/query", response_model=QueryResponse, summary="Answer a question from the context's memory")
def query(context: ContextId, body: QueryRequest, app: AppDep, metrics: MetricsDep):
    result = app.query(context, body.question)
    metrics.observe_query(result)
    return result
