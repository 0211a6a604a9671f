"""Alembic environment: runs online against the engine `appliance.db` hands over (WAL pragmas included)."""

from alembic import context

from appliance.db import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
