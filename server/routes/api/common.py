"""Request plumbing shared by the API's resources: body parsing, lookups, commits."""
from __future__ import annotations

import logging
from typing import Any, TypeVar

from flask import abort, request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest

log = logging.getLogger("api")
Row = TypeVar("Row")


def json_object() -> dict[str, Any]:
    # Only application/json: a form or text/plain body is what a cross-site page can send unasked.
    if not request.is_json:
        abort(415, "the body must be application/json")
    try:
        data = request.get_json()
    except BadRequest:
        abort(400, "the body is not valid JSON")
    if not isinstance(data, dict):
        abort(400, "the body must be a JSON object")
    return data


def get_or_404(session: Session, model: type[Row], ident: int, label: str) -> Row:
    row = session.get(model, ident)
    if row is None:
        abort(404, f"{label} {ident} not found")
    return row


def commit_or_409(session: Session, conflict: str) -> None:
    """Commit; a unique constraint hit (a concurrent writer won the race) is a 409."""
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        log.info("conflict on commit", extra={"path": request.path, "db_error": str(exc.orig)})
        abort(409, conflict)
