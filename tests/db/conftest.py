import pytest
from sqlalchemy import text

from sleeptime.db import make_engine


@pytest.fixture
def sql(store):
    """Raw SQL on the store's database, for what the Store must never allow: corrupting or inspecting rows."""
    engine = make_engine(store.url)

    def run(statement: str, **params):
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.fetchall() if result.returns_rows else result.rowcount

    yield run
    engine.dispose()
