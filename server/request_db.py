"""The app's `Database`, and one session per request, closed at teardown."""
from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from services.store.db import Database


def init_app(app: Flask, url: str) -> Database:
    db = Database(url)
    app.extensions["db"] = db
    app.teardown_appcontext(_close_request_session)
    return db


def get_db() -> Database:
    return current_app.extensions["db"]


def request_session() -> Session:
    """The request's session; the caller commits, teardown closes."""
    if "db_session" not in g:
        g.db_session = get_db().sessionmaker()
    return g.db_session


def _close_request_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
