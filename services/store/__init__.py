"""Storage: the SQLAlchemy models, the engine and its sessions, the Alembic migrations, and
the queries of call rows that the webhooks and the call share. Imports nothing of the call."""
