"""/api/calls: what happened on each call, newest first."""
from __future__ import annotations

from flask import Blueprint, abort, request
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from server import api_schemas as schemas
from server.db import request_session
from server.models import Call


bp = Blueprint("calls", __name__, url_prefix="/calls")


@bp.get("")
def list_calls():
    query = schemas.clean_query(request.args.to_dict(), schemas.CALL_QUERY)
    stmt = select(Call)
    if "business_id" in query:
        stmt = stmt.where(Call.business_id == query["business_id"])
    if "status" in query:
        stmt = stmt.where(Call.status == query["status"])
    if "since" in query:
        stmt = stmt.where(Call.started_at >= query["since"])
    stmt = stmt.order_by(Call.started_at.desc(), Call.id.desc()).limit(query["limit"]).offset(query["offset"])
    calls = request_session().scalars(stmt)
    return {"calls": [schemas.call_json(c) for c in calls], "limit": query["limit"], "offset": query["offset"]}


@bp.get("/<call_sid>")
def get_call(call_sid: str):
    call = request_session().scalar(
        select(Call).where(Call.call_sid == call_sid).options(selectinload(Call.turns)))
    if call is None:
        abort(404, f"call {call_sid} not found")
    return schemas.call_json(call, with_turns=True)
