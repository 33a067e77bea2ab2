"""Answering questions: a precomputed answer for the head when one fits, else online from the cached memory state."""

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from sleeptime.frontend.deps import ApiKeyDep, AppDep, ContextId, MetricsDep
from sleeptime.frontend.schemas import ERROR_RESPONSES, QueryRequest, QueryResponse

router = APIRouter(prefix="/v1/contexts/{context}", tags=["query"], dependencies=[ApiKeyDep], responses=ERROR_RESPONSES)


# a precomputed answer is one indexed read (~0.1 ms): given on the event loop, as the API-key check is, it saves the
# threadpool hop (two thread switches, about as long as the rest of the request on a loaded machine); generation
# (torch) runs in the threadpool, so it never blocks the event loop
@router.post("/query", response_model=QueryResponse, summary="Answer a question from the context's memory")
async def query(context: ContextId, body: QueryRequest, app: AppDep, metrics: MetricsDep):
    lookup = app.queries.lookup(context, body.question)
    result = app.queries.answer_precomputed(lookup)
    if result is None:
        # the online answer starts from the same read: the head it generates from is the one just looked up
        result = await run_in_threadpool(app.queries.answer, lookup)
    metrics.observe_query(result)
    return result
