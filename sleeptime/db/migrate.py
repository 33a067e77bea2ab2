"""Alembic, driven from code: the migrations ship inside the package, no alembic.ini needed."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from sleeptime import SleeptimeError
from sleeptime.db.engine import make_engine, write_engine

MIGRATIONS = Path(__file__).parent / "migrations"
# an arbitrary constant: the advisory lock key that serialises concurrent upgrades on PostgreSQL
MIGRATION_LOCK = 0x5EE97113


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the package ships no migrations"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(target: str | URL | Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to `revision`, the newest by default (idempotent)."""
    engine = target if isinstance(target, Engine) else make_engine(target)
    config = _config()
    # DDL is a write: on SQLite it must hold the write lock for the whole migration
    with write_engine(engine).begin() as conn:
        if conn.dialect.name == "postgresql":
            # two processes starting at once: the second waits here, then finds the schema at head
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    if not isinstance(target, Engine):
        engine.dispose()


def require_current(engine: Engine) -> None:
    """Refuse to run on a database that is missing or older than this code."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        found = current or "no schema"
        raise SleeptimeError(f"database schema is at {found}, this version needs {head}: run `sleeptime init`")
