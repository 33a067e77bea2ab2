"""The model's own probability of each precomputed answer, so the front end can abstain where it is unsure.

Answers written before this revision keep a null confidence: the model that wrote them never said, and the front
end never abstains on them.

Revision ID: 0004_answer_confidence
Revises: 0003_message_search
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_answer_confidence"
down_revision = "0003_message_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("precomputed_answers") as batch:
        batch.add_column(sa.Column("confidence", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("precomputed_answers") as batch:
        batch.drop_column("confidence")
