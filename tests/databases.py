"""The database each test runs on: SQLite in the test's folder, or, when TEST_DATABASE_URL names a
PostgreSQL server, a fresh schema of its own there (dropped when the session ends)."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url

from services.store.db import normalize_url

ENV = "TEST_DATABASE_URL"


def server_url() -> str | None:
    url = os.environ.get(ENV, "").strip()
    return normalize_url(url) if url.startswith(("postgres", "postgresql")) else None


def is_postgres() -> bool:
    return server_url() is not None


class Schemas:
    """Schemas made on the PostgreSQL server during the session."""

    def __init__(self, url: str):
        self._engine = create_engine(url, poolclass=pool.NullPool)
        self.made: list[str] = []
        # Every connection of this session (the tests' and the servers' they start) names itself,
        # so that the clean-up ends only its own: another session may share the server.
        self.application_name = f"tests-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def new_url(self) -> str:
        name = "t_" + uuid.uuid4().hex[:16]
        with self._engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        self.made.append(name)
        url = make_url(self._engine.url.render_as_string(hide_password=False))
        return url.update_query_dict({"options": f"-csearch_path={name}", "application_name": self.application_name}
                                     ).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self._engine.begin() as conn:
            # Servers and workers the tests started are gone by now; their sessions may linger a moment.
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                              "AND application_name = :name"), {"name": self.application_name})
            for name in self.made:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        self._engine.dispose()


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'test.db'}"
