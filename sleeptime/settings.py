"""Runtime settings: one pydantic-settings class. Precedence: explicit arguments (CLI flags), then SLEEPTIME_*
environment variables, then the defaults below."""

import re
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_data_dir
from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sleeptime import SleeptimeError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# answers the model gives a lower confidence than this are withheld ("I don't know that yet."); 0.0 never withholds
# one. Chosen by measurement (benchmarks/calibration.py on benchmarks/reread.py's held-out rows), and tested on a
# later run: docs/confidence.md.
DEFAULT_MIN_CONFIDENCE = 0.9
# the backends the schema and its tests cover; the URL is parsed for real by sleeptime.db
DB_URL = re.compile(r"(sqlite|postgres|postgresql)(\+\w+)?://.*", re.DOTALL)


def default_db_url() -> str:
    """SQLite under the user data dir; sleeptime.db creates the directory when it first connects."""
    return f"sqlite:///{Path(user_data_dir('sleeptime')) / 'sleeptime.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLEEPTIME_", extra="ignore", validate_default=True)

    db: str = Field(default_factory=default_db_url, description="SQLAlchemy URL of the database")
    model: str = Field("demo", min_length=1, description="model name or checkpoint path")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    idle_after: float = Field(60.0, gt=0, description="seconds without messages or queries before a context sleeps")
    sweep_interval: float = Field(30.0, gt=0, description="seconds between idle sweeps")
    # a context queried without pause is never idle: its messages are consolidated anyway once one waited this long
    max_wait: float = Field(600.0, gt=0, description="seconds a message waits at most for a busy context to sleep")
    max_message_bytes: int = Field(65536, ge=1, le=16 * 1024 * 1024, description="largest message accepted")
    # sleep replay: re-feed this many most surprising 256-token spans of each pass (0: off; see docs/research/experiments.md)
    replay_spans: int = Field(0, ge=0, le=64, description="surprising spans fed again at the end of a pass")
    # rehearsal: write each precomputed answer back into the memory as a Q/A exchange (off: it helped an earlier
    # model, not the shipped one, whose write floor already keeps a fact through later conversation; docs/research/experiments.md)
    rehearse: bool = Field(False, description="feed the pass's precomputed answers into the memory")
    # re-reading: each anticipated question is answered after the messages that hold its answer, read from the new
    # state (as the issue asks; "fresh": from an empty memory, which the demo model reads better, docs/reread.md;
    # "off": from the memory alone)
    reread: Literal["state", "fresh", "off"] = Field("state", description="where a pass's re-reading starts from")
    keep_checkpoints: int = Field(10, ge=1, description="checkpoint versions kept per context, plus the head")
    # finished jobs, consolidation runs and the query log only grow; the GC deletes what is older (messages and
    # checkpoints are not touched)
    keep_history_days: float = Field(30.0, ge=0, description="days of job, run and query history kept (0: all)")
    lease_seconds: float = Field(300.0, ge=1, description="job lease; a worker heartbeats well within it")
    # the job queue: "embedded" (a table in the database, worker threads in the daemon: one machine) or
    # "procrastinate" (PostgreSQL only: `sleeptime worker` processes on any number of machines)
    queue: Literal["embedded", "procrastinate"] = "embedded"
    heartbeat_seconds: float = Field(10.0, gt=0, description="procrastinate worker heartbeat")
    stalled_after: float = Field(30.0, gt=0, description="seconds without heartbeat before a worker's jobs retry")
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8765, ge=1, le=65535)
    # due contexts a worker consolidates together, as one batch through the model (1.39-1.44 times the contexts/s of
    # one at a time at 8, 1.56-1.80 at 64, on a 2-core CPU: docs/benchmarks.md §7); the embedded queue's workers only
    batch_contexts: int = Field(8, ge=1, le=64, description="due contexts consolidated together in one batch")
    # online answers generated at once by one front-end process; more queue (generation is Python-bound)
    generations: int = Field(1, ge=1, le=64, description="online answers generated at once per process")
    # online answers generated in this many processes of their own (frontend/generators.py), so that generation
    # never holds the front end's GIL; 0: in the front end's process, `generations` at a time
    generators: int = Field(0, ge=0, le=64, description="generator processes of the HTTP front end")
    generator_batch: int = Field(8, ge=1, le=256, description="questions a generator answers together at most")
    # online answers waiting or running at once; one more is refused with 503 and Retry-After
    max_online: int = Field(64, ge=1, description="online answers in flight per front end before 503")
    cache_bytes: int = Field(512 * 1024 * 1024, ge=0, description="byte budget of the loaded-state cache")
    min_confidence: float = Field(
        DEFAULT_MIN_CONFIDENCE, ge=0, le=1, description="answers less probable than this are withheld as a guess"
    )
    # torch intra-op threads; None keeps torch's default (one per core). On a machine shared with other busy
    # processes, 1 avoids threads stalling each other.
    threads: int | None = Field(None, ge=1, description="torch threads for model work")
    log_level: str = "INFO"

    @field_validator("db")
    @classmethod
    def _check_db(cls, value: str) -> str:
        value = value.strip()
        if not DB_URL.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a supported database URL: use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
            )
        return value

    @field_validator("device", "queue", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("queue")
    @classmethod
    def _check_queue(cls, value: str, info: ValidationInfo) -> str:
        # db is declared first, so it is checked (and in info.data) by now
        if value == "procrastinate" and not str(info.data.get("db", "")).startswith("postgres"):
            raise ValueError("the procrastinate queue needs PostgreSQL (SLEEPTIME_DB=postgresql+psycopg://...)")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"log level {value!r} is not one of {', '.join(LOG_LEVELS)}")
        return level


class SettingsError(SleeptimeError):
    """A setting failed validation."""


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit values (CLI flags; None means "not given") on top.

    Raises SettingsError, one line naming each bad setting by its environment variable.
    """
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"SLEEPTIME_{field.upper()}: {message}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
