"""Full-text search over messages, for re-reading in the pass; provenance of anticipated questions and answers.

SQLite: `messages_fts`, an FTS5 table with external content (the text lives once, in `messages`), kept in step by
triggers, so an ingest, its rollback and a cascade delete move the index in the same transaction. A delete leaves
the deleted terms inside older index segments until they merge, so deleting a context merges them at once
('optimize'): forgetting leaves no term of the context's text in the index (invariant 8).
PostgreSQL: a generated `tsvector` column with a GIN index: it lives and dies with its row.

Existing messages are indexed on upgrade (FTS5 'rebuild'; PostgreSQL computes the stored column).

Revision ID: 0003_message_search
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_message_search"
down_revision = "0002"
branch_labels = None
depends_on = None

# unicode61 folds case and diacritics; names and codes match as whole tokens
SQLITE_UP = [
    (
        "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='id', "
        "tokenize='unicode61 remove_diacritics 2')"
    ),
    (
        "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
        "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END"
    ),
    (
        "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
        "INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content); END"
    ),
    (
        "CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN "
        "INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content); "
        "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END"
    ),
    # the cascade has deleted the context's messages (and queued their index deletes) when this runs
    (
        "CREATE TRIGGER messages_fts_forget AFTER DELETE ON contexts BEGIN "
        "INSERT INTO messages_fts(messages_fts) VALUES ('optimize'); END"
    ),
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
]
SQLITE_DOWN = [
    "DROP TRIGGER messages_fts_forget",
    "DROP TRIGGER messages_fts_update",
    "DROP TRIGGER messages_fts_delete",
    "DROP TRIGGER messages_fts_insert",
    "DROP TABLE messages_fts",
]
# 'english' drops stop words ("what", "is", "my") that every question and statement share, and stems
POSTGRES_UP = [
    (
        "ALTER TABLE messages ADD COLUMN content_tsv tsvector "
        "GENERATED ALWAYS AS (to_tsvector('english', content)) STORED"
    ),
    "CREATE INDEX ix_messages_content_tsv ON messages USING gin (content_tsv)",
]
POSTGRES_DOWN = ["DROP INDEX ix_messages_content_tsv", "ALTER TABLE messages DROP COLUMN content_tsv"]


def upgrade() -> None:
    with op.batch_alter_table("anticipated_queries") as batch:
        # the message an extracted question was read from; null for registered and logged questions
        batch.add_column(sa.Column("source_seq", sa.Integer, nullable=True))
    with op.batch_alter_table("precomputed_answers") as batch:
        # seqs of the messages the answer read; null for answers written before re-reading
        batch.add_column(sa.Column("sources", sa.JSON, nullable=True))
    statements = SQLITE_UP if op.get_bind().dialect.name == "sqlite" else POSTGRES_UP
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    statements = SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else POSTGRES_DOWN
    for statement in statements:
        op.execute(statement)
    with op.batch_alter_table("precomputed_answers") as batch:
        batch.drop_column("sources")
    with op.batch_alter_table("anticipated_queries") as batch:
        batch.drop_column("source_seq")
