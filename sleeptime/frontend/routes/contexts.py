"""A context: its status, appending messages, registering anticipated questions, forgetting it."""

from fastapi import APIRouter

from sleeptime.frontend.deps import ApiKeyDep, AppDep, ContextId
from sleeptime.frontend.schemas import (
    ERROR_RESPONSES,
    AnticipateRequest,
    AnticipateResponse,
    ContextOut,
    ForgetResponse,
    IngestRequest,
    IngestResponse,
)

router = APIRouter(
    prefix="/v1/contexts/{context}", tags=["contexts"], dependencies=[ApiKeyDep], responses=ERROR_RESPONSES
)


@router.get("", response_model=ContextOut, summary="Head version, cursor, pending messages and tokens, last run")
def get_context(context: ContextId, app: AppDep):
    [status] = app.status(context)
    return status


@router.post("/messages", status_code=201, response_model=IngestResponse, summary="Append messages")
def append_messages(context: ContextId, body: IngestRequest, app: AppDep) -> IngestResponse:
    """Append messages (the context is created on first use): all of them, or none when one is bad."""
    seqs = app.ingest(context, [message.model_dump() for message in body.messages])
    return IngestResponse(context=context, messages=len(seqs), first_seq=seqs[0], last_seq=seqs[-1])


@router.post("/anticipated", response_model=AnticipateResponse, summary="Register anticipated questions")
def register_anticipated(context: ContextId, body: AnticipateRequest, app: AppDep) -> AnticipateResponse:
    """Standing questions: every consolidation precomputes their answers, so asking them later is a lookup."""
    return AnticipateResponse(context=context, added=app.anticipate(context, body.questions))


@router.delete("", response_model=ForgetResponse, summary="Forget the context: delete everything held about it")
def forget_context(context: ContextId, app: AppDep) -> ForgetResponse:
    """Messages, checkpoints, precomputed answers, anticipated questions, query log, runs and jobs are deleted (on
    SQLite no byte of them stays in the database files); a pass running on the context cannot publish. The name can
    then be used again, for a new, empty context."""
    return ForgetResponse(context=context, deleted=app.forget(context))
