"""The console's side of the audit log: a change made from a console page is noted as one made
through the API is (services.store.audit), by the viewer who made it, on the console's route."""
from __future__ import annotations

from flask import request
from sqlalchemy.orm import Session

from server.console.access import current_viewer
from services.store import audit


def note(session: Session, change: audit.Change, *, status: int) -> None:
    """Add the audit row to `session`, before the view commits its change."""
    viewer = current_viewer()
    actor = audit.Actor(kind="admin" if viewer.is_admin else "key", api_key_id=viewer.api_key_id,
                        business_id=viewer.business_id, client_addr=request.remote_addr)
    route = request.url_rule.rule if request.url_rule is not None else request.path
    audit.record(session, actor, change, method=request.method, route=route, status=status)
