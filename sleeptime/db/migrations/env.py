"""Alembic environment: runs on the connection that sleeptime.db.migrate hands over, or on sqlalchemy.url."""

from alembic import context

from sleeptime.db.engine import make_engine, write_engine
from sleeptime.db.models import Base, include_object


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite alters tables by copy-and-move; a no-op elsewhere
        render_as_batch=True,
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("sleeptime migrations run online only: `sleeptime init`")

connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = make_engine(context.config.get_main_option("sqlalchemy.url"))
    with write_engine(engine).begin() as conn:
        run_migrations(conn)
    engine.dispose()
