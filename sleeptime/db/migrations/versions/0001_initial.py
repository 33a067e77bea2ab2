"""The initial schema: contexts, messages, checkpoints, runs, anticipation, query log, job queue, API keys.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# frozen copy of models.UTCDateTime's storage type: a migration must not change when the models do
Timestamp = sa.DateTime(timezone=True)


def _context_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["context_id"], ["contexts.id"], name=f"fk_{table}_context_id_contexts", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "contexts",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("last_activity_at", Timestamp, nullable=False),
        sa.Column("head_version", sa.Integer, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_contexts"),
        sa.UniqueConstraint("name", name="uq_contexts_name"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("context_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("n_tokens", sa.Integer, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        _context_fk("messages"),
        sa.UniqueConstraint("context_id", "seq", name="uq_messages_context_id_seq"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("context_id", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("parent_version", sa.Integer, nullable=True),
        sa.Column("cursor_seq", sa.Integer, nullable=False),
        sa.Column("model_id", sa.String(256), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_checkpoints"),
        _context_fk("checkpoints"),
        sa.UniqueConstraint("context_id", "version", name="uq_checkpoints_context_id_version"),
    )
    op.create_table(
        "consolidation_runs",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("context_id", sa.Integer, nullable=False),
        sa.Column("parent_version", sa.Integer, nullable=True),
        sa.Column("from_seq", sa.Integer, nullable=False),
        sa.Column("to_seq", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("published_version", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_consolidation_runs"),
        _context_fk("consolidation_runs"),
    )
    op.create_index("ix_consolidation_runs_context_id", "consolidation_runs", ["context_id"])
    op.create_table(
        "anticipated_queries",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("context_id", sa.Integer, nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("normalized", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_anticipated_queries"),
        _context_fk("anticipated_queries"),
        sa.UniqueConstraint("context_id", "normalized", name="uq_anticipated_queries_context_id_normalized"),
    )
    op.create_table(
        "precomputed_answers",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("context_id", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("normalized_question", sa.Text, nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_precomputed_answers"),
        sa.ForeignKeyConstraint(
            ["context_id", "version"],
            ["checkpoints.context_id", "checkpoints.version"],
            name="fk_precomputed_answers_context_id_version_checkpoints",
        ),
        sa.UniqueConstraint(
            "context_id",
            "version",
            "normalized_question",
            name="uq_precomputed_answers_context_id_version_normalized_question",
        ),
    )
    op.create_table(
        "query_log",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("context_id", sa.Integer, nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_query_log"),
        _context_fk("query_log"),
    )
    op.create_index("ix_query_log_context_id_created_at", "query_log", ["context_id", "created_at"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("context_id", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", Timestamp, nullable=True),
        sa.Column("payload", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        _context_fk("jobs"),
    )
    op.create_index("ix_jobs_status_id", "jobs", ["status", "id"])
    op.create_index(
        "uq_jobs_queued_kind_context",
        "jobs",
        ["kind", "context_id"],
        unique=True,
        sqlite_where=sa.text("status = 'queued'"),
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("revoked_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )


def downgrade() -> None:
    for table in (
        "api_keys",
        "jobs",
        "query_log",
        "precomputed_answers",
        "anticipated_queries",
        "consolidation_runs",
        "checkpoints",
        "messages",
        "contexts",
    ):
        op.drop_table(table)
