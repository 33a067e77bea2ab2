import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from sleeptime import SleeptimeError
from sleeptime.db import Store, current_revision, head_revision, make_engine, require_current, upgrade
from sleeptime.db.models import Base

from .workers import migrate, run_processes


def test_migrated_schema_matches_models(db_url, tmp_path, monkeypatch):
    # from an unrelated directory: the migrations ship in the package, no alembic.ini is looked up
    monkeypatch.chdir(tmp_path)
    upgrade(db_url)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
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
