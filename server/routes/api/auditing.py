"""The API's side of the audit log: each changing route notes what it changed, in its own
transaction; a change that a route forgot to note is still recorded, with what the request shows."""
from __future__ import annotations

import logging
from typing import Iterable

from flask import Response, g, request
from sqlalchemy.orm import Session

from server.request_db import get_db
from server.routes.api.principal import current, principal
from services.store import audit

log = logging.getLogger("api")
CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def note(session: Session, object_type: str, object_id: str | int | None, business_id: int | None,
         fields: Iterable[str] = (), *, status: int) -> None:
    """Add the audit row to `session`, before the route commits its change."""
    audit.record(session, _actor(), audit.Change(object_type, object_id, business_id, tuple(fields)),
                 method=request.method, route=_route(), status=status)
    g.api_audited = True


def record_unnoted(response: Response) -> Response:
    """after_request: a change answered as done without a note gets one, and an error line."""
    if (request.method in CHANGING_METHODS and response.status_code < 400 and not g.get("api_audited")
            and principal() is not None):
        log.error("a change through the API was not noted by its route", extra={"method": request.method,
                                                                               "route": _route()})
        with get_db().session() as session:
            audit.record(session, _actor(), audit.Change("unknown", None, None), method=request.method,
                         route=_route(), status=response.status_code)
    return response


def _actor() -> audit.Actor:
    who = current()
    return audit.Actor(kind="admin" if who.is_admin else "key", api_key_id=who.api_key_id,
                       business_id=who.business_id, client_addr=request.remote_addr)


def _route() -> str:
    return request.url_rule.rule if request.url_rule is not None else request.path
