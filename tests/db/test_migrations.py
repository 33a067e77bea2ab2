import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from sleeptime import SleeptimeError
from sleeptime.db import Store, current_revision, head_revision, make_engine, require_current, upgrade
from sleeptime.db.models import Base, include_object

from .workers import migrate, run_processes


def test_migrated_schema_matches_models(db_url, tmp_path, monkeypatch):
    # from an unrelated directory: the migrations ship in the package, no alembic.ini is looked up
    monkeypatch.chdir(tmp_path)
    upgrade(db_url)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True, "include_object": include_object}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent_and_tracked(db_url):
    engine = make_engine(db_url)
    assert current_revision(engine) is None
    with pytest.raises(SleeptimeError, match="sleeptime init"):
        require_current(engine)
    upgrade(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    require_current(engine)
    engine.dispose()


def test_store_migrate_then_require(db_url):
    with Store(db_url) as store:
        with pytest.raises(SleeptimeError):
            store.require_schema()
        store.migrate()
        store.require_schema()



def test_concurrent_upgrades_serialise(db_url):
    """`sleeptime up` and a worker starting together: one migrates, the other finds the schema at head."""
    assert run_processes(migrate, db_url, 1, 2) == ["migrated", "migrated"]
    engine = make_engine(db_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_upgrading_a_0001_database_keeps_its_data(db_url):
    upgrade(db_url, "0001")
    with Store(db_url) as store:
        store.ensure_context("alice")
        store.append_messages("alice", [("user", "my locker code is 4821", 22)])
        store.log_query("alice", "what is my locker code?", "live", 12.5, None)
        store.migrate()
        store.require_schema()
        assert [m.content for m in store.messages_after("alice", 0)] == ["my locker code is 4821"]
        assert store.recent_questions("alice") == ["what is my locker code?"]


def test_trimming_history_reads_the_age_indexes(tmp_path):
    """On a large query log a full scan per trim would grow with every answer ever given: the plan must use an index."""
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    upgrade(url)
    engine = make_engine(url)
    plans = {
        "query_log": "DELETE FROM query_log WHERE created_at < '2026-01-01'",
        "jobs": "DELETE FROM jobs WHERE status IN ('done', 'failed') AND updated_at < '2026-01-01'",
        "consolidation_runs": "DELETE FROM consolidation_runs WHERE status != 'running' AND finished_at < '2026-01-01'",
    }
    with engine.connect() as conn:
        for table, statement in plans.items():
            plan = " ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}"))
            assert f"SEARCH {table} USING" in plan and "INDEX" in plan, (table, plan)
    engine.dispose()
