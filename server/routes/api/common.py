"""Request plumbing shared by the API's resources: body parsing, lookups, commits."""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, TypeVar

from flask import abort, request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest

log = logging.getLogger("api")
Row = TypeVar("Row")
# Our bodies nest three levels (working_hours); anything much deeper is an attack on the stack.
MAX_JSON_DEPTH = 32


def _depth_bounded(parse: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """A body nested too deeply is a 400: json raises RecursionError past its stack, and a body
    just within it would raise later, wherever it is walked again (validation, error messages)."""
    @functools.wraps(parse)
    def bounded() -> dict[str, Any]:
        try:
            data = parse()
        except RecursionError:
            abort(400, "the body is nested too deeply")
        if _depth(data) > MAX_JSON_DEPTH:
            abort(400, "the body is nested too deeply")
        return data
    return bounded


def _depth(value: Any) -> int:
    """How deeply `value` nests, walked without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        stack.extend((child, depth + 1) for child in item)
    return deepest


@_depth_bounded
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
    _or_409(session.commit, session, conflict)


def flush_or_409(session: Session, conflict: str) -> None:
    """Flush (to learn a new row's id); a unique constraint hit is a 409, as on commit."""
    _or_409(session.flush, session, conflict)


def _or_409(write: Callable[[], None], session: Session, conflict: str) -> None:
    try:
        write()
    except IntegrityError as exc:
        session.rollback()
        log.info("conflict on commit", extra={"path": request.path, "db_error": str(exc.orig)})
        abort(409, conflict)
