"""Indexes for trimming history: `trim_history` deletes finished jobs, query-log rows and finished runs by age, and
without these it scans each whole table (the query log grows by one row per answer).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_status_updated_at", "jobs", ["status", "updated_at"])
    op.create_index("ix_query_log_created_at", "query_log", ["created_at"])
    op.create_index("ix_consolidation_runs_finished_at", "consolidation_runs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_consolidation_runs_finished_at", table_name="consolidation_runs")
    op.drop_index("ix_query_log_created_at", table_name="query_log")
    op.drop_index("ix_jobs_status_updated_at", table_name="jobs")
