"""Request and response bodies of the HTTP API (pydantic). They check structure only: the App checks meaning
(empty or oversized messages, bad UTF-8, context names), so the CLI and HTTP refuse the same input the same way."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# one ingest call is one transaction; bigger transcripts are sent in several calls
MAX_BATCH_MESSAGES = 1000
MAX_QUESTIONS = 256

Role = Literal["user", "assistant", "system", "tool"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str = Field(description="UTF-8 text, non-empty, at most SLEEPTIME_MAX_MESSAGE_BYTES bytes")


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1, max_length=MAX_BATCH_MESSAGES)


class IngestResponse(BaseModel):
    context: str
    messages: int
    first_seq: int
    last_seq: int


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(examples=["What is my name?"])


class QueryResponse(BaseModel):
    answer: str
    source: Literal["precomputed", "online"]
    checkpoint: int | None = Field(description="the checkpoint version the answer came from; null: none yet")
    latency_ms: float
    sources: list[int] = Field(
        default=[], description="seqs of the messages a precomputed answer read; empty for an answer from memory"
    )
    confidence: float | None = Field(
        ge=0, le=1,
        description="the model's own probability of its answer; null for a precomputed answer written before it was kept",
    )
    abstained: bool = Field(
        description="the answer was less probable than SLEEPTIME_MIN_CONFIDENCE: `answer` says it is not known yet"
    )
    guess: str | None = Field(description="the model's answer when it abstained; null otherwise")


class AnticipateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: list[str] = Field(min_length=1, max_length=MAX_QUESTIONS)


class AnticipateResponse(BaseModel):
    context: str
    added: int = Field(description="questions that were not registered before")


class ForgetResponse(BaseModel):
    context: str
    deleted: dict[str, int] = Field(description="rows deleted per table")


class RunOut(BaseModel):
    id: int
    parent_version: int | None
    from_seq: int
    to_seq: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    published_version: int | None
    error: str | None


class ContextOut(BaseModel):
    name: str
    head_version: int | None
    cursor_seq: int
    last_seq: int
    pending_messages: int
    pending_tokens: int
    last_activity_at: datetime
    last_run: RunOut | None


class CheckpointOut(BaseModel):
    version: int
    parent_version: int | None
    cursor_seq: int
    model_id: str
    sha256: str
    size_bytes: int
    meta: dict[str, Any]
    created_at: datetime
    head: bool


class JobOut(BaseModel):
    id: int
    kind: str
    context: str
    status: str


class ConsolidationOut(BaseModel):
    published: bool
    checkpoint: CheckpointOut | None = Field(description="the new head when published, else the unchanged head")
    answered: int = Field(default=0, description="answers added to the unchanged head for new questions alone")
    tokens: int = Field(description="model tokens consumed (role markers included)")
    bytes: int = Field(description="UTF-8 bytes of the messages' text")
    messages: int


class HealthOut(BaseModel):
    status: str
    error: str | None = None


class ErrorDetail(BaseModel):
    type: str = Field(examples=["unknown_context"])
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


# documented on every /v1 route, so the OpenAPI page (and schemathesis) knows the error shape
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Malformed body (bad JSON or UTF-8)"},
    401: {"model": ErrorOut, "description": "Missing or wrong X-API-Key (only when keys exist)"},
    404: {"model": ErrorOut, "description": "Unknown context or checkpoint version"},
    409: {"model": ErrorOut, "description": "Conflict with the stored state (head moved, corrupt checkpoint)"},
    413: {"model": ErrorOut, "description": "Request body too large"},
    415: {"model": ErrorOut, "description": "Body not sent as application/json"},
    422: {"model": ErrorOut, "description": "Invalid input: nothing was changed"},
    503: {"model": ErrorOut, "description": "The model did not load, or a stored checkpoint is unreadable"},
}
