import sqlite3

import pytest

from sleeptime.db import InvalidInput, Store, make_engine
from sleeptime.db.engine import normalize_url, write_engine


def test_sqlite_pragmas_and_parent_directory(tmp_path):
    path = tmp_path / "deep" / "er" / "sleeptime.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in (
            "journal_mode", "busy_timeout", "foreign_keys", "synchronous"
        )}
    engine.dispose()
    assert path.parent.is_dir()
    # synchronous: 1 is NORMAL
    assert pragma == {"journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1, "synchronous": 1}


def test_sqlite_write_transactions_begin_immediate(tmp_path):
    """A write transaction holds the write lock from BEGIN, before its first write; readers still read (WAL)."""
    path = tmp_path / "x.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    with write_engine(engine).begin():
        assert other.execute("SELECT count(*) FROM t").fetchone() == (0,)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    with engine.begin():
        # a read transaction takes no lock
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    other.close()
    engine.dispose()


def test_memory_sqlite_is_shared_across_connections():
    engine = make_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0


def test_urls():
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:////tmp/x.db").drivername == "sqlite"
    with pytest.raises(InvalidInput, match="unsupported database"):
        normalize_url("mysql://u@h/db")
    with pytest.raises(InvalidInput, match="invalid database URL"):
        normalize_url("not a url")


def test_store_on_memory_sqlite():
    """Unit tests elsewhere may build the real Store on an in-memory database."""
    with Store("sqlite://") as store:
        store.migrate()
        assert store.append_messages("a", [("user", "hi", 1)]) == [1]
        assert store.get_context("a").last_seq == 1
