"""/api/audit-log: the changes made through the API, newest first (a key sees its business's)."""
from __future__ import annotations

from flask import Blueprint, request

from server import api_answers as answers
from server.api_schemas import AuditFilter, parse
from server.request_db import request_session
from server.routes.api.principal import current
from services.store import audit

bp = Blueprint("audit_log", __name__, url_prefix="/audit-log")


@bp.get("")
def list_entries():
    query = parse(AuditFilter, request.args.to_dict())
    who = current()
    business_id = query.business_id if who.is_admin else who.business_id
    if not who.is_admin and query.business_id not in (None, who.business_id):
        return {"audit_log": [], "limit": query.limit, "offset": query.offset}
    rows = audit.entries(request_session(), business_id=business_id, limit=query.limit, offset=query.offset)
    return {"audit_log": [answers.audit_entry_json(e) for e in rows], "limit": query.limit, "offset": query.offset}
