"""Engines: SQLite tuned for several processes on one file, PostgreSQL with a pessimistic pool."""

import os
import re
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from sleeptime.db.errors import DatabaseUnavailable, InvalidInput

# a Connection carrying this execution option opens its transaction with BEGIN IMMEDIATE on SQLite
WRITE_OPTION = "sleeptime_write"
SQLITE_BUSY_TIMEOUT_MS = 30_000


# user:password@ in a URL that did not parse: the password part is masked before the URL is shown
_CREDENTIALS = re.compile(r"(://[^:/@]*:|^[^:/@]*:(?!//))[^@]*@")


def masked_url(url: str | URL) -> str:
    """The URL as errors and logs may show it: any password replaced by ***."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return _CREDENTIALS.sub(r"\1***@", url)


def normalize_url(url: str | URL) -> URL:
    """Parse a SQLAlchemy URL; a bare `postgresql://` gets the psycopg 3 driver, the one installed."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 re-raised as InvalidInput
        # not SQLAlchemy's message: it repeats the whole URL, password included
        raise InvalidInput(f"invalid database URL {masked_url(str(url))!r}: expected dialect+driver://...") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise InvalidInput(f"unsupported database {parsed.drivername!r}: use sqlite:/// or postgresql+psycopg://")
    return parsed


def process_label(prefix: str) -> str:
    """`prefix:host:pid`, cut to PostgreSQL's 63-byte application_name."""
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}"[:63]


def is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine for `url`; extra keyword arguments go to `create_engine`."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "postgresql":
        if "application_name" not in parsed.query:
            # pg_stat_activity then names the process behind each connection (host:pid)
            connect_args = {"application_name": process_label("sleeptime"), **kwargs.pop("connect_args", {})}
            kwargs["connect_args"] = connect_args
        engine = create_engine(parsed, pool_pre_ping=True, **kwargs)
        _report_unusable(engine)
        return engine

    if is_memory_sqlite(parsed):
        # one shared connection, or every checkout would see a different empty database
        kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    elif parsed.query.get("uri") != "true":
        # a `file:` URI names an existing file (and SQLite options): nothing to create
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, **kwargs)
    _configure_sqlite(engine)
    _report_unusable(engine)
    return engine


# SQLite's words for a file that cannot serve at all: no query on it can succeed, whatever the code does
_SQLITE_UNUSABLE = (
    "file is not a database",
    "attempt to write a readonly database",
    "unable to open database file",
    "disk i/o error",
    "database or disk is full",
    "database disk image is malformed",
)


def _report_unusable(engine: Engine) -> None:
    """Turn "this database cannot be used" (unreachable server, missing database, read-only or foreign file) into
    DatabaseUnavailable, a one-line user error; any other database error stays as it is (a bug keeps its trace)."""

    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> Exception | None:
        if context.is_pre_ping:
            # the pool replaces a dead connection on its own
            return None
        original = context.original_exception
        first_line = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
        if engine.dialect.name == "sqlite":
            unusable = first_line.lower().startswith(_SQLITE_UNUSABLE)
        else:
            # psycopg's OperationalError: the connection failed or broke (a failing statement raises other classes)
            unusable = context.is_disconnect or type(original).__name__ == "OperationalError"
        if not unusable:
            return None
        return DatabaseUnavailable(f"database {masked_url(engine.url)}: {first_line}")


def _set_wal(cursor: Any) -> None:
    # switching a new file to WAL takes an exclusive lock, and SQLite answers "database is locked" at once, without
    # the busy handler, while another process opens the file too (two starting at once): retry for a while
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # take transaction control away from sqlite3, so that the "begin" hook below decides how to BEGIN
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _set_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        # deleted rows are overwritten with zeros, not only unlinked: forgetting a context leaves none of its text in
        # the file's free space (invariant 8)
        cursor.execute("PRAGMA secure_delete = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # a writer takes the write lock up front: a deferred read-then-write upgrade can fail with SQLITE_BUSY
        # at once, whatever busy_timeout says, while BEGIN IMMEDIATE waits its turn
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def write_engine(engine: Engine) -> Engine:
    """The same pool, with transactions that take the SQLite write lock at BEGIN (a no-op on PostgreSQL)."""
    return engine.execution_options(**{WRITE_OPTION: True})
